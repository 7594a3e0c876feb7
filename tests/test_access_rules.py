"""Access decisions on plain data."""

import base64
from datetime import datetime, timezone

import pytest

from tollgate.core.access import (access_problem, host_pattern, key_problem, looks_like_provider_key,
                                  proxy_credentials, unapproved_entry, user_id)
from tollgate.core.config import ConfigError, parse_config

CONFIG = parse_config({
    "providers": {"openai": {"type": "openai"}, "anthropic": {"type": "anthropic"}},
    "groups": {"research": {"models": ["gpt-4o*", "claude-*"], "providers": ["openai", "anthropic"]},
               "open": {}},
    "consumers": [
        {"name": "alice", "key": "a", "group": "research"},
        {"name": "bot", "key": "b", "group": "research", "models": ["gpt-4o-mini"], "providers": ["openai"]},
        {"name": "free", "key": "c", "group": "open"},
        {"name": "old", "key": "d", "expires": "2027-01-01"},
        {"name": "off", "key": "e", "disabled": True},
    ],
}, env={})
C = {c.name: c for c in CONFIG.consumers}


@pytest.mark.parametrize("name, model, provider, allowed", [
    ("alice", "gpt-4o-mini", "openai", True),
    ("alice", "claude-sonnet-4-6", "anthropic", True),
    ("alice", "o3", "openai", False),
    ("bot", "gpt-4o-mini", "openai", True),
    ("bot", "gpt-4o", "openai", False),              # the consumer narrows its group
    ("bot", "claude-sonnet-4-6", "anthropic", False),
    ("free", "anything", "anthropic", True),         # a group without lists allows everything
])
def test_consumer_lists_narrow_group_lists(name, model, provider, allowed):
    assert (access_problem(CONFIG, C[name], model, provider) == "") is allowed


def test_expiry_and_disabled():
    assert key_problem(C["old"], datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)) == ""
    assert "expired on 2027-01-01" in key_problem(C["old"], datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert "disabled" in key_problem(C["off"])


def test_groups_and_duplicate_keys_are_validated():
    with pytest.raises(ConfigError, match=r"consumers\[0\].group: no group named 'x'"):
        parse_config({"providers": {"openai": {"type": "openai"}}, "consumers": [{"name": "a", "key": "k", "group": "x"}]}, env={})
    with pytest.raises(ConfigError, match=r"consumers\[1\]: consumer 'b' has the same key as 'a'"):
        parse_config({"providers": {"openai": {"type": "openai"}},
                      "consumers": [{"name": "a", "key": "k"}, {"name": "b", "key": "k"}]}, env={})
    with pytest.raises(ConfigError, match=r"groups.g.providers\[0\]: no provider named 'nope'"):
        parse_config({"providers": {"openai": {"type": "openai"}}, "groups": {"g": {"providers": ["nope"]}}}, env={})


@pytest.mark.parametrize("key, provider_like", [
    ("sk-proj-abc", True), ("sk-ant-api03-x", True), ("AIzaSyD-x", True), ("gsk_x", True), ("xai-x", True),
    ("tg-abc", False), ("alice-key", False)])
def test_provider_key_detection(key, provider_like):
    assert looks_like_provider_key(key) is provider_like


def test_proxy_credentials():
    header = "Basic " + base64.b64encode(b"alice:tg-k:with-colon").decode()
    assert proxy_credentials(header) == ("alice", "tg-k:with-colon")
    assert proxy_credentials("Bearer x") is None and proxy_credentials("Basic !!!") is None


@pytest.mark.parametrize("host, path, entry", [
    ("api.cohere.com", "/v2/chat", "api.cohere.com"),
    ("myres.openai.azure.com", "/openai/deployments/x", "*.openai.azure.com"),
    ("bedrock-runtime.us-east-1.amazonaws.com", "/model/x/invoke", "bedrock-runtime.*.amazonaws.com"),
    ("openrouter.ai", "/api/v1/chat/completions", "openrouter.ai/api/"),
    ("openrouter.ai", "/models", ""),                # the website keeps working
    ("example.com", "/v1/chat/completions", ""),
])
def test_known_ai_hosts(host, path, entry):
    assert unapproved_entry(CONFIG.known_ai_hosts, host, path) == entry


def test_known_hosts_become_intercepted_patterns_and_user_ids_are_pseudonymous():
    assert host_pattern("openrouter.ai/api/") == "openrouter.ai:443"
    assert user_id("alice") == user_id("alice") != user_id("bob") and "alice" not in user_id("alice")
