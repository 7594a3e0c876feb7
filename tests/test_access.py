"""Consumers and access control through the real SDKs: who may call, from where their key comes, what they may use."""

import json
import subprocess
import sys
import time

import anthropic
import openai
import pytest

from conftest import ROOT
from harness import Gateway, providers_to

HELLO = [{"role": "user", "content": "hi"}]
KEYS = {"alice": "tg-alice-access-1", "ci-bot": "tg-ci-bot-access-1", "old": "tg-old-access-1",
        "off": "tg-off-access-1", "carol": "tg-carol-access-1"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    workdir = tmp_path_factory.mktemp("access")
    (workdir / "consumers.yaml").write_text("consumers: []\n")
    gateway = Gateway(workdir, {
        "providers": providers_to(fake),
        "groups": {"research": {"models": ["gpt-4o*", "claude-*", "gemini-*"],
                                "providers": ["openai", "anthropic", "gemini"]}},
        "consumers": [
            {"name": "alice", "key": KEYS["alice"], "group": "research"},
            {"name": "ci-bot", "key": KEYS["ci-bot"], "models": ["gpt-4o-mini"]},
            {"name": "old", "key": KEYS["old"], "expires": "2020-01-01"},
            {"name": "off", "key": KEYS["off"], "disabled": True},
            {"name": "carol", "key": KEYS["carol"], "group": "research", "providers": ["anthropic"]},
        ],
        "consumers_file": "consumers.yaml",
        "send_user_id": True,
    })
    yield gateway
    gateway.stop()


def upstream(fake, part):
    return [r for r in fake.requests() if part in r["path"]][-1]


@pytest.mark.parametrize("key, phrase", [
    ("tg-nobody", "unknown gateway key"),
    (KEYS["old"], "expired on 2020-01-01"),
    (KEYS["off"], "is disabled"),
    ("sk-proj-abcdefghijklmnopqrstuvwxyz", "provider API key"),
])
def test_refused_keys_raise_openai_authentication_error(gw, fake, key, phrase):
    before = len(fake.requests())
    with pytest.raises(openai.AuthenticationError) as e:
        gw.openai(key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert phrase in e.value.message
    assert len(fake.requests()) == before
    row = gw.last_row()
    assert row["status"] == 401 and phrase in row["reason"]


def test_missing_key_is_401_in_openai_shape(gw):
    with gw.httpx() as client:  # the SDKs refuse to send no key at all; curl and friends do not
        response = client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize("key, phrase", [
    ("sk-ant-api03-abcdefghijklmnop", "provider API key"), (KEYS["off"], "disabled"), ("tg-wrong", "unknown")])
def test_refused_keys_raise_anthropic_authentication_error(gw, key, phrase):
    with pytest.raises(anthropic.AuthenticationError) as e:
        gw.anthropic(key).messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO)
    assert phrase in str(e.value)


@pytest.mark.parametrize("consumer, model, phrase", [
    ("alice", "o3-mini", "group research may not use model o3-mini"),
    ("ci-bot", "gpt-4o", "consumer ci-bot may not use model gpt-4o"),
    ("carol", "gpt-4o", "consumer carol may not use provider openai"),
])
def test_disallowed_model_or_provider_is_permission_denied(gw, consumer, model, phrase):
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai(KEYS[consumer]).chat.completions.create(model=model, messages=HELLO)
    assert phrase in e.value.message
    row = gw.last_row()
    assert (row["status"], row["consumer"], row["decision"]) == (403, consumer, "rejected")


def test_disallowed_model_anthropic_shape(gw):
    with pytest.raises(anthropic.PermissionDeniedError):
        gw.anthropic(KEYS["ci-bot"]).messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO)


def test_allowed_call_reaches_provider_with_org_key_and_hashed_user(gw, fake):
    answer = gw.openai(KEYS["alice"]).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert answer.choices
    seen = upstream(fake, "chat/completions")
    assert seen["headers"]["Authorization"].startswith("Bearer sk-org-openai-")
    assert seen["body"]["user"].startswith("tg-") and "alice" not in seen["body"]["user"]
    assert KEYS["alice"] not in json.dumps(seen)
    assert gw.openai(KEYS["carol"]).chat.completions.create  # carol may use anthropic
    message = gw.anthropic(KEYS["carol"]).messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO)
    assert message.content and gw.last_row()["consumer"] == "carol"


def test_every_credential_location_resolves_to_the_consumer(gw, fake):
    key = KEYS["alice"]
    gemini = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    chat = "https://api.openai.com/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": HELLO}
    gem_body = {"contents": [{"parts": [{"text": "hi"}]}]}
    mark = gw.mark()
    gw.openai(key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)           # Authorization: Bearer
    gw.anthropic(key).messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=HELLO)  # x-api-key
    with gw.httpx() as client:
        assert client.post(chat, json=body, headers={"authorization": key}).status_code == 200  # no scheme word
        assert client.post(chat, json=body, headers={"api-key": key}).status_code == 200        # Azure SDK style
        assert client.post(gemini, json=gem_body, headers={"x-goog-api-key": key}).status_code == 200
        assert client.post(f"{gemini}?key={key}", json=gem_body).status_code == 200
    # Proxy authentication: the SDK's own key is only a placeholder.
    gw.openai("placeholder", proxy_auth=("alice", key)).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    rows = gw.rows_since(mark, 7)
    assert [r["consumer"] for r in rows] == ["alice"] * 7 and all(r["status"] == 200 for r in rows)
    for seen in fake.requests()[-7:]:
        assert key not in json.dumps(seen) and "placeholder" not in json.dumps(seen["headers"])
        assert "Proxy-Authorization" not in seen["headers"]


def test_proxy_authentication_with_wrong_key_or_name_is_refused(gw):
    for user, key in (("alice", "tg-wrong"), ("carol", KEYS["alice"])):
        with pytest.raises(openai.AuthenticationError) as e:
            gw.openai("placeholder", proxy_auth=(user, key)).models.list()
        assert "proxy authentication failed" in e.value.message


def keys(gw, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "keys.py"), "--config", str(gw.config_path), *args],
                          capture_output=True, text=True, check=True)


def test_scripts_keys_create_then_revoke_on_the_running_gateway(gw):
    new_key = keys(gw, "create", "dave", "--group", "research").stdout.strip()
    assert new_key.startswith("tg-") and new_key not in (gw.workdir / "consumers.yaml").read_text()
    client = gw.openai(new_key)
    start = time.monotonic()
    gw.wait_for(lambda: _works(client), timeout=2.5)
    assert time.monotonic() - start < 2.5
    assert gw.last_row()["consumer"] == "dave"
    assert "dave" in keys(gw, "list").stdout

    keys(gw, "revoke", "dave")
    start = time.monotonic()
    gw.wait_for(lambda: not _works(client), timeout=2.5)
    assert time.monotonic() - start < 2.5

    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "keys.py"), "--config", str(gw.config_path),
                              "rotate", "dave"], capture_output=True, text=True)
    assert refused.returncode != 0 and "stays revoked" in refused.stderr, "rotate never re-enables a revoked key"
    restored = keys(gw, "restore", "dave").stdout.strip()
    gw.wait_for(lambda: _works(gw.openai(restored)), timeout=2.5)
    assert not _works(client), "the old key stays dead after a restore"
    listing = keys(gw, "list").stdout
    assert "dave" in listing and "consumers.yaml" in listing and "gateway.yaml" in listing
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "keys.py"), "--config", str(gw.config_path),
                          "create", "bad name;"], capture_output=True, text=True)
    assert bad.returncode != 0 and "not a consumer name" in bad.stderr


def _works(client) -> bool:
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        return True
    except openai.AuthenticationError:
        return False


def test_unapproved_ai_provider_is_refused_and_recorded(gw):
    with gw.httpx() as client:
        response = client.post("https://api.cohere.com/v2/chat", json={"model": "command-r", "messages": HELLO},
                               headers={"authorization": "Bearer some-cohere-key"})
    assert response.status_code == 403
    assert "provider not approved" in response.json()["error"]["message"]
    row = gw.last_row()
    assert (row["provider"], row["status"], row["decision"]) == ("api.cohere.com", 403, "rejected")


def test_byok_passthrough_and_unapproved_record_mode(tmp_path, fake):
    gateway = Gateway(tmp_path, {"providers": providers_to(fake), "consumers": [{"name": "a", "key": "tg-a"}],
                                 "unknown_keys": "passthrough", "unapproved_providers": "record"})
    try:
        gateway.openai("sk-my-own-key").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        seen = upstream(fake, "chat/completions")
        assert seen["headers"]["Authorization"] == "Bearer sk-my-own-key"
        row = gateway.last_row()
        assert (row["consumer"], row["byok"], row["decision"], row["completion_tokens"]) == ("byok", 1, "byok", 12)
        with gateway.httpx() as client:  # recorded, then forwarded as sent: here the host does not resolve
            client.post("https://api.cohere.com/v2/chat", json={"model": "command-r"})
        row = gateway.wait_for(lambda: [r for r in gateway.rows() if r["provider"] == "api.cohere.com"])[-1]
        assert row["decision"] == "unapproved"
        assert "sk-my-own-key" not in gateway.logs() and "sk-my-own-key" not in json.dumps(gateway.rows())
    finally:
        gateway.stop()


def test_no_key_ever_appears_in_logs_ledger_or_errors(gw):
    ledger = json.dumps(gw.rows())
    logs = gw.logs()
    for secret in list(KEYS.values()) + ["sk-org-openai-1", "sk-ant-org-1", "sk-proj-abcdefghijklmnopqrstuvwxyz"]:
        assert secret not in logs and secret not in ledger
