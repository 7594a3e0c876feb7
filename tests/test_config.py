"""Configuration parsing: environment substitution, validation errors that name the key path."""

import pytest

from tollgate.core.config import HOSTS_KEPT, ConfigError, key_digest, parse_config, parse_duration, parse_size

BASE = {"providers": {"openai": {"type": "openai", "keys": ["${OPENAI_API_KEY}"]}}}


def test_env_vars_are_substituted_with_defaults_and_unset_ones_warned():
    config = parse_config({
        "providers": {"openai": {"type": "openai", "keys": ["${OPENAI_API_KEY}", "${MISSING_KEY}"]},
                      "local": {"type": "openai-compatible", "hosts": ["${LLM_HOST:-llm.internal:8000}"]}},
        "consumers": [{"name": "alice", "key": "${ALICE_KEY}"}],
    }, env={"OPENAI_API_KEY": "sk-org", "ALICE_KEY": "k1"})
    assert config.providers["openai"].keys == ("sk-org",)
    assert config.providers["local"].hosts == ("llm.internal:8000",)
    assert config.providers["local"].base_url == "http://llm.internal:8000/v1"
    assert config.consumers[0].key_sha256 == key_digest("k1")
    assert any("providers.openai.keys[1]: ${MISSING_KEY} is not set" in w for w in config.warnings)


def test_consumer_with_unset_key_cannot_authenticate_but_auth_stays_required():
    config = parse_config({**BASE, "consumers": [{"name": "alice", "key": "${NOPE}"}]}, env={})
    assert config.consumers == () and config.auth_required


@pytest.mark.parametrize("data, message", [
    ({}, "providers: at least one provider is required"),
    ({"providers": {"x": {"type": "nope"}}}, "providers.x.type: unknown provider type 'nope'"),
    ({"providers": {"x": {"type": "openai", "kyes": []}}}, "providers.x.kyes: unknown key"),
    ({"providers": {"x": {"type": "openai-compatible"}}}, "providers.x.hosts: provider type 'openai-compatible' has no default host"),
    ({**BASE, "models": [{"match": "gpt-4", "provider": "qwen"}]}, "models[0].provider: no provider named 'qwen'"),
    ({**BASE, "models": [{"match": "g*pt", "provider": "openai"}]}, "models[0].match: '*' may only end a pattern"),
    ({**BASE, "models": [{"match": "a", "provider": "openai"}, {"match": "a", "provider": "openai"}]},
     "models[1].match: 'a' is matched by an earlier rule already"),
    ({**BASE, "consumers": [{"name": "a", "key_sha256": "xyz"}]}, "consumers[0].key_sha256: expected 64 hex digits"),
    ({**BASE, "consumers": "alice"}, "consumers: expected a list"),
    ({**BASE, "gateway": {"max_request_bytes": "lots"}}, "gateway.max_request_bytes: expected a size"),
    ({**BASE, "providers": {"a": {"type": "openai"}, "b": {"type": "openai"}}},
     "providers.b.hosts: api.openai.com:443 is already served by a"),
    ({**BASE, "ledgr": {}}, "config.ledgr: unknown key"),
])
def test_bad_config_names_the_key_path_and_reason(data, message):
    with pytest.raises(ConfigError) as e:
        parse_config(data, env={})
    assert message in str(e.value)


def test_sizes_and_durations():
    assert parse_size("1MB", "x") == 1_000_000 and parse_size("512KiB", "x") == 524288 and parse_size(10, "x") == 10
    assert parse_duration("1h", "x") == 3600 and parse_duration("500ms", "x") == 0.5 and parse_duration(30, "x") == 30


def test_wildcard_hosts_match_subdomains_only():
    config = parse_config({"providers": {"azure": {"type": "azure-openai", "hosts": ["*.openai.azure.com"]}}}, env={})
    assert config.provider_for_host("myres.openai.azure.com", 443).name == "azure"
    assert config.provider_for_host("openai.azure.com", 443) is None
    assert config.provider_for_host("myres.openai.azure.com", 8443) is None
    for i in range(3000):  # hosts a client makes up are remembered within a bound, and answered alike
        assert config.provider_for_host(f"h{i}.example", 443) is None
    assert len(config._hosts) <= HOSTS_KEPT
    assert config.provider_for_host("MyRes.OpenAI.Azure.com.", 443).name == "azure"


def test_shipped_config_loads(monkeypatch):
    from pathlib import Path

    from tollgate.core.config import load_config

    config = load_config(Path(__file__).parents[1] / "config" / "gateway.yaml", env={"ALICE_KEY": "k"})
    assert {"openai", "anthropic", "gemini", "qwen"} <= set(config.providers)
    assert config.rules[0].match == "gpt-3.5-turbo"


def test_a_config_error_names_file_line_and_a_close_match(tmp_path):
    from tollgate.core.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text("providers:\n  openai:\n    type: openai\n    kyes: [x]\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value).startswith(f"{path}:4: providers.openai.kyes: unknown key (did you mean 'keys'?")
    path.write_text("providers:\n  openai: {type: openai}\nlimits:\n  rules:\n    - {name: r, requests_per_minit: 5}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert f"{path}:5: limits.rules[0].requests_per_minit" in str(e.value)
    assert "did you mean 'requests_per_minute'?" in str(e.value) and "tokens_per_minute" in str(e.value)


def test_a_bad_config_at_start_is_one_line_without_a_traceback(tmp_path):
    from harness import Gateway

    with pytest.raises(RuntimeError) as e:
        Gateway(tmp_path, {"providers": {"openai": {"type": "openai", "kyes": ["x"]}}})
    log = str(e.value)
    assert "gateway.yaml:" in log and "did you mean 'keys'?" in log and "Traceback" not in log


def test_each_feature_parses_its_section_and_the_core_has_no_import_cycle():
    """config.py assembles the sections; the features own their parsers, and no core module imports back."""
    import ast

    from conftest import ROOT

    core = ROOT / "addons" / "tollgate" / "core"
    imports = {p.stem: {node.module or alias.name for node in ast.walk(ast.parse(p.read_text()))
                        if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}
               for p in core.glob("*.py")}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen))
                   for n in imports.get(start, ()))

    assert [m for m in imports if reaches(m, m, set())] == []
    for module, parser in (("guard", "parse_guard"), ("limits", "parse_limits"), ("cache", "parse_cache"),
                           ("prices", "parse_prices"), ("prompts", "parse_prompts"), ("answers", "parse_moderation"),
                           ("providers", "parse_provider")):
        assert f"def {parser}(" in (core / f"{module}.py").read_text()
        assert module in imports["config"]


def test_an_unquoted_on_key_means_on(tmp_path):
    """YAML 1.1 reads `on:` as true; the keys called `on` still work written plainly, as the README shows them."""
    import yaml as _yaml

    from tollgate.core.config import load_config
    path = tmp_path / "gateway.yaml"
    path.write_text("providers: {openai: {type: openai, keys: [k]}}\n"
                    "retry: {max_attempts: 2, on: [503]}\n"
                    "embeddings: {provider: openai, model: e}\n"
                    "cache: {semantic: {on: ['gpt-4o*']}}\n")
    assert True in _yaml.safe_load(path.read_text())["retry"]
    config = load_config(path)
    assert config.retry.on == frozenset({503}) and config.cache.semantic.on == ("gpt-4o*",)
