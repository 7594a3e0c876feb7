"""X-Forwarded-For is believed from configured balancers only, and only its last address."""

import pytest

from conftest import ALICE_KEY
from harness import providers_to
from tollgate.core.forwarded import forwarded_client, is_trusted, parse_trusted
from tollgate.core.schema import ConfigError


def test_the_last_address_is_the_balancers_word():
    assert forwarded_client(["6.6.6.6, 10.1.2.3"]) == "10.1.2.3"
    assert forwarded_client(["6.6.6.6", "10.1.2.3"]) == "10.1.2.3"  # a client's own header line comes first
    assert forwarded_client(["not-an-address"]) is None and forwarded_client([]) is None
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8"])
    assert is_trusted("10.9.8.7", trusted) and is_trusted("::ffff:127.0.0.1", trusted)
    assert not is_trusted("192.168.1.1", trusted) and not is_trusted("", trusted)
    with pytest.raises(ConfigError):
        parse_trusted(["10.0.0.0/33"])


@pytest.mark.parametrize("trusted, via, expected", [
    ([], "reverse", "127.0.0.1"),
    (["127.0.0.1"], "reverse", "203.0.113.9"),   # a plain request from the balancer: its word counts
    (["127.0.0.1"], "tunnel", "127.0.0.1"),      # inside TLS the header is the client's own: ignored
])
def test_a_forwarded_address_counts_only_from_a_trusted_peer(trusted, via, expected, fake, make_gateway):
    import httpx

    gw = make_gateway({"providers": providers_to(fake), "consumers": [{"name": "alice", "key": ALICE_KEY}],
                       "gateway": {"trusted_proxies": trusted}}, reverse=True)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {ALICE_KEY}", "x-forwarded-for": "6.6.6.6, 203.0.113.9"}
    if via == "tunnel":
        response = gw.httpx().post("https://api.openai.com/v1/chat/completions", json=body, headers=headers)
    else:
        response = httpx.post(f"http://127.0.0.1:{gw.reverse_port}/v1/chat/completions", json=body, headers=headers,
                              trust_env=False)
    assert response.status_code == 200
    assert gw.last_row()["client_ip"] == expected
    seen = [r for r in fake.requests() if r["path"].endswith("/chat/completions")][-1]
    assert "x-forwarded-for" not in {k.lower() for k in seen["headers"]}, "it never goes upstream"
