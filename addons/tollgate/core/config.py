"""The gateway configuration: YAML in, a frozen Config out, or a ConfigError naming the key path and the reason."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import yaml

from .answers import DEFAULT_REFUSAL, Moderation, parse_moderation
from .content_security import ContentSecurity, parse_content_security
from .transform import Transform, parse_transform
from .cache import CacheConfig, parse_cache
from .guard import parse_guard
from .limits import LimitsConfig, parse_limits
from .prices import Priced, PriceTable, parse_prices
from .prompts import Prompts, parse_prompts
from .routing import BreakerPolicy, ModelRule, RetryPolicy, parse_breaker, parse_models, parse_retry
from .credentials import KeySources, key_digest, parse_auth
from .forwarded import parse_trusted
from .knowledge import Embeddings, KnowledgeBase, parse_embeddings, parse_knowledge
from .ledger_pg import is_postgres
from .url_prompt import UrlPrompt, parse_url_prompt
from .providers import KNOWN_AI_HOSTS_FILE, Provider, load_known_hosts, normalize_host, parse_provider
from .schema import (ConfigError, boolean, choice, date_time, list_of, mapping, parse_duration,
                     parse_size, patterns, read_yaml, redacted, string, unique)

__all__ = ["Config", "ConfigError", "Consumer", "Group", "ModelRule", "Provider", "key_digest", "load_config",
           "parse_config", "parse_duration", "parse_size", "reload_problem"]


@dataclass(frozen=True)
class Group:
    name: str
    models: tuple[str, ...] | None = None      # glob patterns ("gpt-4o*"); None: any
    providers: tuple[str, ...] | None = None   # provider names; None: any
    endpoints: tuple[str, ...] | None = None   # path globs ("/v1/files*"); None: any


@dataclass(frozen=True)
class Consumer:
    name: str
    key_sha256: str
    group: str = ""
    models: tuple[str, ...] | None = None      # narrows the group's
    providers: tuple[str, ...] | None = None
    endpoints: tuple[str, ...] | None = None
    expires: datetime | None = None
    disabled: bool = False


@dataclass(frozen=True)
class Config:
    providers: dict[str, Provider]
    rules: tuple[ModelRule, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    url_prompt: UrlPrompt | None = None
    embeddings: Embeddings | None = None
    vectors: str = "vectors.db"   # the vector index: a file (embedded) or postgresql://… (pgvector)
    knowledge: tuple[KnowledgeBase, ...] = ()
    content_security: ContentSecurity | None = None
    transform: tuple[Transform, ...] = ()

    @property
    def refusal(self) -> str:
        """What a withheld answer says ({rule} names the rule): moderation.refusal, or the default."""
        return self.moderation.refusal if self.moderation else DEFAULT_REFUSAL
    key_sources: KeySources = field(default_factory=KeySources)
    consumers: tuple[Consumer, ...] = ()
    groups: dict[str, Group] = field(default_factory=dict)
    auth_required: bool = False   # `auth: required`, or the file declares consumers (and does not say `auth: none`)
    auth: str = ""                # what the file says: required | none | "" (not said)
    unknown_keys: str = "reject"  # reject | passthrough (forward the client's own key, recorded as byok)
    unapproved_providers: str = "block"  # block | record: known AI hosts that are not configured providers
    send_user_id: bool = False    # send a hashed consumer id upstream as OpenAI's `user`
    consumers_file: str = ""      # resolved path of the separate consumers file, if any
    known_ai_hosts: tuple[str, ...] = ()  # entries of config/known-ai-hosts.txt (see core/providers.py)
    consumers_by_digest: dict[str, Consumer] = field(default_factory=dict, compare=False, repr=False)
    guard_rules: tuple = ()       # core.guard.Rule, compiled
    guard_headers: tuple[str, ...] = ()  # request headers scanned besides the prompt
    guard_url: bool = True        # scan the URL (path and query) too
    moderation: Moderation | None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    prompts: Prompts = field(default_factory=Prompts)
    store: str = "memory"         # memory | redis://host:port/db: shared state of the cache (and limits)
    prices: PriceTable = field(default_factory=PriceTable)
    cache: CacheConfig | None = None
    ledger_path: str = "usage.db"
    ledger_jsonl: str = ""        # optional JSON-lines mirror of every row (append-only; rotate it externally)
    ledger_retention_s: float | None = None  # rows older than this are deleted (None: kept forever)
    ledger_url: str = ""          # postgresql://…: the shared ledger every replica ships its rows to
    ledger_local_retention_s: float = 7 * 86400  # with ledger_url: how long shipped rows stay in the local file
    max_request_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 64      # deeper request JSON is refused (400)
    upstream_timeout_s: float = 600.0
    upstream_idle_timeout_s: float = 300.0  # silence from the provider in the middle of an answer
    trusted_proxies: tuple = ()   # balancer networks whose X-Forwarded-For names the client (core/forwarded.py)
    ledger_on_error: str = "open"  # open: serve and alarm while rows cannot be written | closed: refuse (503)
    realtime: str = "allow"       # allow | deny: WebSocket LLM sessions (/v1/realtime)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def priced(self, provider: str, model: str, prompt: int, output: int, cached: int = 0, written: int = 0,
               at: float | None = None) -> Priced:
        """What a call to `model` at `provider` costs (prompt counts every input token)."""
        known = self.providers.get(provider)
        return self.prices.priced(model, prompt, output, cached, written, known.spec.type if known else "", at)

    def provider_for_host(self, host: str, port: int) -> Provider | None:
        """The provider this host serves (remembered: every call asks for each name it carries; hosts are the
        client's choice, so no more than HOSTS_KEPT are)."""
        known = self._hosts
        if (found := known.get((host, port), _UNKNOWN)) is _UNKNOWN:
            found = self._provider_for_host(host, port)
            if len(known) >= HOSTS_KEPT:
                known.clear()
            known[(host, port)] = found
        return found

    @functools.cached_property
    def _hosts(self) -> dict:
        return {}

    def _provider_for_host(self, host: str, port: int) -> Provider | None:
        hostport = f"{normalize_host(host)}:{port}"
        for provider in self.providers.values():
            for pattern in provider.hosts:
                if pattern == hostport or (
                    pattern.startswith("*.") and hostport.endswith(pattern[1:]) and hostport != pattern[2:]
                ):
                    return provider
        return None


_UNKNOWN = object()
HOSTS_KEPT = 1024


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


def _provider_names(node: dict, path: str, providers: dict) -> tuple[str, ...] | None:
    names = patterns(node, "providers", path)
    for i, name in enumerate(names or ()):
        if name not in providers:
            raise ConfigError(f"{path}.providers[{i}]: no provider named {name!r} (have: {', '.join(providers)})")
    return names


STORE_SCHEMES = ("redis", "rediss", "unix", "redis-cluster", "rediss-cluster")


def _store_url(value) -> str:
    """`memory`, a Redis URL, or {url, username, password} (managed Redis with ACL users, as the seeds write it)."""
    if isinstance(value, dict):
        node = mapping(value, "store", {"url", "username", "password"})
        url = string(node.get("url"), "store.url")
        user = quote(string(node.get("username"), "store.username", required=False), safe="")
        password = quote(string(node.get("password"), "store.password", required=False), safe="")
        if user or password:
            scheme, rest = url.split("://", 1) if "://" in url else ("", url)
            url = f"{scheme}://{user}{':' + password if password else ''}@{rest.rpartition('@')[2]}"
    else:
        url = string(value, "store")
    if url != "memory" and url.split("://", 1)[0] not in STORE_SCHEMES:
        raise ConfigError(f"store: expected memory, redis://host:port/db, rediss://… or redis-cluster://h1:p1,h2:p2, "
                          f"got {redacted(url)!r}")
    return url


def _known_hosts(value, base_dir) -> tuple[str, ...]:
    if value is None:
        return load_known_hosts(KNOWN_AI_HOSTS_FILE)
    path = Path(base_dir or ".") / string(value, "known_ai_hosts")
    if not path.is_file():
        raise ConfigError(f"known_ai_hosts: no such file {path}")
    return load_known_hosts(path)


def parse_config(data, env=None, base_dir: str | Path | None = None) -> Config:
    """Validates a parsed YAML document. Raises ConfigError('key.path: reason')."""
    env = os.environ if env is None else env
    unset: list[str] = []
    data = _expand(data if data is not None else {}, "", env, unset)
    top = mapping(data, "config", {"providers", "models", "consumers", "consumers_file", "groups", "ledger",
                                   "gateway", "unknown_keys", "unapproved_providers", "send_user_id",
                                   "known_ai_hosts", "store", "cache", "prices", "guard", "moderation",
                                   "prompts", "limits", "budgets", "auth", "realtime", "retry", "breaker",
                                   "url_prompt", "embeddings", "vectors", "knowledge",
                                   "content_security", "transform"})
    warnings = unset

    providers: dict[str, Provider] = {}
    for name, node in mapping(top.get("providers"), "providers", set(map(str, top.get("providers") or {}))).items():
        providers[str(name)] = parse_provider(str(name), node, f"providers.{name}", warnings)
    if not providers:
        raise ConfigError("providers: at least one provider is required")
    seen_hosts: dict[str, str] = {}
    for provider in providers.values():
        for host in provider.hosts:
            if host in seen_hosts:
                raise ConfigError(f"providers.{provider.name}.hosts: {host} is already served by {seen_hosts[host]}")
            seen_hosts[host] = provider.name

    groups = {}
    for name, node in mapping(top.get("groups"), "groups", set(map(str, top.get("groups") or {}))).items():
        path = f"groups.{name}"
        node = mapping(node, path, {"models", "providers", "endpoints"})
        groups[str(name)] = Group(str(name), patterns(node, "models", path),
                                  _provider_names(node, path, providers), patterns(node, "endpoints", path))

    consumer_nodes = [(f"consumers[{i}]", n) for i, n in enumerate(list_of(top.get("consumers"), "consumers"))]
    consumers_file = ""
    if top.get("consumers_file"):
        consumers_file = str(Path(base_dir or ".") / string(top["consumers_file"], "consumers_file"))
        extra = _expand(read_yaml(consumers_file), "", env, unset)
        extra = mapping(extra, consumers_file, {"consumers"})
        consumer_nodes += [(f"{consumers_file}: consumers[{i}]", n)
                           for i, n in enumerate(list_of(extra.get("consumers"), f"{consumers_file}: consumers"))]
    consumers = []
    names: set[str] = set()
    digests: dict[str, str] = {}
    for path, node in consumer_nodes:
        node = mapping(node, path, {"name", "key", "key_sha256", "group", "models", "providers", "endpoints", "expires",
                                    "disabled", "created", "rotated", "revoked"})
        name = unique(string(node.get("name"), f"{path}.name"), names, f"{path}.name", "consumer")
        group = string(node.get("group"), f"{path}.group", required=False)
        if group and group not in groups:
            raise ConfigError(f"{path}.group: no group named {group!r} (have: {', '.join(groups) or 'none'})")
        if node.get("key_sha256"):
            digest = string(node["key_sha256"], f"{path}.key_sha256").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(f"{path}.key_sha256: expected 64 hex digits")
        else:
            key = string(node.get("key"), f"{path}.key", required=False)
            if not key:
                warnings.append(f"{path}.key: consumer {name!r} has no key and cannot authenticate")
                continue
            digest = key_digest(key)
        if digest in digests:
            raise ConfigError(f"{path}: consumer {name!r} has the same key as {digests[digest]!r}")
        digests[digest] = name
        disabled = node.get("disabled", False)
        if not isinstance(disabled, bool):
            raise ConfigError(f"{path}.disabled: expected true or false, got {disabled!r}")
        consumers.append(Consumer(name, digest, group, models=patterns(node, "models", path),
                                  providers=_provider_names(node, path, providers),
                                  endpoints=patterns(node, "endpoints", path),
                                  expires=date_time(node.get("expires"), f"{path}.expires"), disabled=disabled))
    ledger = mapping(top.get("ledger"), "ledger", {"path", "jsonl", "retention", "on_error", "url",
                                                   "local_retention"})
    ledger_url = string(ledger.get("url"), "ledger.url", required=False)
    if ledger_url and not is_postgres(ledger_url):
        raise ConfigError(f"ledger.url: expected postgresql://user:password@host/database, got {redacted(ledger_url)!r}")
    gateway = mapping(top.get("gateway"), "gateway", {"max_request_bytes", "upstream_timeout", "max_json_depth",
                                                      "upstream_idle_timeout", "trusted_proxies"})
    auth, key_sources = parse_auth(top.get("auth"))
    max_depth = gateway.get("max_json_depth", 64)
    if not isinstance(max_depth, int) or isinstance(max_depth, bool) or not 2 <= max_depth <= 512:
        raise ConfigError(f"gateway.max_json_depth: expected a whole number from 2 to 512, got {max_depth!r}")
    config = Config(
        providers=providers,
        rules=parse_models(top.get("models"), providers),
        retry=parse_retry(top.get("retry")),
        breaker=parse_breaker(top.get("breaker")),
        url_prompt=parse_url_prompt(top.get("url_prompt")),
        embeddings=parse_embeddings(top.get("embeddings"), providers),
        vectors=string(top.get("vectors", "vectors.db"), "vectors"),
        knowledge=parse_knowledge(top.get("knowledge"), groups, names),
        content_security=parse_content_security(top.get("content_security"), providers, groups, names, base_dir),
        transform=parse_transform(top.get("transform"), providers),
        key_sources=key_sources,
        consumers=tuple(consumers),
        consumers_by_digest={c.key_sha256: c for c in consumers},
        groups=groups,
        auth_required=auth == "required" or (not auth and ("consumers" in top or bool(consumers_file))),
        auth=auth,
        unknown_keys=choice(top.get("unknown_keys", "reject"), "unknown_keys", ("reject", "passthrough")),
        unapproved_providers=choice(top.get("unapproved_providers", "block"), "unapproved_providers",
                                    ("block", "record")),
        send_user_id=boolean(top.get("send_user_id", False), "send_user_id"),
        consumers_file=consumers_file,
        known_ai_hosts=_known_hosts(top.get("known_ai_hosts"), base_dir),
        **parse_guard(top.get("guard"), groups, names),
        moderation=parse_moderation(top.get("moderation"), groups, names),
        prompts=parse_prompts(top.get("prompts"), groups, names),
        limits=parse_limits(top.get("limits"), top.get("budgets"), groups, names),
        store=_store_url(top.get("store", "memory")),
        cache=parse_cache(top.get("cache")),
        prices=parse_prices(top.get("prices"), base_dir),
        ledger_path=string(ledger.get("path", "usage.db"), "ledger.path"),
        ledger_jsonl=string(ledger.get("jsonl"), "ledger.jsonl", required=False),
        ledger_retention_s=parse_duration(ledger["retention"], "ledger.retention") if ledger.get("retention") else None,
        ledger_url=ledger_url,
        ledger_local_retention_s=parse_duration(ledger.get("local_retention", "7d"), "ledger.local_retention"),
        max_request_bytes=parse_size(gateway.get("max_request_bytes", 16 * 2**20), "gateway.max_request_bytes"),
        upstream_timeout_s=parse_duration(gateway.get("upstream_timeout", 600), "gateway.upstream_timeout"),
        upstream_idle_timeout_s=parse_duration(gateway.get("upstream_idle_timeout", 300),
                                               "gateway.upstream_idle_timeout"),
        max_json_depth=max_depth,
        trusted_proxies=parse_trusted(gateway.get("trusted_proxies")),
        ledger_on_error=choice(ledger.get("on_error", "open"), "ledger.on_error", ("open", "closed")),
        realtime=choice(top.get("realtime", "allow"), "realtime", ("allow", "deny")),
        warnings=tuple(dict.fromkeys(warnings)),
    )
    if (config.knowledge or (config.cache and config.cache.semantic)) and config.embeddings is None:
        raise ConfigError("embeddings: knowledge bases and the semantic cache need `embeddings: {provider, model}`")
    return config


def load_config(path: str | Path, env=None) -> Config:
    """Reads the main file (and the consumers file it names; relative paths are relative to the main file).
    Errors in the main file say where: `file:line: key.path: reason`."""
    data = read_yaml(path)
    try:
        return parse_config(data, env, base_dir=Path(path).parent)
    except ConfigError as e:
        raise ConfigError(_located(Path(path), str(e))) from None


def _located(path: Path, message: str) -> str:
    """Prefixes a `key.path: reason` message with the file and line of the deepest key of that path it finds."""
    key_path = message.split(": ", 1)[0]
    try:
        lines = _key_lines(yaml.compose(path.read_text()))
    except (OSError, yaml.YAMLError):
        return message
    while key_path and key_path not in lines:
        key_path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", key_path) if re.search(r"[.\[]", key_path) else ""
    return f"{path}:{lines[key_path]}: {message}" if key_path else f"{path}: {message}"


def _key_lines(node, path: str = "", lines: dict | None = None) -> dict[str, int]:
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            where = f"{path}.{key.value}" if path else str(key.value)
            lines[where] = key.start_mark.line + 1
            _key_lines(value, where, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            lines[f"{path}[{i}]"] = value.start_mark.line + 1
            _key_lines(value, f"{path}[{i}]", lines)
    return lines


def reload_problem(old: Config | None, new: Config) -> str:
    """Why a reloaded configuration must not replace the running one, or ''. A file that lost its consumers (a
    partial write, a bad edit) would open the gate to everyone: only an explicit `auth: none` may do that."""
    if old is not None and old.auth_required and not new.auth_required and new.auth != "none":
        return "it would turn authentication off (no consumers configured); write `auth: none` if that is meant"
    return ""
