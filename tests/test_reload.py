"""Configuration edits reach the running gateway; a bad edit is logged and the previous configuration serves on."""

import pytest
import openai

from harness import providers_to

HELLO = [{"role": "user", "content": "hi"}]


def test_good_edit_applies_and_bad_edit_keeps_old_config(make_gateway, fake):
    config = {"providers": providers_to(fake), "consumers": [{"name": "carol", "key": "tg-carol-1"}]}
    gw = make_gateway(config)
    client = gw.openai("tg-carol-1")
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).model == "gpt-4o-mini"

    # A good edit: a new model mapping is applied without a restart.
    config["models"] = [{"match": "gpt-4o-mini", "provider": "qwen", "model": "qwen-plus"}]
    gw.write_config(config)
    gw.wait_for(lambda: "configuration reloaded" in gw.logs())
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).model == "qwen-plus"

    # A bad edit: logged with the key path, and the previous configuration keeps serving.
    gw.write_config(config | {"models": [{"match": "gpt-4o-mini", "provider": "nowhere"}]})
    gw.wait_for(lambda: "models[0].provider: no provider named 'nowhere'" in gw.logs())
    assert "keeping the previous one" in gw.logs()
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).model == "qwen-plus"

    gw.write_config("providers: [unclosed")
    gw.wait_for(lambda: "not valid YAML" in gw.logs())
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).model == "qwen-plus"
    assert gw.proc.poll() is None


def test_bad_config_at_start_names_the_key_path(tmp_path, fake):
    from harness import Gateway

    with pytest.raises(RuntimeError) as e:
        Gateway(tmp_path, {"providers": {"openai": {"type": "opneai"}}})
    assert "providers.openai.type: unknown provider type 'opneai'" in str(e.value)


def test_without_consumers_everyone_is_anonymous_but_keys_are_still_replaced(make_gateway, fake):
    gw = make_gateway({"providers": providers_to(fake)})
    gw.openai("sk-whatever-the-client-has").chat.completions.create(model="gpt-4o", messages=HELLO)
    seen = [r for r in fake.requests() if r["path"].endswith("chat/completions")][-1]
    assert seen["headers"]["Authorization"].startswith("Bearer sk-org-openai-")
    assert gw.last_row()["consumer"] == "anonymous"


def test_killing_the_gateway_loses_no_finished_call(make_gateway, fake):
    gw = make_gateway({"providers": providers_to(fake)})
    client = gw.openai("any")
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    gw.proc.kill()  # SIGKILL: no shutdown hooks, no last batch, no final checkpoint
    gw.proc.wait(10)
    # Every finished call is on disk (the SQLite file, or the journal beside it that the next start puts in).
    again = make_gateway({"providers": providers_to(fake), "ledger": {"path": str(gw.ledger_path)}})
    rows = again.rows()
    assert len(rows) == 3 and all(r["status"] == 200 and r["completion_tokens"] == 12 for r in rows)


def test_jsonl_mirror_and_retention(make_gateway, fake):
    import json
    import sqlite3
    import time

    gw = make_gateway({"providers": providers_to(fake)})
    jsonl = gw.workdir / "usage.jsonl"
    client = gw.openai("any")
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    # An old row, as if written long ago; a config edit turns on the mirror and a 1-day retention.
    db = sqlite3.connect(gw.ledger_path)
    db.execute("INSERT INTO calls (id, started_at, dialect, endpoint) VALUES ('ancient', ?, 'openai', '/v1/x')",
               (time.time() - 3 * 86400,))
    db.commit()
    db.close()
    gw.write_config({"providers": providers_to(fake),
                     "ledger": {"path": str(gw.ledger_path), "jsonl": str(jsonl), "retention": "1d"}})
    gw.wait_for(lambda: "configuration reloaded" in gw.logs())
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["model"] == "gpt-4o-mini" and rows[0]["completion_tokens"] == 12
    gw.wait_for(lambda: not [r for r in gw.rows() if r["id"] == "ancient"], timeout=5)
    assert len(gw.rows()) == 2


def test_an_edit_that_drops_every_consumer_is_refused_unless_auth_none_says_so(make_gateway, fake):
    config = {"providers": providers_to(fake), "consumers": [{"name": "carol", "key": "tg-carol-1"}]}
    gw = make_gateway(config)
    stranger = gw.openai("sk-not-a-gateway-key")
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    gw.write_config({"providers": providers_to(fake)})  # a partial write / bad edit lost the consumers
    gw.wait_for(lambda: "would turn authentication off" in gw.logs())
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert gw.openai("tg-carol-1").chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices

    gw.write_config({"providers": providers_to(fake), "auth": "none"})  # meant: said explicitly
    gw.wait_for(lambda: "configuration reloaded" in gw.logs())
    assert stranger.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
    assert gw.last_row()["consumer"] == "anonymous"
