"""Cache keys and directives on plain data."""

from tollgate.core.cache import Entry, cache_key, is_deterministic, request_directive, tenant

BASE = dict(provider="openai", dialect="openai", path="/v1/chat/completions", model="gpt-4o", streamed=False,
            tenant_id="consumer:alice",
            body={"model": "gpt-4o", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]})


def key(**changes):
    return cache_key(**{**BASE, **changes})


def test_key_covers_everything_that_changes_the_answer():
    base = key()
    assert key(model="gpt-4o-mini") != base
    assert key(provider="azure") != base
    assert key(streamed=True) != base
    assert key(tenant_id="consumer:bob") != base
    assert key(path="/v1beta/models/gemini-pro:generateContent") != base
    assert key(body={**BASE["body"], "messages": [{"role": "user", "content": "Q"}]}) != base  # system prompt
    assert key(body={**BASE["body"], "temperature": 0.5}) != base


def test_key_ignores_what_does_not_and_key_order():
    base = key()
    body = dict(reversed(list(BASE["body"].items())))
    assert key(body={**body, "stream": True, "stream_options": {"include_usage": True}, "user": "u",
                     "metadata": {"trace": "1"}}) == base


def test_tenants_scopes_and_directives():
    assert tenant("consumer", "alice", "team") == "consumer:alice"
    assert tenant("group", "alice", "team") == "group:team"
    assert tenant("group", "alice", "") == "consumer:alice"  # no group: never shared
    assert tenant("global", "alice", "team") == "*"
    assert request_directive("no-store", "") == "bypass" and request_directive("", "BYPASS") == "bypass"
    assert request_directive("max-age=0, no-cache", "") == "refresh" and request_directive("", "") == "lookup"
    assert not is_deterministic({}), "no temperature: the provider samples"
    assert is_deterministic({"temperature": 0}) and not is_deterministic({"temperature": 1})
    assert is_deterministic({"generationConfig": {"temperature": 0}}) and not is_deterministic({"temperature": False})
    assert not is_deterministic({"generationConfig": {"temperature": 0.7}})


def test_entry_round_trip_and_foreign_data():
    entry = Entry("text/event-stream", True, 10, 20, b"data: x\n\ndata: [DONE]\n\n")
    assert Entry.unpack(entry.pack()) == entry
    assert Entry.unpack(b"garbage") is None and Entry.unpack(b'{"x": 1}\nbody') is None
