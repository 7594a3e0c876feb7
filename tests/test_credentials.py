"""No credential ever shows, every endpoint is authorised: tried as an attacker would, then everything a person could
read is grepped for every org key and consumer key: the log at flow_detail=4, a `-w` dump re-rendered with
`mitmdump -nr`, mitmweb's /flows polled while a request waits and /flows/dump, the ledger, the JSONL mirror and
/metrics; and what the fake provider and a fake third-party host received."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from harness import BIN, Gateway, free_port, providers_to, raw_request, subprocess_env

ALICE = "tg-cred-alice-0123456789"   # group mini: gpt-4o-mini; may use files (endpoints grant)
BOB = "tg-cred-bob-0123456789"       # unrestricted
ORG_KEYS = ("sk-org-openai-1", "sk-org-openai-2", "sk-ant-org-1", "gem-org-1", "dash-org-1")
KEYS = ORG_KEYS + (ALICE, BOB)
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def web(tmp_path_factory, fake):
    workdir = tmp_path_factory.mktemp("cred")
    metrics = free_port()
    gateway = Gateway(workdir, {
        "providers": providers_to(fake),
        "groups": {"mini": {"models": ["gpt-4o-mini", "gpt-4o-transcribe-mini"], "endpoints": ["/v1/files*"]}},
        "consumers": [{"name": "alice", "key": ALICE, "group": "mini"}, {"name": "bob", "key": BOB}],
        "ledger": {"path": str(workdir / "usage.db"), "jsonl": str(workdir / "usage.jsonl")},
        "gateway": {"upstream_timeout": "2s"},
    }, tool="mitmweb", extra=("--set", f"web_port={free_port()}", "--set", "web_open_browser=false",
                              "--set", "flow_detail=4", "--set", f"tollgate_metrics_port={metrics}",
                              "--set", f"save_stream_file={workdir / 'flows.out'}"))
    gateway.metrics = f"http://127.0.0.1:{metrics}"
    gateway.dump = workdir / "flows.out"
    gateway.jsonl = workdir / "usage.jsonl"
    yield gateway
    gateway.stop()


def web_api(gw, path: str) -> httpx.Response:
    parts = urlsplit(gw.web_url)
    token = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("token", "")
    return httpx.get(f"{parts.scheme}://{parts.netloc}{path}", headers={"authorization": f"Bearer {token}"},
                     trust_env=False, timeout=10)


def leaked(text: str) -> list[str]:
    return [key for key in KEYS if key in text]


def test_org_key_never_shows_in_mitmweb_while_a_call_waits(web, fake):
    seen_in_flight = []
    client = web.openai(BOB)
    worker = threading.Thread(target=lambda: pytest.raises(
        openai.APIStatusError, client.chat.completions.create, model="gpt-4o-mini", messages=HELLO,
        extra_headers={"x-fake-hang": "1"}))
    worker.start()
    deadline = time.time() + 1.8
    while time.time() < deadline:  # the request is out, waiting for its answer
        seen_in_flight.append(web_api(web, "/flows").text)
        time.sleep(0.05)
    worker.join(10)
    flows = "".join(seen_in_flight)
    assert "org key>" in flows, "the flow was seen in flight"
    assert leaked(flows) == []


def test_proxy_authorization_never_reaches_a_third_party_host(web, fake):
    credentials = base64.b64encode(f"alice:{ALICE}".encode()).decode()
    head = (f"GET http://127.0.0.1:{fake.port}/third-party/page HTTP/1.1\r\nHost: 127.0.0.1:{fake.port}\r\n"
            f"Proxy-Authorization: Basic {credentials}\r\nConnection: close\r\n\r\n")
    status, _, _ = raw_request(web, head)
    assert status == 200
    seen = [r for r in fake.requests() if r["path"] == "/third-party/page"][-1]
    assert "proxy-authorization" not in {k.lower() for k in seen["headers"]}
    assert leaked(json.dumps(seen)) == []


@pytest.mark.parametrize("smuggle", ["Content-Length: 5\r\nContent-Length: 6", "Content-Length: 5\r\n"
                                     "Transfer-Encoding: chunked", "Transfer-Encoding: gzip, chunked"])
def test_requests_mitmproxy_refuses_do_not_show_their_keys(web, fake, smuggle):
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {BOB}\r\n"
            f"{smuggle}\r\nConnection: close\r\n\r\n")
    try:
        raw_request(web, head, b"hello", connect="api.openai.com:443", sni="api.openai.com", timeout=5)
    except Exception:  # mitmproxy may answer 400 or just close
        pass
    time.sleep(0.3)
    assert leaked(web.logs()) == []


def test_websocket_subprotocol_key_is_taken_out(web, fake):
    head = ("GET /v1/realtime?model=gpt-4o-realtime-preview HTTP/1.1\r\nHost: api.openai.com\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.{BOB}, openai-beta.realtime-v1\r\n\r\n")
    try:
        raw_request(web, head, connect="api.openai.com:443", sni="api.openai.com", timeout=5)
    except Exception:
        pass
    time.sleep(0.3)
    seen = [r for r in fake.requests() if "realtime" in r["path"]]
    assert seen and all(BOB not in json.dumps(r) for r in seen)
    assert seen[-1]["headers"].get("Authorization", "").startswith("Bearer sk-org-openai-")
    assert leaked(web.logs()) == []


def test_flow_dumps_work_and_hold_no_key(web, fake, tmp_path):
    web.openai(BOB).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    list(web.anthropic(BOB).messages.create(model="claude-haiku-4-5", max_tokens=20, messages=HELLO, stream=True))
    dump = web_api(web, "/flows/dump")
    assert dump.status_code == 200 and len(dump.content) > 1000
    assert leaked(dump.content.decode("latin-1")) == []
    assert "unserializable" not in web.logs()
    saved = tmp_path / "saved.out"
    saved.write_bytes(dump.content)
    for path in (saved, web.dump):
        rendered = subprocess.run([str(BIN / "mitmdump"), "-nr", str(path), "--set", "flow_detail=4"],
                                  capture_output=True, text=True, timeout=60, env=subprocess_env())
        assert rendered.returncode == 0, rendered.stderr
        assert "gpt-4o-mini" in rendered.stdout and "<openai org key>" in rendered.stdout
        assert leaked(rendered.stdout + rendered.stderr) == []
    assert b'"decision"' in web.dump.read_bytes() or b"decision" in web.dump.read_bytes()


def test_everything_a_person_reads_is_free_of_keys(web, fake):
    web.openai(BOB).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        web.openai("sk-proj-stranger-key").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    texts = [web.logs(), web.jsonl.read_text(), json.dumps(web.rows()),
             httpx.get(f"{web.metrics}/metrics", trust_env=False).text]
    assert [leaked(t) for t in texts] == [[], [], [], []]
    for seen in fake.requests():  # the provider only ever sees org keys
        assert ALICE not in json.dumps(seen) and BOB not in json.dumps(seen)


# --- every endpoint is authorised ------------------------------------------------------------------------------

def test_restricted_group_is_limited_to_its_models_and_granted_endpoints(web, fake, tmp_path):
    alice = web.openai(ALICE)
    upload = tmp_path / "batch.jsonl"
    upload.write_text('{"custom_id": "1"}\n')
    assert alice.files.create(file=upload.open("rb"), purpose="batch").id == "file-fake1"   # granted: /v1/files*
    assert alice.files.delete("file-x").deleted
    assert alice.files.content("file-x").read()
    with pytest.raises(openai.PermissionDeniedError) as denied:  # a batch can name any model: not granted
        alice.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="24h")
    assert "may not call /v1/batches" in denied.value.message
    assert alice.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices  # models govern model calls
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....WAVEfmt ")
    with pytest.raises(openai.PermissionDeniedError):  # the multipart form's model counts
        alice.audio.transcriptions.create(file=audio.open("rb"), model="gpt-4o-transcribe")
    assert alice.audio.transcriptions.create(file=audio.open("rb"), model="gpt-4o-transcribe-mini").text
    row = web.rows("requested_model = 'gpt-4o-transcribe'")[-1]
    assert (row["status"], row["decision"]) == (403, "rejected") and "gpt-4o-transcribe" in row["reason"]


def test_unrestricted_group_keeps_every_endpoint(web, fake, tmp_path):
    bob = web.openai(BOB)
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....WAVEfmt ")
    assert bob.audio.transcriptions.create(file=audio.open("rb"), model="gpt-4o-transcribe").text
    assert bob.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions",
                              completion_window="24h").id == "batch_fake1"
    seen = [r for r in fake.requests() if r["path"].endswith("/batches")][-1]
    assert seen["headers"]["Authorization"].startswith("Bearer sk-org-openai-")


# --- byok and HTTP/2 -------------------------------------------------------------------------------------------

def test_byok_callers_are_each_their_own_cache_tenant(make_gateway, fake):
    gw = make_gateway({"providers": providers_to(fake), "consumers": [{"name": "bob", "key": BOB}],
                       "unknown_keys": "passthrough", "cache": {"ttl": "1h"}})
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "byok tenant?"}], "temperature": 0}
    with gw.httpx() as client:
        first = client.post("https://api.openai.com/v1/chat/completions", json=ask,
                            headers={"authorization": "Bearer sk-proj-real-key-one"})
        again = client.post("https://api.openai.com/v1/chat/completions", json=ask,
                            headers={"authorization": "Bearer sk-proj-real-key-one"})
        other = client.post("https://api.openai.com/v1/chat/completions", json=ask,
                            headers={"authorization": "Bearer garbage"})
        double = client.post("https://api.openai.com/v1/chat/completions", json=ask,
                             headers=[("authorization", "Bearer garbage"), ("authorization", f"Bearer {BOB}")])
    assert first.status_code == 200 and again.headers["x-cache"] == "HIT"
    assert other.headers["x-cache"] == "MISS", "a garbage key must not read a real key's answers"
    upstream = [r for r in fake.requests() if r["path"].endswith("chat/completions")]
    assert upstream[-1]["headers"]["Authorization"] == "Bearer garbage"  # the client's own key went on
    assert double.status_code == 400
    assert "sk-proj-real-key-one" not in gw.logs()


def test_http2_clients_get_the_providers_error_shape(web, fake):
    def curl_h2(key: str, *headers: str) -> tuple[str, dict]:
        out = subprocess.run(["curl", "-sS", "--http2", "--proxy", web.proxy, "--cacert", web.ca, "-o", "-",
                              "-w", "\n%{http_version} %{http_code}", "-H", f"authorization: Bearer {key}",
                              "-H", "content-type: application/json", *[a for h in headers for a in ("-H", h)],
                              "--data", json.dumps({"model": "gpt-4o-mini", "messages": HELLO}),
                              "https://api.openai.com/v1/chat/completions"],
                             capture_output=True, text=True, timeout=30, env=subprocess_env())
        body, _, status = out.stdout.rpartition("\n")
        return status, json.loads(body)

    status, body = curl_h2(BOB, "x-fake-hang: 1")
    assert status == "2 504" and body["error"]["code"] == "upstream_timeout"
    status, body = curl_h2("nobody")
    assert status == "2 401" and body["error"]["code"] == "invalid_api_key"


def test_mitmweb_lists_the_url_the_client_called_and_a_comment_that_leads(web, fake):
    with pytest.raises(openai.PermissionDeniedError):
        web.openai(ALICE).chat.completions.create(model="gpt-4o", messages=HELLO)
    web.openai(BOB).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    flows = [f for f in web_api(web, "/flows").json() if f.get("type") == "http"]
    refused, served = flows[-2], flows[-1]
    for flow in (refused, served):
        assert (flow["request"]["host"], flow["request"]["port"]) == ("api.openai.com", 443)
    assert refused["comment"].startswith("403 rejected · alice (mini) · gpt-4o")
    assert served["comment"].startswith("200 · bob · gpt-4o-mini · ")
