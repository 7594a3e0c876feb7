"""The gateway configuration: YAML in, a frozen Config out, or a ConfigError naming the key path and the reason."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .providers import SPECS, ProviderSpec, split_host


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Provider:
    name: str
    spec: ProviderSpec
    hosts: tuple[str, ...]        # "host:port", lower case; "*.suffix:port" matches any subdomain
    keys: tuple[str, ...]
    base_url: str                 # scheme://host[:port]/prefix of OpenAI-wire endpoints
    upstream: str = ""            # if set, traffic goes to this base URL instead (tests, private mirrors)
    api_version: str = ""         # Azure only


@dataclass(frozen=True)
class ModelRule:
    match: str                    # exact name, "prefix*" or "*"
    provider: str
    model: str = ""               # empty: keep the requested model


@dataclass(frozen=True)
class Consumer:
    name: str
    key_sha256: str
    group: str = ""


@dataclass(frozen=True)
class Config:
    providers: dict[str, Provider]
    rules: tuple[ModelRule, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    auth_required: bool = False   # true as soon as the file declares consumers
    ledger_path: str = "usage.db"
    max_request_bytes: int = 16 * 1024 * 1024
    upstream_timeout_s: float = 600.0
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def provider_for_host(self, host: str, port: int) -> Provider | None:
        hostport = f"{host.lower()}:{port}"
        for provider in self.providers.values():
            for pattern in provider.hosts:
                if pattern == hostport or (
                    pattern.startswith("*.") and hostport.endswith(pattern[1:]) and hostport != pattern[2:]
                ):
                    return provider
        return None


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "ki": 1024, "m": 1e6, "mb": 1e6, "mib": 2**20,
               "mi": 2**20, "g": 1e9, "gb": 1e9, "gib": 2**30, "gi": 2**30}
_DURATION_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(str(value))
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"{path}: expected a size such as 1048576, 512KB or 1MB, got {value!r}")
    return int(float(m[1]) * _SIZE_UNITS[(m[2] or "").lower()])


def parse_duration(value, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = _DURATION.match(str(value))
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"{path}: expected a duration such as 30, 500ms, 30s, 5m or 1h, got {value!r}")
    return float(m[1]) * _DURATION_UNITS[(m[2] or "").lower()]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _expand(node, path: str, env, unset: list[str]):
    """Replaces ${VAR} and ${VAR:-default} in every string; records variables that are unset."""
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, unset) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match) -> str:
            if m[1] in env:
                return env[m[1]]
            if m[2] is not None:
                return m[2]
            unset.append(f"{path}: ${{{m[1]}}} is not set")
            return ""
        return _VAR.sub(sub, node)
    return node


def _mapping(node, path: str, allowed: set[str]) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(node).__name__}")
    unknown = sorted(set(map(str, node)) - allowed)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key (expected one of: {', '.join(sorted(allowed))})")
    return node


def _list(node, path: str) -> list:
    if node is None:
        return []
    if not isinstance(node, list):
        raise ConfigError(f"{path}: expected a list, got {type(node).__name__}")
    return node


def _str(node, path: str, required: bool = True) -> str:
    if node is None and not required:
        return ""
    if not isinstance(node, (str, int, float)) or isinstance(node, bool) or (required and str(node) == ""):
        raise ConfigError(f"{path}: expected a non-empty string, got {node!r}")
    return str(node)


def _provider(name: str, node, path: str, warnings: list[str]) -> Provider:
    node = _mapping(node, path, {"type", "keys", "hosts", "upstream", "base_url", "api_version"})
    type_ = _str(node.get("type"), f"{path}.type")
    spec = SPECS.get(type_)
    if spec is None:
        raise ConfigError(f"{path}.type: unknown provider type {type_!r} (known: {', '.join(sorted(SPECS))})")
    keys = []
    for i, key in enumerate(_list(node.get("keys"), f"{path}.keys")):
        key = _str(key, f"{path}.keys[{i}]", required=False)
        if key:  # an unset ${VAR} leaves an empty key: dropped, with the warning already recorded
            keys.append(key)
    hosts = [_str(h, f"{path}.hosts[{i}]") for i, h in enumerate(_list(node.get("hosts"), f"{path}.hosts"))]
    hosts = hosts or list(spec.hosts)
    if not hosts:
        raise ConfigError(f"{path}.hosts: provider type {type_!r} has no default host; list its hosts")
    normalized = tuple("{}:{}".format(*split_host(h)) for h in hosts)
    base_url = _str(node.get("base_url"), f"{path}.base_url", required=False) or spec.base_url.format(
        host=hosts[0].lstrip("*.")
    )
    upstream = _str(node.get("upstream"), f"{path}.upstream", required=False)
    for key_name, url in (("base_url", base_url), ("upstream", upstream)):
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{path}.{key_name}: expected an http(s) URL, got {url!r}")
    api_version = _str(node.get("api_version"), f"{path}.api_version", required=False)
    if spec.deployment_paths and not api_version:
        api_version = "2024-10-21"
    if not keys and type_ != "openai-compatible":
        warnings.append(f"{path}.keys: no key configured; requests are forwarded without an org key")
    return Provider(name, spec, normalized, tuple(keys), base_url.rstrip("/"), upstream.rstrip("/"), api_version)


def parse_config(data, env=None) -> Config:
    """Validates a parsed YAML document. Raises ConfigError('key.path: reason')."""
    env = os.environ if env is None else env
    unset: list[str] = []
    data = _expand(data if data is not None else {}, "", env, unset)
    top = _mapping(data, "config", {"providers", "models", "consumers", "ledger", "gateway"})
    warnings = list(unset)

    providers: dict[str, Provider] = {}
    for name, node in _mapping(top.get("providers"), "providers", set(map(str, top.get("providers") or {}))).items():
        providers[str(name)] = _provider(str(name), node, f"providers.{name}", warnings)
    if not providers:
        raise ConfigError("providers: at least one provider is required")
    seen_hosts: dict[str, str] = {}
    for provider in providers.values():
        for host in provider.hosts:
            if host in seen_hosts:
                raise ConfigError(f"providers.{provider.name}.hosts: {host} is already served by {seen_hosts[host]}")
            seen_hosts[host] = provider.name

    rules = []
    exact_seen: set[str] = set()
    for i, node in enumerate(_list(top.get("models"), "models")):
        path = f"models[{i}]"
        node = _mapping(node, path, {"match", "provider", "model"})
        match = _str(node.get("match"), f"{path}.match")
        if "*" in match[:-1]:
            raise ConfigError(f"{path}.match: '*' may only end a pattern ('gpt-4*' or '*'), got {match!r}")
        if match in exact_seen:
            raise ConfigError(f"{path}.match: {match!r} is matched by an earlier rule already")
        exact_seen.add(match)
        provider = _str(node.get("provider"), f"{path}.provider")
        if provider not in providers:
            raise ConfigError(f"{path}.provider: no provider named {provider!r} (have: {', '.join(providers)})")
        rules.append(ModelRule(match, provider, _str(node.get("model"), f"{path}.model", required=False)))

    consumers = []
    consumer_nodes = _list(top.get("consumers"), "consumers")
    names: set[str] = set()
    for i, node in enumerate(consumer_nodes):
        path = f"consumers[{i}]"
        node = _mapping(node, path, {"name", "key", "key_sha256", "group"})
        name = _str(node.get("name"), f"{path}.name")
        if name in names:
            raise ConfigError(f"{path}.name: consumer {name!r} is defined twice")
        names.add(name)
        if node.get("key_sha256"):
            digest = _str(node["key_sha256"], f"{path}.key_sha256").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(f"{path}.key_sha256: expected 64 hex digits")
        else:
            key = _str(node.get("key"), f"{path}.key", required=False)
            if not key:
                warnings.append(f"{path}.key: consumer {name!r} has no key and cannot authenticate")
                continue
            digest = key_digest(key)
        consumers.append(Consumer(name, digest, _str(node.get("group"), f"{path}.group", required=False)))

    ledger = _mapping(top.get("ledger"), "ledger", {"path"})
    gateway = _mapping(top.get("gateway"), "gateway", {"max_request_bytes", "upstream_timeout"})
    return Config(
        providers=providers,
        rules=tuple(rules),
        consumers=tuple(consumers),
        auth_required=bool(consumer_nodes),
        ledger_path=_str(ledger.get("path", "usage.db"), "ledger.path"),
        max_request_bytes=parse_size(gateway.get("max_request_bytes", 16 * 2**20), "gateway.max_request_bytes"),
        upstream_timeout_s=parse_duration(gateway.get("upstream_timeout", 600), "gateway.upstream_timeout"),
        warnings=tuple(warnings),
    )


def load_config(path: str | Path, env=None) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_config(data, env)
