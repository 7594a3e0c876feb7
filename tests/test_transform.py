"""AI transformation through a real gateway: an XML answer of a local HTTPS server (not an LLM) comes back as JSON;
an invalid model answer leaves the original untouched; hosts not listed stay tunnelled (never decrypted)."""

import json
import socket
import ssl

import httpx
import pytest
from cryptography import x509

from harness import FakeLLM, Gateway, providers_to


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = [FakeLLM(tmp_path_factory.mktemp(f"site{i}"), "--tls") for i in range(3)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake, servers):
    listed, broken, _ = servers
    gateway = Gateway(tmp_path_factory.mktemp("transform"), {
        "providers": providers_to(fake),
        "transform": [
            {"name": "xml-to-json", "match": {"host": f"127.0.0.1:{listed.port}", "path": "/xml"},
             "response": {"prompt": "Change content-type to application/json; convert the XML body to JSON; "
                                    "drop content-length."},
             "provider": "openai", "model": "transform-1"},
            {"name": "broken", "match": {"host": f"127.0.0.1:{broken.port}", "path": "/xml"},
             "response": {"prompt": "INVALID: answer anything but an HTTP message"},
             "provider": "openai", "model": "transform-1"}],
    }, extra=("--set", "ssl_insecure=true"))  # the test servers' certificates are self-signed
    yield gateway
    gateway.stop()


def get(gw, url):
    with httpx.Client(proxy=gw.proxy, verify=gw.ca, trust_env=False, timeout=30) as client:
        return client.get(url)


def issuer_through(gw, port: int) -> str:
    """The issuer of the certificate a client sees for 127.0.0.1:port through the proxy."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert b" 200 " in sock.recv(4096)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def test_an_xml_answer_comes_back_as_json(gw, servers):
    response = get(gw, f"https://127.0.0.1:{servers[0].port}/xml")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["x-transformed"] == "yes"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["slideshow"]["title"] == "Sample Slide Show"
    rows = [r for r in gw.rows() if r["consumer"] == "system:transform"]
    assert rows and rows[-1]["status"] == 200 and rows[-1]["model"] == "transform-1"
    assert get(gw, f"https://127.0.0.1:{servers[0].port}/xml").json() == response.json()  # from the cache
    assert len([r for r in gw.rows() if r["consumer"] == "system:transform"]) == len(rows)


def test_an_invalid_model_answer_leaves_the_original(gw, servers):
    response = get(gw, f"https://127.0.0.1:{servers[1].port}/xml")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert response.text.startswith("<?xml") and "transformation broken" in gw.logs()


def test_hosts_not_listed_stay_tunnelled(gw, servers):
    assert "mitmproxy" in issuer_through(gw, servers[0].port)  # listed: decrypted by the gateway
    assert "fake-llm" in issuer_through(gw, servers[2].port)  # not listed: the server's own certificate
    with httpx.Client(proxy=gw.proxy, verify=False, trust_env=False, timeout=30) as client:
        assert client.get(f"https://127.0.0.1:{servers[2].port}/xml").text.startswith("<?xml")


def test_a_model_answer_is_read_strictly():
    from tollgate.core.transform import Invalid, parse_message

    start, headers, body = parse_message("```http\nHTTP/1.1 200 OK\ncontent-type: application/json\n"
                                         "content-length: 999\ntransfer-encoding: chunked\n\n{\"a\": 1}\n```",
                                         "response", 100)
    assert start == "HTTP/1.1 200 OK" and headers == [("content-type", "application/json")] and body == b'{"a": 1}'
    for bad in ("Sure! Here it is.", "HTTP/1.1 200 OK\nbad header line\n\nx", "HTTP/1.1 200 OK\nx-a: b\x01c\n\nx",
                "GET / HTTP/1.1\nhost: a\n\nx", "HTTP/1.1 200 OK\nx-a: b\n\n" + "x" * 101):
        with pytest.raises(Invalid):
            parse_message(bad, "response", 100)
    assert parse_message("POST /v2 HTTP/1.1\nhost: a\n\nbody", "request", 100)[0] == "POST /v2 HTTP/1.1"
    # a model cannot set credentials, and is never shown them
    assert parse_message("HTTP/1.1 200 OK\nset-cookie: s=1\n\nx", "response", 100)[1] == []
    from tollgate.core.transform import render_message
    shown = render_message("GET / HTTP/1.1", [("authorization", "Bearer secret"), ("accept", "*/*")], "")
    assert "secret" not in shown and "accept: */*" in shown
