"""The gateway configuration: YAML in, a frozen Config out, or a ConfigError naming the key path and the reason."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .prices import Price, Priced, PriceTable
from .providers import SPECS, ProviderSpec, normalize_host, split_host


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
    keyless: bool = False         # `auth: none`: a self-hosted server that takes no key; others need a key

    @property
    def configured(self) -> bool:
        """Can calls go out? A provider without an org key answers 503 instead of forwarding without one."""
        return bool(self.keys) or self.keyless


@dataclass(frozen=True)
class ModelRule:
    match: str                    # exact name, "prefix*" or "*"
    provider: str
    model: str = ""               # empty: keep the requested model


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
class CacheConfig:
    ttl_s: float = 3600.0
    scope: str = "consumer"           # consumer | group | global
    max_entry_bytes: int = 2**20
    only_deterministic: bool = False  # store only answers to requests that ask for temperature 0
    memory_bytes: int = 64 * 2**20    # bound of the in-memory store


@dataclass(frozen=True)
class Moderation:
    rules: tuple                      # core.guard.Rule, compiled (terms are their keywords)
    refusal: str                      # what the client gets instead; {rule} names the rule
    window: int = 64                  # characters of a stream held back while regexes/detectors may still match


@dataclass(frozen=True)
class Prompts:
    templates: dict = field(default_factory=dict)   # name -> core.prompts.Template
    decorators: tuple = ()                           # core.prompts.Decorator


@dataclass(frozen=True)
class LimitsConfig:
    limits: tuple = ()                # core.limits.Limit: rate limits, then budgets
    on_store_error: str = "open"      # open: serve uncounted while the store is down | closed: 503
    default_max_tokens: int = 4096    # reserved for output when a request gives no max_tokens
    cache_hits: str = "requests"      # what a cache hit counts against: requests | all | none


@dataclass(frozen=True)
class Config:
    providers: dict[str, Provider]
    rules: tuple[ModelRule, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    groups: dict[str, Group] = field(default_factory=dict)
    auth_required: bool = False   # `auth: required`, or the file declares consumers (and does not say `auth: none`)
    auth: str = ""                # what the file says: required | none | "" (not said)
    unknown_keys: str = "reject"  # reject | passthrough (forward the client's own key, recorded as byok)
    unapproved_providers: str = "block"  # block | record: known AI hosts that are not configured providers
    send_user_id: bool = False    # send a hashed consumer id upstream as OpenAI's `user`
    consumers_file: str = ""      # resolved path of the separate consumers file, if any
    known_ai_hosts: tuple[str, ...] = ()  # entries of config/known-ai-hosts.txt (see core/access.py)
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
    max_request_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 64      # deeper request JSON is refused (400)
    upstream_timeout_s: float = 600.0
    upstream_idle_timeout_s: float = 300.0  # silence from the provider in the middle of an answer
    ledger_on_error: str = "open"  # open: serve and alarm while rows cannot be written | closed: refuse (503)
    realtime: str = "allow"       # allow | deny: WebSocket LLM sessions (/v1/realtime)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def priced(self, provider: str, model: str, prompt: int, output: int, cached: int = 0, written: int = 0,
               at: float | None = None) -> Priced:
        """What a call to `model` at `provider` costs (prompt counts every input token)."""
        known = self.providers.get(provider)
        return self.prices.priced(model, prompt, output, cached, written, known.spec.type if known else "", at)

    def provider_for_host(self, host: str, port: int) -> Provider | None:
        hostport = f"{normalize_host(host)}:{port}"
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
        close = difflib.get_close_matches(unknown[0], allowed, 1, 0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{path}.{unknown[0]}: unknown key ({hint}expected one of: {', '.join(sorted(allowed))})")
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
    node = _mapping(node, path, {"type", "keys", "hosts", "upstream", "base_url", "api_version", "auth"})
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
    keyless = _choice(node.get("auth", "key"), f"{path}.auth", ("key", "none")) == "none"
    if keyless and keys:
        raise ConfigError(f"{path}.auth: 'none' means the provider takes no key, but keys are configured")
    if not keys and not keyless:
        warnings.append(f"{path}.keys: no org key configured; calls to {name} are refused with 503 "
                        f"provider_not_configured (a self-hosted server without keys says auth: none)")
    return Provider(name, spec, normalized, tuple(keys), base_url.rstrip("/"), upstream.rstrip("/"), api_version,
                    keyless)


def _patterns(node: dict, key: str, path: str) -> tuple[str, ...] | None:
    if node.get(key) is None:
        return None
    return tuple(_str(p, f"{path}.{key}[{i}]") for i, p in enumerate(_list(node[key], f"{path}.{key}")))


def _provider_names(node: dict, path: str, providers: dict) -> tuple[str, ...] | None:
    names = _patterns(node, "providers", path)
    for i, name in enumerate(names or ()):
        if name not in providers:
            raise ConfigError(f"{path}.providers[{i}]: no provider named {name!r} (have: {', '.join(providers)})")
    return names


def _when(value, path: str) -> datetime | None:
    """A date (expiring at 00:00 UTC that day) or an ISO date-time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        return _when(datetime.fromisoformat(str(value)), path)
    except ValueError:
        raise ConfigError(f"{path}: expected a date such as 2027-01-01, got {value!r}") from None


def _bool(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    return value


def _choice(value, path: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{path}: expected one of {', '.join(options)}, got {value!r}")
    return value


def _read_yaml(path: str | Path):
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


DEFAULT_PRICES = Path(__file__).resolve().parents[3] / "config" / "prices.yaml"


def _price(node, path: str) -> Price:
    names = ("input", "output", "cached_input", "cache_write")
    node = _mapping(node, path, set(names))
    values = {}
    for name in names:
        value = node.get(name, node.get("input") if name == "cached_input" else -1 if name == "cache_write" else None)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (value < 0 and name != "cache_write"):
            raise ConfigError(f"{path}.{name}: expected a price in USD per million tokens, got {value!r}")
        values[name] = float(value)
    return Price(**values)


def _prices(value, base_dir) -> PriceTable:
    """The local price file: `prices: PATH` (relative to the config file), default config/prices.yaml."""
    path = Path(base_dir or ".") / _str(value, "prices") if value is not None else DEFAULT_PRICES
    if value is None and not path.is_file():
        return PriceTable()
    data = _mapping(_read_yaml(path), str(path), {"default", "models", "catalog"})
    models = _mapping(data.get("models"), f"{path}: models", set(map(str, data.get("models") or {})))
    catalog = data.get("catalog", True)
    if not isinstance(catalog, bool):
        raise ConfigError(f"{path}: catalog: expected true or false, got {catalog!r}")
    return PriceTable(
        default=_price(data["default"], f"{path}: default") if data.get("default") else PriceTable().default,
        models={str(m): _price(node, f"{path}: models.{m}") for m, node in models.items()},
        catalog=catalog,
    )


def _known_names(node: dict, path: str, groups: dict, consumer_names: set[str]) -> None:
    """`groups` and `consumers` lists of a rule must name groups and consumers that exist."""
    for key, known in (("groups", groups), ("consumers", consumer_names)):
        for j, value in enumerate(_patterns(node, key, path) or ()):
            if value not in known:
                raise ConfigError(f"{path}.{key}[{j}]: no {key[:-1]} named {value!r}")


def _with_amounts(node, keys: set[str]) -> set[str]:
    """The keys a limit rule may have: `keys` and amounts such as token_per_minute."""
    return keys | {k for k in node if _AMOUNT_KEY.match(str(k))} if isinstance(node, dict) else keys


def _text_rules(nodes, path: str, groups: dict, consumer_names: set[str], words: str, actions: tuple) -> tuple:
    """Prompt rules (guard) and answer rules (moderation) share one shape; `words` names their keyword list."""
    from .guard import Rule, compile_rule

    rules, seen = [], set()
    for i, rule in enumerate(_list(nodes, path)):
        where = f"{path}[{i}]"
        rule = _mapping(rule, where, {"name", "detectors", words, "whole_word", "case_sensitive", "regex", "groups",
                                      "consumers"} | ({"action", "status"} if actions else set()))
        name = _str(rule.get("name"), f"{where}.name")
        if name in seen:
            raise ConfigError(f"{where}.name: rule {name!r} is defined twice")
        seen.add(name)
        status = rule.get("status", 403)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"{where}.status: expected an HTTP error status (400-599), got {status!r}")
        _known_names(rule, where, groups, consumer_names)
        built = Rule(name=name, action=_choice(rule.get("action", "block"), f"{where}.action", actions or ("block",)),
                     status=status, detectors=_patterns(rule, "detectors", where) or (),
                     keywords=_patterns(rule, words, where) or (),
                     whole_word=_bool(rule.get("whole_word", False), f"{where}.whole_word"),
                     case_sensitive=_bool(rule.get("case_sensitive", False), f"{where}.case_sensitive"),
                     regexes=_patterns(rule, "regex", where) or (), groups=_patterns(rule, "groups", where) or (),
                     consumers=_patterns(rule, "consumers", where) or ())
        if not (built.detectors or built.keywords or built.regexes):
            raise ConfigError(f"{where}: give detectors, {words} or regex")
        try:
            rules.append(compile_rule(built))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return tuple(rules)


def _guard(node, groups: dict, consumer_names: set[str]) -> dict:
    from .guard import ACTIONS

    node = _mapping(node, "guard", {"rules", "headers", "url"})
    headers = tuple(h.lower() for h in (_patterns(node, "headers", "guard") or ()))
    return {"guard_rules": _text_rules(node.get("rules"), "guard.rules", groups, consumer_names, "keywords", ACTIONS),
            "guard_headers": headers, "guard_url": _bool(node.get("url", True), "guard.url")}


def _moderation(node, groups: dict, consumer_names: set[str]) -> Moderation | None:
    from .answers import DEFAULT_REFUSAL

    if node is None:
        return None
    node = _mapping(node, "moderation", {"rules", "refusal", "window"})
    refusal = _str(node.get("refusal", DEFAULT_REFUSAL), "moderation.refusal")
    try:
        refusal.format(rule="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError("moderation.refusal: only {rule} may appear in braces") from None
    window = node.get("window", 64)
    if not isinstance(window, int) or not 0 <= window <= 4096:
        raise ConfigError(f"moderation.window: expected characters between 0 and 4096, got {window!r}")
    rules = _text_rules(node.get("rules"), "moderation.rules", groups, consumer_names, "terms", ())
    return Moderation(rules, refusal, window) if rules else None


def _prompts(node, groups: dict, consumer_names: set[str]) -> Prompts:
    from .prompts import Decorator, Template, placeholders

    node = _mapping(node, "prompts", {"templates", "decorators"})
    templates = {}
    for i, item in enumerate(_list(node.get("templates"), "prompts.templates")):
        path = f"prompts.templates[{i}]"
        item = _mapping(item, path, {"name", "template"})
        name = _str(item.get("name"), f"{path}.name")
        if name in templates:
            raise ConfigError(f"{path}.name: template {name!r} is defined twice")
        body = _mapping(item.get("template"), f"{path}.template", set(map(str, item.get("template") or {})))
        if not body:
            raise ConfigError(f"{path}.template: expected the request body to expand into")
        templates[name] = Template(name, body, placeholders(body))
    decorators = []
    for i, item in enumerate(_list(node.get("decorators"), "prompts.decorators")):
        path = f"prompts.decorators[{i}]"
        item = _mapping(item, path, {"name", "models", "groups", "consumers", "prepend", "append"})
        _known_names(item, path, groups, consumer_names)
        messages = {}
        for key in ("prepend", "append"):
            messages[key] = []
            for j, message in enumerate(_list(item.get(key), f"{path}.{key}")):
                message = _mapping(message, f"{path}.{key}[{j}]", {"role", "content"})
                role = _choice(message.get("role", "system"), f"{path}.{key}[{j}].role", ("system", "user", "assistant"))
                messages[key].append({"role": role, "content": _str(message.get("content"), f"{path}.{key}[{j}].content")})
        if not messages["prepend"] and not messages["append"]:
            raise ConfigError(f"{path}: give prepend or append messages")
        decorators.append(Decorator(_str(item.get("name", f"decorator-{i}"), f"{path}.name"),
                                    tuple(messages["prepend"]), tuple(messages["append"]),
                                    _patterns(item, "models", path), _patterns(item, "groups", path) or (),
                                    _patterns(item, "consumers", path) or ()))
    return Prompts(templates, tuple(decorators))


_AMOUNT_KEY = re.compile(r"^(requests?|query|queries|tokens?)_per_(second|minute|hour|day)$")
_WINDOW_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_PER_ALIASES = {"limit_by_per_ip": "ip", "limit_by_per_consumer": "consumer", "limit_by_per_group": "group",
                "limit_by_per_model": "model"}


def _count(value, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{path}: expected a positive whole number, got {value!r}")
    return value


def _amounts(node: dict, path: str) -> list[tuple[str, int, float]]:
    """(kind, amount, window) pairs: `requests`/`tokens` with `window`, and keys like token_per_minute."""
    found = []
    window = parse_duration(node["window"], f"{path}.window") if "window" in node else 60.0
    if window < 1:
        raise ConfigError(f"{path}.window: at least 1s, got {node['window']!r}")
    for kind in ("requests", "tokens"):
        if kind in node:
            found.append((kind, _count(node[kind], f"{path}.{kind}"), window))
    for key, value in node.items():
        if m := _AMOUNT_KEY.match(str(key)):
            kind = "tokens" if m[1].startswith("token") else "requests"
            found.append((kind, _count(value, f"{path}.{key}"), float(_WINDOW_S[m[2]])))
    return found


def _subset(node: dict, path: str, groups: dict, consumer_names: set[str]) -> dict:
    import ipaddress

    _known_names(node, path, groups, consumer_names)
    networks = []
    for j, cidr in enumerate(_patterns(node, "ips", path) or ()):
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(f"{path}.ips[{j}]: not an IP address or CIDR network: {cidr!r}") from None
    return {"models": _patterns(node, "models", path), "consumers": _patterns(node, "consumers", path) or (),
            "groups": _patterns(node, "groups", path) or (), "networks": tuple(networks)}


def _per(node: dict, path: str) -> str:
    pers = [v for k, v in _PER_ALIASES.items() if k in node and k != "limit_by_per_ip"]
    if "limit_by_per_ip" in node:  # Higress: from-remote-addr, or from-header-NAME (the client IP a balancer adds)
        source = _str(node["limit_by_per_ip"], f"{path}.limit_by_per_ip").lower()
        if source == "from-remote-addr":
            pers.append("ip")
        elif m := re.fullmatch(r"from-header-([a-z0-9-]+)", source):
            pers.append("ip-header:" + m[1])
        else:
            raise ConfigError(f"{path}.limit_by_per_ip: expected from-remote-addr or from-header-NAME (e.g. "
                              f"from-header-x-real-ip), got {node['limit_by_per_ip']!r}")
    if "limit_by_per_header" in node:
        pers.append("header:" + _str(node["limit_by_per_header"], f"{path}.limit_by_per_header").lower())
    if "per" in node:
        per = _str(node["per"], f"{path}.per").lower()
        if per not in ("global", "consumer", "group", "ip", "model") and not re.fullmatch(r"header:[a-z0-9-]+", per):
            raise ConfigError(f"{path}.per: expected global, consumer, group, ip, model or header:NAME, got {per!r}")
        pers.append(per)
    if len(pers) > 1:
        raise ConfigError(f"{path}: give one of per / limit_by_per_*")
    return pers[0] if pers else "global"


def _limits(node, budgets, groups: dict, consumer_names: set[str]) -> LimitsConfig:
    import ipaddress

    from .limits import Limit

    node = _mapping(node, "limits", {"rules", "on_store_error", "default_max_tokens", "cache_hits"})
    limits, names = [], set()
    base_keys = {f"{kind}_per_{unit}" for kind in ("requests", "tokens") for unit in _WINDOW_S} | {
                 "name", "per", "limit_by_per_ip", "limit_by_per_consumer", "limit_by_per_group",
                 "limit_by_per_model", "limit_by_per_header", "limit_keys", "models", "consumers", "groups", "ips",
                 "requests", "tokens", "window", "rejected_code", "rejected_msg"}
    for i, rule in enumerate(_list(node.get("rules"), "limits.rules")):
        path = f"limits.rules[{i}]"
        rule = _mapping(rule, path, _with_amounts(rule, base_keys))
        name = _str(rule.get("name"), f"{path}.name")
        if name in names:
            raise ConfigError(f"{path}.name: rule {name!r} is defined twice")
        names.add(name)
        per = _per(rule, path)
        status = rule.get("rejected_code", 429)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"{path}.rejected_code: expected an HTTP error status (400-599), got {status!r}")
        common = dict(rule=name, per=per, status=status, **_subset(rule, path, groups, consumer_names),
                      message=_str(rule.get("rejected_msg"), f"{path}.rejected_msg", required=False))
        # limit_keys (the seed's shape): each entry is a subset of its own (an IP network, or a value of `per`)
        entries = [(path, rule, {})]
        for j, entry in enumerate(_list(rule.get("limit_keys"), f"{path}.limit_keys")):
            where = f"{path}.limit_keys[{j}]"
            entry = _mapping(entry, where, _with_amounts(entry, {"key", "requests", "tokens", "window"}))
            key = _str(entry.get("key"), f"{where}.key")
            if per == "ip" or per.startswith("ip-header:"):
                try:
                    entries.append((where, entry, {"networks": (ipaddress.ip_network(key, strict=False),)}))
                except ValueError:
                    raise ConfigError(f"{where}.key: not an IP address or CIDR network: {key!r}") from None
            else:
                entries.append((where, entry, {"values": (key,)}))
        produced = 0
        for where, source, subset in entries:
            for kind, amount, window in _amounts(source, where):
                limits.append(Limit(kind=kind, amount=amount, window_s=window, index=produced,
                                    **{**common, **subset}))
                produced += 1
        if not produced:
            raise ConfigError(f"{path}: give requests or tokens (with window), or e.g. token_per_minute")
    for i, rule in enumerate(_list(budgets, "budgets")):
        path = f"budgets[{i}]"
        rule = _mapping(rule, path, {"name", "per", "usd_per_day", "usd_per_month", "models", "consumers", "groups",
                                     "rejected_msg"})
        name = _str(rule.get("name"), f"{path}.name")
        if name in names:
            raise ConfigError(f"{path}.name: rule {name!r} is defined twice")
        names.add(name)
        per = _choice(rule.get("per", "consumer"), f"{path}.per", ("consumer", "group", "global"))
        periods = [p for p in ("day", "month") if f"usd_per_{p}" in rule]
        if not periods:
            raise ConfigError(f"{path}: give usd_per_day or usd_per_month")
        for index, period in enumerate(periods):
            usd = rule[f"usd_per_{period}"]
            if not isinstance(usd, (int, float)) or isinstance(usd, bool) or usd <= 0:
                raise ConfigError(f"{path}.usd_per_{period}: expected a positive amount of dollars, got {usd!r}")
            limits.append(Limit(rule=name, kind="usd", amount=round(usd * 1e6), period=period, per=per, index=index,
                                message=_str(rule.get("rejected_msg"), f"{path}.rejected_msg", required=False),
                                **_subset(rule, path, groups, consumer_names)))
    default_max = node.get("default_max_tokens", 4096)
    return LimitsConfig(
        limits=tuple(limits),
        on_store_error=_choice(node.get("on_store_error", "open"), "limits.on_store_error", ("open", "closed")),
        default_max_tokens=_count(default_max, "limits.default_max_tokens"),
        cache_hits=_choice(node.get("cache_hits", "requests"), "limits.cache_hits", ("requests", "all", "none")),
    )


def _store_url(value) -> str:
    url = _str(value, "store")
    if url != "memory" and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"store: expected memory or redis://host:port/db, got {url!r}")
    return url


def _cache(node) -> CacheConfig | None:
    if node is None:
        return None
    node = _mapping(node, "cache", {"enabled", "ttl", "scope", "max_entry_bytes", "only_deterministic",
                                    "memory_bytes"})
    if not _bool(node.get("enabled", True), "cache.enabled"):
        return None
    default = CacheConfig()
    return CacheConfig(
        ttl_s=parse_duration(node.get("ttl", default.ttl_s), "cache.ttl"),
        scope=_choice(node.get("scope", default.scope), "cache.scope", ("consumer", "group", "global")),
        max_entry_bytes=parse_size(node.get("max_entry_bytes", default.max_entry_bytes), "cache.max_entry_bytes"),
        only_deterministic=_bool(node.get("only_deterministic", default.only_deterministic),
                                 "cache.only_deterministic"),
        memory_bytes=parse_size(node.get("memory_bytes", default.memory_bytes), "cache.memory_bytes"),
    )


def _known_hosts(value, base_dir) -> tuple[str, ...]:
    from .access import KNOWN_AI_HOSTS_FILE, load_known_hosts

    if value is None:
        return load_known_hosts(KNOWN_AI_HOSTS_FILE)
    path = Path(base_dir or ".") / _str(value, "known_ai_hosts")
    if not path.is_file():
        raise ConfigError(f"known_ai_hosts: no such file {path}")
    return load_known_hosts(path)


def parse_config(data, env=None, base_dir: str | Path | None = None) -> Config:
    """Validates a parsed YAML document. Raises ConfigError('key.path: reason')."""
    env = os.environ if env is None else env
    unset: list[str] = []
    data = _expand(data if data is not None else {}, "", env, unset)
    top = _mapping(data, "config", {"providers", "models", "consumers", "consumers_file", "groups", "ledger",
                                    "gateway", "unknown_keys", "unapproved_providers", "send_user_id",
                                    "known_ai_hosts", "store", "cache", "prices", "guard", "moderation",
                                    "prompts", "limits", "budgets", "auth", "realtime"})
    warnings = unset

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

    groups = {}
    for name, node in _mapping(top.get("groups"), "groups", set(map(str, top.get("groups") or {}))).items():
        path = f"groups.{name}"
        node = _mapping(node, path, {"models", "providers", "endpoints"})
        groups[str(name)] = Group(str(name), _patterns(node, "models", path),
                                  _provider_names(node, path, providers), _patterns(node, "endpoints", path))

    consumer_nodes = [(f"consumers[{i}]", n) for i, n in enumerate(_list(top.get("consumers"), "consumers"))]
    consumers_file = ""
    if top.get("consumers_file"):
        consumers_file = str(Path(base_dir or ".") / _str(top["consumers_file"], "consumers_file"))
        extra = _expand(_read_yaml(consumers_file), "", env, unset)
        extra = _mapping(extra, consumers_file, {"consumers"})
        consumer_nodes += [(f"{consumers_file}: consumers[{i}]", n)
                           for i, n in enumerate(_list(extra.get("consumers"), f"{consumers_file}: consumers"))]
    consumers = []
    names: set[str] = set()
    digests: dict[str, str] = {}
    for path, node in consumer_nodes:
        node = _mapping(node, path, {"name", "key", "key_sha256", "group", "models", "providers", "endpoints", "expires",
                                     "disabled", "created", "rotated", "revoked"})
        name = _str(node.get("name"), f"{path}.name")
        if name in names:
            raise ConfigError(f"{path}.name: consumer {name!r} is defined twice")
        names.add(name)
        group = _str(node.get("group"), f"{path}.group", required=False)
        if group and group not in groups:
            raise ConfigError(f"{path}.group: no group named {group!r} (have: {', '.join(groups) or 'none'})")
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
        if digest in digests:
            raise ConfigError(f"{path}: consumer {name!r} has the same key as {digests[digest]!r}")
        digests[digest] = name
        disabled = node.get("disabled", False)
        if not isinstance(disabled, bool):
            raise ConfigError(f"{path}.disabled: expected true or false, got {disabled!r}")
        consumers.append(Consumer(name, digest, group, models=_patterns(node, "models", path),
                                  providers=_provider_names(node, path, providers),
                                  endpoints=_patterns(node, "endpoints", path),
                                  expires=_when(node.get("expires"), f"{path}.expires"), disabled=disabled))
    ledger = _mapping(top.get("ledger"), "ledger", {"path", "jsonl", "retention", "on_error"})
    gateway = _mapping(top.get("gateway"), "gateway", {"max_request_bytes", "upstream_timeout", "max_json_depth",
                                                       "upstream_idle_timeout"})
    auth = _choice(top["auth"], "auth", ("required", "none")) if "auth" in top else ""
    max_depth = gateway.get("max_json_depth", 64)
    if not isinstance(max_depth, int) or isinstance(max_depth, bool) or not 2 <= max_depth <= 512:
        raise ConfigError(f"gateway.max_json_depth: expected a whole number from 2 to 512, got {max_depth!r}")
    return Config(
        providers=providers,
        rules=tuple(rules),
        consumers=tuple(consumers),
        consumers_by_digest={c.key_sha256: c for c in consumers},
        groups=groups,
        auth_required=auth == "required" or (not auth and ("consumers" in top or bool(consumers_file))),
        auth=auth,
        unknown_keys=_choice(top.get("unknown_keys", "reject"), "unknown_keys", ("reject", "passthrough")),
        unapproved_providers=_choice(top.get("unapproved_providers", "block"), "unapproved_providers",
                                     ("block", "record")),
        send_user_id=_bool(top.get("send_user_id", False), "send_user_id"),
        consumers_file=consumers_file,
        known_ai_hosts=_known_hosts(top.get("known_ai_hosts"), base_dir),
        **_guard(top.get("guard"), groups, names),
        moderation=_moderation(top.get("moderation"), groups, names),
        prompts=_prompts(top.get("prompts"), groups, names),
        limits=_limits(top.get("limits"), top.get("budgets"), groups, names),
        store=_store_url(top.get("store", "memory")),
        cache=_cache(top.get("cache")),
        prices=_prices(top.get("prices"), base_dir),
        ledger_path=_str(ledger.get("path", "usage.db"), "ledger.path"),
        ledger_jsonl=_str(ledger.get("jsonl"), "ledger.jsonl", required=False),
        ledger_retention_s=parse_duration(ledger["retention"], "ledger.retention") if ledger.get("retention") else None,
        max_request_bytes=parse_size(gateway.get("max_request_bytes", 16 * 2**20), "gateway.max_request_bytes"),
        upstream_timeout_s=parse_duration(gateway.get("upstream_timeout", 600), "gateway.upstream_timeout"),
        upstream_idle_timeout_s=parse_duration(gateway.get("upstream_idle_timeout", 300),
                                               "gateway.upstream_idle_timeout"),
        max_json_depth=max_depth,
        ledger_on_error=_choice(ledger.get("on_error", "open"), "ledger.on_error", ("open", "closed")),
        realtime=_choice(top.get("realtime", "allow"), "realtime", ("allow", "deny")),
        warnings=tuple(dict.fromkeys(warnings)),
    )


def load_config(path: str | Path, env=None) -> Config:
    """Reads the main file (and the consumers file it names; relative paths are relative to the main file).
    Errors in the main file say where: `file:line: key.path: reason`."""
    data = _read_yaml(path)
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
