"""Fail closed, tried as an attacker would: one test per way the gate used to fail open, through a real mitmdump
(running the real pipeline plus switchable faults, tests/fault_gateway.py), SDKs, httpx and raw sockets. Each
asserts what reached the fake provider (nothing, or only org-keyed and checked requests), what the client got (the
status, in its provider's shape), the ledger row, and that the gateway keeps serving."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from harness import Gateway, free_port, providers_to, raw_request

ROOT = Path(__file__).resolve().parents[1]
ALICE = "tg-fc-alice-0123456789"   # group mini: gpt-4o-mini only
BOB = "tg-fc-bob-0123456789"       # limited to 2 requests a minute
CAROL = "tg-fc-carol-0123456789"   # unrestricted
AWS = "AKIAIOSFODNN7EXAMPLE"
ORG_KEYS = ("sk-org-openai-1", "sk-org-openai-2", "sk-ant-org-1")
HELLO = [{"role": "user", "content": "hello"}]
SECRET_IN_MESSAGE = "sk-fault-secret-0123456789"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    port = free_port()
    gateway = Gateway(tmp_path_factory.mktemp("failclosed"), {
        "providers": providers_to(fake, nokey={"type": "mistral", "keys": ["${TOLLGATE_TEST_UNSET_KEY}"],
                                               "upstream": fake.url}),
        "groups": {"mini": {"models": ["gpt-4o-mini"]}},
        "consumers": [{"name": "alice", "key": ALICE, "group": "mini"}, {"name": "bob", "key": BOB},
                      {"name": "carol", "key": CAROL}],
        "guard": {"rules": [{"name": "secrets", "detectors": ["aws_access_key"]},
                            {"name": "pii", "detectors": ["email"], "action": "mask"}]},
        "limits": {"rules": [{"name": "bob-two", "per": "consumer", "consumers": ["bob"], "requests": 2,
                              "window": "60s"}]},
        "gateway": {"max_request_bytes": "256KB", "upstream_timeout": "3s", "upstream_idle_timeout": "1s"},
    }, script_file=ROOT / "tests" / "fault_gateway.py",
        extra=("--set", f"tollgate_metrics_port={port}", "--set", "flow_detail=4"))
    gateway.metrics = f"http://127.0.0.1:{port}"
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def clean(fake):
    fake.clear()


def upstream(fake) -> list[dict]:
    return [r for r in fake.requests() if not r["path"].startswith("/_fake")]


def post_head(path: str, host: str, body: bytes, headers: dict, absolute: bool = False) -> str:
    target = f"http://{host}{path}" if absolute else path
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def chat_body(**extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": HELLO, **extra}


def send(gw, body, headers: dict | None = None, path: str = "/v1/chat/completions", key: str = CAROL,
         content_type: str = "application/json") -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": content_type, **(headers or {})}
    with gw.httpx() as client:
        return client.post(f"https://api.openai.com{path}", content=data, headers=headers)


def openai_error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]


def row_of(gw, mark: int) -> dict:
    return gw.rows_since(mark)[-1]


def still_serving(gw) -> None:
    answer = gw.openai(CAROL).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert answer.choices[0].message.content


def no_addon_errors(gw) -> None:
    assert "Addon error" not in gw.logs() and "has crashed" not in gw.logs()


# --- rows of the table ---------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["top", "messages"])
def test_json_nested_ten_thousand_deep_is_refused(gw, fake, where):
    deep = "[" * 10_000 + "]" * 10_000
    text = (f'{{"model":"gpt-4o-mini","x":{deep},"messages":[]}}' if where == "top" else
            f'{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":{deep}}}]}}')
    mark = gw.mark()
    response = send(gw, text.encode())
    assert response.status_code == 400 and "nested deeper than 64" in openai_error(response)["message"]
    assert upstream(fake) == []
    row = row_of(gw, mark)
    assert (row["status"], row["decision"]) == (400, "rejected")
    still_serving(gw)


@pytest.mark.parametrize("depth", [1_000, 9_999])
def test_list_nested_deep_inside_messages_is_refused(gw, fake, depth):
    content = "[" * depth + '"hi"' + "]" * depth
    mark = gw.mark()
    response = send(gw, f'{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":{content}}}]}}'.encode())
    assert response.status_code == 400 and upstream(fake) == []
    assert row_of(gw, mark)["decision"] == "rejected"


def test_non_ascii_byte_in_the_credential_header_is_refused(gw, fake):
    mark = gw.mark()
    body = json.dumps(chat_body()).encode()
    head = post_head("/v1/messages", "api.anthropic.com", body,
                     {"x-api-key": "sk-ant-api03-abc", "content-type": "application/json"})
    head = head.encode("latin-1").replace(b"sk-ant-api03-abc", b"\xffsk-ant-api03-abc")
    status, headers, data = raw_request(gw, head, body, connect="api.anthropic.com:443", sni="api.anthropic.com")
    assert status == 400 and json.loads(data)["type"] == "error"  # Anthropic's shape
    assert upstream(fake) == []
    assert row_of(gw, mark)["decision"] == "rejected"
    no_addon_errors(gw)


def test_lone_surrogate_in_a_prompt_is_refused_before_any_check(gw, fake):
    mark = gw.mark()
    text = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + AWS + ' me@x.com \\ud800"}]}'
    response = send(gw, text.encode(), key=BOB)
    assert response.status_code == 400 and "surrogate" in openai_error(response)["message"]
    assert upstream(fake) == []
    assert row_of(gw, mark)["decision"] == "rejected"


def test_lone_surrogate_in_model_unauthenticated_keeps_ledger_and_metrics_working(gw, fake):
    mark = gw.mark()
    response = send(gw, b'{"model":"\\ud800","messages":[]}', key="tg-nobody")
    assert response.status_code == 400
    assert row_of(gw, mark)["status"] == 400
    assert httpx.get(f"{gw.metrics}/metrics", trust_env=False).status_code == 200
    no_addon_errors(gw)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jso", ""])
def test_any_content_type_is_parsed_as_json_on_a_json_endpoint(gw, fake, content_type):
    # alice may use gpt-4o-mini only: the model is read whatever the Content-Type says
    response = send(gw, chat_body(model="gpt-4o", max_tokens=999999999999), key=ALICE, content_type=content_type)
    assert response.status_code == 403 and openai_error(response)["code"] == "model_not_allowed"
    response = send(gw, chat_body(messages=[{"role": "user", "content": f"key {AWS}"}]), content_type=content_type)
    assert response.status_code == 403 and openai_error(response)["code"] == "content_blocked"
    assert upstream(fake) == []


def test_trailing_dot_host_is_the_provider(gw, fake):
    body = json.dumps(chat_body()).encode()
    head = post_head("/v1/chat/completions", "api.openai.com.", body,
                     {"authorization": f"Bearer {CAROL}", "content-type": "application/json"})
    status, _, data = raw_request(gw, head, body, connect="api.openai.com.:443", sni="api.openai.com")
    assert status == 200 and json.loads(data)["choices"]
    seen = upstream(fake)[-1]
    assert seen["headers"]["Authorization"] in ("Bearer sk-org-openai-1", "Bearer sk-org-openai-2")
    # the client's own provider key is refused there too (unknown_keys: reject)
    head = head.replace(CAROL, "sk-proj-client-own-key")
    status, _, data = raw_request(gw, head, body, connect="API.OpenAI.com.:443", sni="api.openai.com")
    assert status == 401 and len(upstream(fake)) == 1


def test_provider_ip_with_provider_sni_is_misdirected(gw, fake):
    mark = gw.mark()
    body = json.dumps(chat_body()).encode()
    head = post_head("/v1/chat/completions", "api.openai.com", body,
                     {"authorization": "Bearer sk-proj-client-own-key", "content-type": "application/json"})
    status, _, data = raw_request(gw, head, body, connect="162.159.140.245:443", sni="api.openai.com")
    assert status == 421 and json.loads(data)["error"]["code"] == "misdirected_request"
    assert upstream(fake) == []
    assert row_of(gw, mark)["status"] == 421


@pytest.mark.parametrize("host", ["api.openai.com.", "api.openai.com"])
def test_plain_http_to_a_provider_is_refused(gw, fake, host):
    mark = gw.mark()
    body = json.dumps(chat_body()).encode()
    head = post_head("/v1/chat/completions", host, body,
                     {"authorization": f"Bearer {CAROL}", "content-type": "application/json"}, absolute=True)
    status, _, data = raw_request(gw, head, body)
    assert status == 400 and "https" in json.loads(data)["error"]["message"]
    assert upstream(fake) == []
    assert row_of(gw, mark)["decision"] == "rejected"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("key", [CAROL, None])
def test_gzip_bomb_is_refused_while_decompressing(gw, fake, key):
    bomb = gzip.compress(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"a" * 100_000_000 + b'"}]}',
                         compresslevel=9)
    assert len(bomb) < 400_000
    before = _rss_kb(gw.proc.pid)
    started = time.time()
    with gw.httpx() as client:
        response = client.post("https://api.openai.com/v1/chat/completions", content=bomb,
                               headers={"content-encoding": "gzip", "content-type": "application/json",
                                        **({"authorization": f"Bearer {key}"} if key else {})})
    assert response.status_code == 413 and openai_error(response)["code"] == "request_too_large"
    assert time.time() - started < 5
    assert _rss_kb(gw.proc.pid) - before < 50_000, "memory must stay bounded by the limit"
    assert upstream(fake) == []


def test_compressed_body_is_checked_and_sent_decompressed(gw, fake):
    body = gzip.compress(json.dumps(chat_body(messages=[{"role": "user", "content": "write to me@example.com"}])).encode())
    response = send(gw, body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200
    seen = upstream(fake)[-1]
    assert "content-encoding" not in {k.lower() for k in seen["headers"]}
    assert "me@example.com" not in json.dumps(seen["body"]) and "[EMAIL_1]" in json.dumps(seen["body"])


def test_huge_upload_is_refused_from_its_content_length_before_the_body(gw, fake):
    mark = gw.mark()
    head = post_head("/v1/chat/completions", "api.openai.com", b"", {"authorization": f"Bearer {CAROL}"})
    head = head.replace("Content-Length: 0", "Content-Length: 400000000")
    started = time.time()
    status, _, data = raw_request(gw, head, b'{"model":', connect="api.openai.com:443", sni="api.openai.com")
    assert status == 413 and json.loads(data)["error"]["code"] is None or status == 413
    assert time.time() - started < 5
    assert upstream(fake) == []
    assert row_of(gw, mark)["status"] == 413


def test_chunked_body_is_cut_off_at_the_limit(gw, fake):
    def chunks():
        yield b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
        for _ in range(100):
            yield b"x" * 10_000
    with gw.httpx() as client:
        response = client.post("https://api.openai.com/v1/chat/completions", content=chunks(),
                               headers={"authorization": f"Bearer {CAROL}"})
    assert response.status_code == 413
    assert upstream(fake) == []


def test_provider_without_key_answers_503_and_is_warned_at_start(gw, fake):
    assert "calls to nokey are refused with 503" in gw.logs()
    with gw.httpx() as client:
        response = client.post("https://api.mistral.ai/v1/chat/completions", json=chat_body(),
                               headers={"authorization": f"Bearer {CAROL}"})
    assert response.status_code == 503 and openai_error(response)["code"] == "provider_not_configured"
    assert upstream(fake) == []


def test_stalled_plain_answer_ends_with_504(gw, fake):
    mark = gw.mark()
    started = time.time()
    response = send(gw, chat_body(), headers={"x-fake-stall-body": "1"})
    assert response.status_code == 504 and time.time() - started < 4
    row = row_of(gw, mark)
    assert (row["status"], row["decision"]) == (504, "upstream_timeout")


def test_stream_silent_mid_answer_ends_cleanly(gw, fake):
    mark = gw.mark()
    client = gw.openai(CAROL)
    with pytest.raises(openai.APIError) as error:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                extra_headers={"x-fake-delay-ms": "2500"}):
            pass
    assert "silent" in str(error.value)
    assert row_of(gw, mark)["decision"] == "upstream_timeout"


def test_odd_stream_events_pass_and_are_metered(gw, fake):
    mark = gw.mark()
    with gw.httpx() as client:
        with client.stream("POST", "https://api.openai.com/v1/chat/completions",
                           json=chat_body(stream=True), headers={"authorization": f"Bearer {CAROL}",
                                                                 "x-fake-odd-events": "1"}) as response:
            text = b"".join(response.iter_bytes())
    assert response.status_code == 200 and b'{"choices": 5}' in text and b"[DONE]" in text
    row = row_of(gw, mark)
    assert (row["status"], row["decision"], row["usage_source"]) == (200, "forwarded", "provider")
    no_addon_errors(gw)


def test_gzip_stream_despite_identity_is_decoded_and_metered(gw, fake):
    mark = gw.mark()
    chunks = list(gw.openai(CAROL).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True, extra_headers={"x-fake-gzip": "1", "x-fake-words": "9"}))
    assert len("".join(c.choices[0].delta.content or "" for c in chunks).split()) == 9
    assert row_of(gw, mark)["completion_tokens"] == 9


def test_metric_labels_are_bounded_before_auth(gw):
    model = "m" * 1_000_000
    with gw.httpx() as client:
        for i in range(40):
            client.post("https://api.openai.com/v1/chat/completions",
                        content=json.dumps({"model": f"{i}{model}", "messages": []}).encode(),
                        headers={"authorization": "Bearer nobody"})
    metrics = httpx.get(f"{gw.metrics}/metrics", trust_env=False)
    assert metrics.status_code == 200 and len(metrics.content) < 1_000_000


@pytest.mark.parametrize("end_delay", ["2", "20"])
def test_stream_finished_then_closed_is_a_complete_call(gw, fake, end_delay):
    mark = gw.mark()
    chunks = list(gw.openai(CAROL).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True, extra_headers={"x-fake-end-delay-ms": end_delay}))
    assert chunks
    row = row_of(gw, mark)
    assert (row["decision"], row["usage_source"], row["completion_tokens"]) == ("forwarded", "provider", 12)


# --- failures inside tollgate ----------------------------------------------------------------------------------

def _assert_gateway_error(gw, response, mark, stage: str):
    assert response.status_code == 500 and openai_error(response)["code"] == "gateway_error"
    row = row_of(gw, mark)
    assert (row["status"], row["decision"]) == (500, "gateway_error") and "RuntimeError" in row["reason"]
    assert SECRET_IN_MESSAGE not in gw.logs() and SECRET_IN_MESSAGE not in json.dumps(row)
    metrics = httpx.get(f"{gw.metrics}/metrics", trust_env=False).text
    assert f'tollgate_gateway_errors_total{{stage="{stage}"}}' in metrics


@pytest.mark.parametrize("fault", ["Classify.requestheaders", "Classify.request", "Authenticate.request",
                                   "Guard.request", "Admit.request", "Forward.request"])
def test_a_failing_request_step_refuses_and_sends_nothing(gw, fake, fault):
    mark = gw.mark()
    response = send(gw, chat_body(), headers={"x-test-fault": fault})
    _assert_gateway_error(gw, response, mark, fault.split(".")[1])
    assert upstream(fake) == []
    assert f"{fault.split('.')[0]} failed in" in gw.logs()
    still_serving(gw)


@pytest.mark.parametrize("fault", ["AnswerGuard.response", "Meter.response", "Stream.responseheaders"])
def test_a_failing_answer_step_withholds_the_answer_and_keeps_the_row(gw, fake, fault):
    mark = gw.mark()
    response = send(gw, chat_body(), headers={"x-test-fault": fault})
    _assert_gateway_error(gw, response, mark, fault.split(".")[1])
    still_serving(gw)


def test_a_failing_stream_tap_ends_the_stream_and_keeps_the_row(gw, fake):
    mark = gw.mark()
    chunks = list(gw.openai(CAROL).chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                           extra_headers={"x-test-fault": "Stream.tap"}))
    assert not any(c.choices and c.choices[0].delta.content for c in chunks), "nothing unchecked passes"
    row = row_of(gw, mark)
    assert row["decision"] == "gateway_error" and "stream tap" in row["reason"]
    assert SECRET_IN_MESSAGE not in gw.logs()
    still_serving(gw)


def test_limits_hold_and_no_org_key_shows_in_the_log(gw, fake):
    for _ in range(2):
        send(gw, chat_body(), key=BOB)
    assert send(gw, chat_body(), key=BOB).status_code == 429
    log = gw.logs()
    assert not any(key in log for key in ORG_KEYS + (ALICE, BOB, CAROL))


# --- the ledger on a full disk ---------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk test needs a small filesystem")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_ledger_on_a_full_disk_alarms_and_closed_refuses(make_gateway, fake, tiny_disk, on_error):
    port = free_port()
    gw = make_gateway({"providers": providers_to(fake), "consumers": [{"name": "carol", "key": CAROL}],
                       "ledger": {"path": str(tiny_disk / "usage.db"), "on_error": on_error}},
                      extra=("--set", f"tollgate_metrics_port={port}"))
    client = gw.openai(CAROL)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    health = f"http://127.0.0.1:{port}/healthz"
    assert httpx.get(health, trust_env=False).status_code == 200
    filler = _fill(tiny_disk)

    outcomes = []
    while len(outcomes) < 30:  # a row that still fits the journal's last page is on disk: its call is served
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO * 50)
            outcomes.append("served")
        except openai.InternalServerError as e:
            assert e.status_code == 503 and "ledger" in e.message
            outcomes.append("refused")
        if len(outcomes) >= 6 and (on_error == "open" or outcomes[-3:] == ["refused"] * 3):
            break
    served = outcomes.count("served")
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
    assert "tollgate_ledger_errors_total" in metrics and "tollgate_ledger_errors_total 0.0" not in metrics
    assert httpx.get(health, trust_env=False).status_code == 503
    assert gw.logs().count("usage ledger cannot be written") == 1, "logged once per outage"
    if on_error == "open":
        assert outcomes == ["served"] * 6
    else:  # once the outage shows, every call is refused
        first = outcomes.index("refused")
        assert set(outcomes[first:]) == {"refused"} and served <= 6, outcomes

    filler.unlink()  # space again: the next row lands and the outage ends
    for _ in range(2):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except openai.InternalServerError:
            pass
    gw.wait_for(lambda: httpx.get(health, trust_env=False).status_code == 200)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
    assert "writable again" in gw.logs()
    if on_error == "closed":  # no call was served unrecorded: the ones served during the outage are in now
        assert len(gw.rows("status = 200")) >= 1 + served + 1
