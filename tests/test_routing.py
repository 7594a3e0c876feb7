"""Routing precedence and destination rewriting for every provider spec, on plain data."""

import pytest

from tollgate.core.config import parse_config
from tollgate.core.credentials import client_key, find_consumer, without_key_param
from tollgate.core.routing import RouteError, destination, match_rule, resolve

CONFIG = parse_config({
    "providers": {
        "openai": {"type": "openai", "keys": ["o"]},
        "anthropic": {"type": "anthropic", "keys": ["a"]},
        "gemini": {"type": "gemini", "keys": ["g"]},
        "qwen": {"type": "qwen", "keys": ["q"]},
        "groq": {"type": "groq", "keys": ["gr"]},
        "azure": {"type": "azure-openai", "hosts": ["acme.openai.azure.com"], "keys": ["az"]},
        "local": {"type": "openai-compatible", "hosts": ["llm.internal:8000"]},
        "mirror": {"type": "deepseek", "keys": ["d"], "upstream": "http://127.0.0.1:9000/prefix"},
    },
    "models": [
        {"match": "gpt-4o", "provider": "openai"},
        {"match": "gpt-4*", "provider": "groq"},
        {"match": "gpt-4o-*", "provider": "azure", "model": "prod-4o"},
        {"match": "gpt-3.5-turbo", "provider": "qwen", "model": "qwen-turbo"},
        {"match": "llama*", "provider": "local"},
        {"match": "*", "provider": "openai"},
    ],
}, env={})
P = CONFIG.providers


@pytest.mark.parametrize("model, provider, routed", [
    ("gpt-4o", "openai", "gpt-4o"),            # exact beats every prefix
    ("gpt-4o-mini", "azure", "prod-4o"),       # the longest prefix wins, whatever the order in the file
    ("gpt-4-turbo", "groq", "gpt-4-turbo"),    # shorter prefix
    ("gpt-3.5-turbo", "qwen", "qwen-turbo"),
    ("llama3.1:8b", "local", "llama3.1:8b"),
    ("o3-mini", "openai", "o3-mini"),          # "*"
])
def test_openai_wire_precedence(model, provider, routed):
    route = resolve(CONFIG, "openai", P["openai"], model)
    assert (route.provider.name, route.model) == (provider, routed)


def test_rules_only_apply_to_providers_that_speak_the_wire_format():
    route = resolve(CONFIG, "anthropic", P["anthropic"], "claude-sonnet-4-6")
    assert route.provider.name == "anthropic" and route.rule == ""
    with pytest.raises(RouteError):
        resolve(parse_config({"providers": {"openai": {"type": "openai"}}}, env={}), "anthropic", None, "claude")


def test_reverse_listener_without_rule_takes_first_provider_of_the_dialect():
    config = parse_config({"providers": {"anthropic": {"type": "anthropic"}, "openai": {"type": "openai"}}}, env={})
    assert resolve(config, "openai", None, "whatever").provider.name == "openai"
    assert resolve(config, "anthropic", None, "claude-x").provider.name == "anthropic"


def test_match_rule_ignores_unusable_providers():
    rules = CONFIG.rules
    assert match_rule(rules, "gpt-4o-mini", lambda p: p != "azure").provider == "groq"


@pytest.mark.parametrize("source, model, path, query, expected", [
    ("openai", "gpt-4o", "/v1/chat/completions", "", ("", "", 0, "/v1/chat/completions")),
    ("openai", "gpt-3.5-turbo", "/v1/chat/completions", "",
     ("https", "dashscope.aliyuncs.com", 443, "/compatible-mode/v1/chat/completions")),
    ("openai", "gpt-4-turbo", "/v1/embeddings", "", ("https", "api.groq.com", 443, "/openai/v1/embeddings")),
    ("openai", "gpt-4o-mini", "/v1/chat/completions", "",
     ("https", "acme.openai.azure.com", 443, "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21")),
    ("openai", "llama3", "/v1/chat/completions", "", ("http", "llm.internal", 8000, "/v1/chat/completions")),
    (None, "gpt-3.5-turbo", "/v1/chat/completions", "",
     ("https", "dashscope.aliyuncs.com", 443, "/compatible-mode/v1/chat/completions")),
])
def test_destinations(source, model, path, query, expected):
    route = resolve(CONFIG, "openai", P[source] if source else None, model)
    d = destination(route, "openai", P[source] if source else None, path, query)
    assert (d.scheme, d.host, d.port, d.path) == expected


def test_upstream_override_keeps_path_under_its_prefix():
    route = resolve(CONFIG, "openai", P["mirror"], "deepseek-chat")
    assert route.provider.name == "openai"  # "*" catches it
    config = parse_config({"providers": {"mirror": {"type": "deepseek", "upstream": "http://127.0.0.1:9000/prefix"}}},
                          env={})
    route = resolve(config, "openai", config.providers["mirror"], "deepseek-chat")
    d = destination(route, "openai", config.providers["mirror"], "/v1/chat/completions", "")
    assert (d.scheme, d.host, d.port, d.path) == ("http", "127.0.0.1", 9000, "/prefix/v1/chat/completions")


def test_gemini_native_model_mapping_rewrites_the_path():
    config = parse_config({"providers": {"gemini": {"type": "gemini"}},
                           "models": [{"match": "gemini-pro", "provider": "gemini", "model": "gemini-2.5-pro"}]},
                          env={})
    route = resolve(config, "gemini", config.providers["gemini"], "gemini-pro")
    d = destination(route, "gemini", config.providers["gemini"], "/v1beta/models/gemini-pro:generateContent", "alt=sse")
    assert d.path == "/v1beta/models/gemini-2.5-pro:generateContent?alt=sse"


def test_azure_same_provider_deployment_mapping():
    config = parse_config({"providers": {"azure": {"type": "azure-openai", "hosts": ["acme.openai.azure.com"]}},
                           "models": [{"match": "gpt-4o", "provider": "azure", "model": "prod-4o"}]}, env={})
    route = resolve(config, "openai", config.providers["azure"], "gpt-4o")
    d = destination(route, "openai", config.providers["azure"], "/openai/deployments/gpt-4o/chat/completions",
                    "api-version=2024-06-01")
    assert d.path == "/openai/deployments/prod-4o/chat/completions?api-version=2024-06-01"


@pytest.mark.parametrize("headers, query, key", [
    ({"authorization": "Bearer k1"}, "", "k1"),
    ({"authorization": "bearer  k1 "}, "", "k1"),
    ({"authorization": "k1"}, "", "k1"),          # keys pasted without the scheme word
    ({"x-api-key": "k1"}, "", "k1"),
    ({"api-key": "k1"}, "", "k1"),
    ({"x-goog-api-key": "k1"}, "", "k1"),
    ({}, "alt=sse&key=k1", "k1"),
    ({}, "alt=sse", ""),
])
def test_client_key_from_every_place(headers, query, key):
    assert client_key(headers, query) == key


def test_key_param_removed_and_consumer_lookup():
    assert without_key_param("alt=sse&key=secret&x=1") == "alt=sse&x=1"
    config = parse_config({"providers": {"openai": {"type": "openai"}},
                           "consumers": [{"name": "a", "key": "k1"}, {"name": "b", "key": "k2"}]}, env={})
    assert find_consumer(config.consumers_by_digest, "k2").name == "b"
    assert find_consumer(config.consumers_by_digest, "k3") is None
