"""The gateway core through real parts: mitmdump, the fake provider, the official OpenAI and Anthropic SDKs."""

import json
import socket
import ssl
import threading
import time

import anthropic
import httpx
import openai
import pytest

from conftest import ALICE_KEY, BOB_KEY

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]


def last_upstream(fake, path_part: str) -> dict:
    return [r for r in fake.requests() if path_part in r["path"]][-1]


def test_openai_plain_call_is_answered_with_org_key_and_recorded(gateway, fake):
    client = gateway.openai(ALICE_KEY)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert answer.choices[0].message.content.startswith("tollgate answers")
    seen = last_upstream(fake, "chat/completions")
    assert seen["headers"]["Authorization"] in ("Bearer sk-org-openai-1", "Bearer sk-org-openai-2")
    assert ALICE_KEY not in json.dumps(seen)
    row = gateway.last_row()
    assert (row["consumer"], row["group"], row["provider"], row["model"]) == ("alice", "research", "openai", "gpt-4o-mini")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert row["status"] == 200 and row["streamed"] == 0 and row["usage_source"] == "provider"
    assert row["latency_ms"] > 0


def test_openai_stream_gets_usage_without_seeing_the_extra_chunk(gateway, fake):
    mark = gateway.mark()
    client = gateway.openai(ALICE_KEY)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                 extra_headers={"x-fake-words": "30"}))
    assert all(c.choices for c in chunks), "the usage chunk the gateway asked for must not reach the client"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(text.split()) == 30
    assert last_upstream(fake, "chat/completions")["body"]["stream_options"] == {"include_usage": True}
    row = gateway.rows_since(mark)[-1]
    assert row["streamed"] == 1 and row["completion_tokens"] == 30 and row["usage_source"] == "provider"
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]


def test_openai_stream_with_client_requested_usage_keeps_it(gateway):
    mark = gateway.mark()
    client = gateway.openai(ALICE_KEY)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert gateway.rows_since(mark)[-1]["completion_tokens"] == 12


def test_anthropic_plain_and_stream(gateway, fake):
    client = gateway.anthropic(BOB_KEY)
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=HELLO)
    assert message.content[0].text.startswith("tollgate answers")
    seen = last_upstream(fake, "/messages")
    assert seen["headers"]["x-api-key"] == "sk-ant-org-1" and BOB_KEY not in json.dumps(seen)
    row = gateway.last_row()
    assert (row["consumer"], row["provider"], row["prompt_tokens"], row["completion_tokens"]) == (
        "bob", "anthropic", message.usage.input_tokens, message.usage.output_tokens)

    mark = gateway.mark()
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=HELLO,
                                extra_headers={"x-fake-words": "20"}) as stream:
        text = stream.get_final_text()
        usage = stream.get_final_message().usage
    assert len(text.split()) == 20
    row = gateway.rows_since(mark)[-1]
    assert row["streamed"] == 1 and (row["prompt_tokens"], row["completion_tokens"]) == (usage.input_tokens, 20)


def test_stream_is_not_buffered(gateway):
    """With 200 ms between chunks the first chunk must arrive long before the last."""
    client = gateway.openai(ALICE_KEY)
    mark = gateway.mark()
    start = time.monotonic()
    arrivals = []
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                extra_headers={"x-fake-delay-ms": "200", "x-fake-words": "6"}):
        arrivals.append(time.monotonic() - start)
    assert arrivals[-1] >= 1.2
    assert arrivals[0] < arrivals[-1] - 1.0, arrivals
    row = gateway.rows_since(mark)[0]
    assert 150 <= row["ttft_ms"] < 600, "time to first token counts the first text, not the role-only chunk"
    # The same keep-alive connection serves the next call: the stream ended cleanly, not early.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices


def test_model_mapping_sends_gpt35_to_qwen(gateway, fake):
    answer = gateway.openai(ALICE_KEY).chat.completions.create(model="gpt-3.5-turbo", messages=HELLO)
    assert answer.model == "qwen-turbo"
    seen = last_upstream(fake, "chat/completions")
    assert seen["path"] == "/compatible-mode/v1/chat/completions"
    assert seen["body"]["model"] == "qwen-turbo" and seen["headers"]["Authorization"] == "Bearer dash-org-1"
    row = gateway.last_row()
    assert (row["requested_model"], row["model"], row["provider"], row["source"]) == (
        "gpt-3.5-turbo", "qwen-turbo", "qwen", "openai")


def test_org_keys_rotate_round_robin(gateway, fake):
    client = gateway.openai(ALICE_KEY)
    for _ in range(4):
        client.embeddings.create(model="text-embedding-3-small", input="rotate")
    keys = [r["headers"]["Authorization"] for r in fake.requests() if r["path"].endswith("/embeddings")][-4:]
    assert keys[0] != keys[1] and keys[0] == keys[2] and keys[1] == keys[3]


def test_gemini_native_key_moves_from_query_to_header(gateway, fake):
    with gateway.httpx() as client:
        response = client.post(
            f"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent?key={ALICE_KEY}",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert response.status_code == 200
    seen = last_upstream(fake, ":generateContent")
    assert seen["headers"]["x-goog-api-key"] == "gem-org-1" and "key=" not in seen["path"]
    row = gateway.last_row()
    assert (row["consumer"], row["model"], row["completion_tokens"]) == ("alice", "gemini-2.0-flash", 12)


def test_gemini_native_stream_usage(gateway):
    mark = gateway.mark()
    with gateway.httpx() as client:
        with client.stream("POST", "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash"
                           ":streamGenerateContent?alt=sse", headers={"x-goog-api-key": BOB_KEY},
                           json={"contents": [{"parts": [{"text": "hi"}]}]}) as response:
            events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert len(events) == 12
    row = gateway.rows_since(mark)[-1]
    assert row["streamed"] == 1 and row["completion_tokens"] == 12 and row["usage_source"] == "provider"


def test_missing_and_unknown_keys_are_refused_in_each_sdk_shape(gateway, fake):
    before = len(fake.requests())
    with pytest.raises(openai.AuthenticationError) as e:
        gateway.openai("sk-not-a-gateway-key").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert e.value.status_code == 401 and "gateway key" in e.value.message
    with pytest.raises(anthropic.AuthenticationError):
        gateway.anthropic("nope").messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO)
    assert len(fake.requests()) == before, "refused calls must not reach the provider"
    row = gateway.last_row()
    assert row["status"] == 401 and row["decision"] == "rejected"


def test_malformed_json_is_400_and_not_forwarded(gateway, fake):
    before = len(fake.requests())
    with gateway.httpx() as client:
        response = client.post("https://api.openai.com/v1/chat/completions", content=b'{"model": "gpt-4o",',
                               headers={"authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert len(fake.requests()) == before
    assert gateway.last_row()["status"] == 400


def test_oversized_body_is_413_in_anthropic_shape(gateway, fake):
    with pytest.raises(anthropic.APIStatusError) as e:
        gateway.anthropic(ALICE_KEY).messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x" * 300_000}])
    assert e.value.status_code == 413
    assert e.value.body["error"]["type"] == "request_too_large"
    assert gateway.last_row()["status"] == 413


def test_upstream_error_status_passes_through_and_is_recorded(gateway):
    with pytest.raises(openai.InternalServerError) as e:
        gateway.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                          extra_headers={"x-fake-status": "503"})
    assert e.value.status_code == 503
    assert gateway.last_row()["status"] == 503


def test_timed_out_provider_is_504_in_provider_shape(gateway):
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        gateway.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                          extra_headers={"x-fake-hang": "1"})
    assert e.value.status_code == 504 and time.monotonic() - start < 5
    assert e.value.body["type"] == "server_error" and "did not answer" in e.value.body["message"]
    row = gateway.wait_for(lambda: [r for r in gateway.rows() if r["decision"] == "upstream_timeout"])[-1]
    assert row["status"] == 504


def test_unreachable_provider_is_502_in_provider_shape(make_gateway):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gw = make_gateway({"providers": {"anthropic": {"type": "anthropic", "keys": ["sk-ant-org"], "upstream": dead}}})
    with pytest.raises(anthropic.APIStatusError) as e:
        gw.anthropic("any").messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO)
    assert e.value.status_code == 502
    assert e.value.body["error"]["type"] == "api_error" and "cannot reach provider anthropic" in str(e.value.body)
    row = gw.wait_for(lambda: gw.rows())[-1]
    assert (row["status"], row["decision"], row["consumer"]) == (502, "upstream_error", "anonymous")


def test_client_that_disconnects_mid_stream_is_charged_what_was_streamed(gateway):
    client = gateway.openai(ALICE_KEY)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                            extra_headers={"x-fake-delay-ms": "100", "x-fake-words": "40"})
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if len(received.split()) >= 5:
            break
    stream.close()
    row = gateway.wait_for(lambda: [r for r in gateway.rows() if r["decision"] == "client_aborted"])[-1]
    assert row["usage_source"] == "estimate" and row["streamed"] == 1
    assert 5 <= row["completion_tokens"] < 40
    assert row["prompt_tokens"] > 0


def test_reverse_listener_serves_base_url_clients_with_the_same_policies(gateway, fake):
    base = f"http://127.0.0.1:{gateway.reverse_port}"
    client = gateway.openai(ALICE_KEY, base_url=f"{base}/v1")
    answer = client.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO)
    assert answer.model == "qwen-turbo"
    assert last_upstream(fake, "chat/completions")["headers"]["Authorization"] == "Bearer dash-org-1"
    claude = gateway.anthropic(BOB_KEY, base_url=base)
    assert claude.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO).content
    assert last_upstream(fake, "/messages")["headers"]["x-api-key"] == "sk-ant-org-1"
    assert gateway.last_row()["consumer"] == "bob" and gateway.last_row()["source"] == ""
    with pytest.raises(openai.AuthenticationError):
        gateway.openai("wrong", base_url=f"{base}/v1").models.list()


def test_other_https_hosts_are_tunnelled_untouched(gateway, tmp_path):
    """A non-LLM host keeps its own certificate: the gateway does not decrypt it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = tmp_path / "cert.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = tmp_path / "key.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_pem, key_pem)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve_once():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntunneled")

    threading.Thread(target=serve_once, daemon=True).start()
    # Trusting only the server's own certificate: this succeeds only if nobody re-signs the connection.
    with httpx.Client(proxy=gateway.proxy, verify=ssl.create_default_context(cafile=str(cert_pem))) as client:
        response = client.get(f"https://localhost:{port}/")
    listener.close()
    assert response.text == "tunneled"
    assert not [r for r in gateway.rows() if f":{port}" in r["endpoint"]]


def test_secrets_never_appear_in_logs_ledger_or_errors(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        gateway.openai("sk-live-secret-client-key").models.list()
    ledger = json.dumps(gateway.rows())
    for secret in (ALICE_KEY, BOB_KEY, "sk-org-openai-1", "sk-org-openai-2", "sk-ant-org-1", "dash-org-1",
                   "gem-org-1", "sk-live-secret-client-key"):
        assert secret not in gateway.logs()
        assert secret not in ledger
        assert secret not in str(e.value.body)
