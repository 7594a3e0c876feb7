"""Routing and model mapping: which providers may answer (a pool, in the order they are tried), under which model
name, in which wire format, at which URL. Plain code on plain data: the addons in route.py and fallback.py glue it."""

from __future__ import annotations

import random
from dataclasses import dataclass
import functools
from urllib.parse import urlsplit

from . import wire
from .dialects import ANTHROPIC, GEMINI, azure_path_parts, replace_gemini_model
from .providers import Provider
from .schema import ConfigError, choice, count, list_of, mapping, parse_duration, string

STRATEGIES = ("weighted", "priority", "least_busy")


class RouteError(ValueError):
    """No provider can take the request; the message is safe to show to the client."""


@dataclass(frozen=True)
class Target:
    provider: str
    model: str = ""               # empty: keep the requested model
    weight: int = 1
    priority: int = 1             # tried in ascending order: 2 only after every 1 failed


@dataclass(frozen=True)
class ModelRule:
    match: str                    # exact name, "prefix*" or "*"
    targets: tuple[Target, ...]
    strategy: str = "weighted"

    @property
    def provider(self) -> str:
        return self.targets[0].provider

    @property
    def model(self) -> str:
        return self.targets[0].model


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    on: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    budget: float = 0.2           # retries per call over the last minute
    min_per_minute: int = 3       # retries always allowed, so a quiet gateway still falls back


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 5             # consecutive failures that open a provider's breaker
    cooldown_s: float = 30.0


def parse_models(node, providers: dict[str, Provider]) -> tuple[ModelRule, ...]:
    rules, seen = [], set()
    for i, item in enumerate(list_of(node, "models")):
        path = f"models[{i}]"
        item = mapping(item, path, {"match", "provider", "model", "targets", "strategy"})
        match = string(item.get("match"), f"{path}.match")
        if "*" in match[:-1]:
            raise ConfigError(f"{path}.match: '*' may only end a pattern ('gpt-4*' or '*'), got {match!r}")
        if match in seen:
            raise ConfigError(f"{path}.match: {match!r} is matched by an earlier rule already")
        seen.add(match)
        if ("targets" in item) == ("provider" in item):
            raise ConfigError(f"{path}: name either one provider or a list of targets")
        nodes = list_of(item["targets"], f"{path}.targets") if "targets" in item else \
            [{"provider": item["provider"], "model": item.get("model", "")}]
        if not nodes:
            raise ConfigError(f"{path}.targets: name at least one target")
        if "targets" in item and "model" in item:
            raise ConfigError(f"{path}.model: with targets, each target names its model")
        targets = []
        for j, target in enumerate(nodes):
            tpath = f"{path}.targets[{j}]" if "targets" in item else path
            target = mapping(target, tpath, {"provider", "model", "weight", "priority"})
            provider = string(target.get("provider"), f"{tpath}.provider")
            if provider not in providers:
                raise ConfigError(f"{tpath}.provider: no provider named {provider!r} (have: {', '.join(providers)})")
            targets.append(Target(provider, string(target.get("model"), f"{tpath}.model", required=False),
                                  count(target.get("weight", 1), f"{tpath}.weight", minimum=0),
                                  count(target.get("priority", 1), f"{tpath}.priority", minimum=1)))
        if not any(t.weight for t in targets):
            raise ConfigError(f"{path}.targets: at least one target needs a weight above 0")
        rules.append(ModelRule(match, tuple(targets), choice(item.get("strategy", "weighted"), f"{path}.strategy",
                                                             STRATEGIES)))
    return tuple(rules)


def parse_retry(node) -> RetryPolicy:
    node = mapping(node, "retry", {"max_attempts", "on", "budget", "min_per_minute"})
    on = list_of(node.get("on", sorted(RetryPolicy.on)), "retry.on")
    for i, status in enumerate(on):
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"retry.on[{i}]: expected an HTTP error status (400-599), got {status!r}")
    budget = node.get("budget", 0.2)
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0 <= budget <= 1:
        raise ConfigError(f"retry.budget: expected a share of calls between 0 and 1, got {budget!r}")
    return RetryPolicy(count(node.get("max_attempts", 3), "retry.max_attempts", minimum=1), frozenset(on),
                       float(budget), count(node.get("min_per_minute", 3), "retry.min_per_minute", minimum=0))


def parse_breaker(node) -> BreakerPolicy:
    node = mapping(node, "breaker", {"failures", "cooldown"})
    return BreakerPolicy(count(node.get("failures", 5), "breaker.failures", minimum=1),
                         parse_duration(node.get("cooldown", 30), "breaker.cooldown"))


def match_rule(rules: tuple[ModelRule, ...], model: str, usable) -> ModelRule | None:
    """Exact match first, then the longest 'prefix*', then '*'. Only rules with a usable provider count."""
    candidates = [r for r in rules if any(usable(t.provider) for t in r.targets)]
    for rule in candidates:
        if rule.match == model:
            return rule
    prefixes = [r for r in candidates if r.match.endswith("*") and len(r.match) > 1 and model.startswith(r.match[:-1])]
    if prefixes:
        return max(prefixes, key=lambda r: len(r.match))
    return next((r for r in candidates if r.match == "*"), None)


@dataclass(frozen=True)
class Route:
    provider: Provider
    model: str          # model sent upstream ("" when the request names none)
    rule: str = ""      # the matching rule, for the record
    dialect: str = ""   # the wire format the provider is spoken to in ("" : the client's own)


def upstream_dialect(provider: Provider, dialect: str, endpoint: str) -> str | None:
    """The wire format a call goes to `provider` in: the client's own if it speaks it, else a chat call translated;
    None if neither."""
    if dialect in provider.spec.dialects:
        return dialect
    client_chat = wire.chat_endpoint(dialect)
    if client_chat is None or not endpoint.endswith("/" + client_chat):
        return None
    return next((d for d in provider.spec.dialects if wire.translatable(dialect, d)), None)


def plan(config, dialect: str, endpoint: str, source: Provider | None, model: str, busy=lambda name: 0,
         rng: random.Random | None = None) -> list[Route]:
    """Every route the call may take, in the order they are tried (the first is the answer when all is well).
    source is the provider whose host the client called (None on the reverse listener)."""
    usable = lambda name: upstream_dialect(config.providers[name], dialect, endpoint) is not None  # noqa: E731
    rule = match_rule(config.rules, model, usable) if model else None
    if rule is None:
        if source is not None:
            return [Route(source, model)]
        # Reverse listener without a matching rule: the first configured provider that speaks the dialect.
        for provider in config.providers.values():
            if dialect in provider.spec.dialects:
                return [Route(provider, model)]
        raise RouteError(f"no provider configured for the {dialect} API")
    targets = [t for t in rule.targets if usable(t.provider)]
    ordered = []
    for level in sorted({t.priority for t in targets}):
        ordered += _order([t for t in targets if t.priority == level], rule.strategy, busy, rng or random)
    routes = []
    for t in ordered:
        provider = config.providers[t.provider]
        way = upstream_dialect(provider, dialect, endpoint)
        routes.append(Route(provider, t.model or model, rule.match, "" if way == dialect else way))
    return routes


def _order(targets: list[Target], strategy: str, busy, rng) -> list[Target]:
    if strategy == "priority" or len(targets) < 2:
        return targets
    if strategy == "least_busy":  # fewest calls in flight first; ties keep the file's order
        return sorted(targets, key=lambda t: busy(t.provider))
    # weighted: sampled without replacement, so the fallbacks follow the weights too; weight 0 only as a fallback
    left, out = list(targets), []
    while left:
        total = sum(t.weight for t in left)
        if total == 0:
            return out + left
        pick = rng.random() * total
        for i, t in enumerate(left):
            pick -= t.weight
            if pick < 0:
                out.append(left.pop(i))
                break
        else:
            out.append(left.pop())
    return out


def resolve(config, dialect: str, source: Provider | None, model: str, endpoint: str = "") -> Route:
    """The first route of the plan."""
    return plan(config, dialect, endpoint, source, model)[0]


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    path: str           # path and query


def _endpoint(path: str, source_base: str) -> str:
    """The OpenAI-wire endpoint of a path ('chat/completions'), whatever base it was sent under."""
    if source_base and path.startswith(source_base + "/"):
        return path[len(source_base) + 1:]
    if (parts := azure_path_parts(path)) is not None:
        return parts[1]
    for marker in ("/v1/", "/openai/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.lstrip("/")


@functools.lru_cache(maxsize=256)  # base URLs from the configuration, split on every call otherwise
def _split(url: str):
    return urlsplit(url)


def destination(route: Route, dialect: str, source: Provider | None, path: str, query: str) -> Destination:
    """Where the request goes. The same provider keeps its path; another provider gets its own base path."""
    target = route.provider
    if source is not None and source.name == target.name:
        new_path = path
        if dialect == GEMINI and route.model:
            new_path = replace_gemini_model(path, route.model)
        elif target.spec.deployment_paths and route.model and (parts := azure_path_parts(path)):
            new_path = path.replace(f"/deployments/{parts[0]}/", f"/deployments/{route.model}/", 1)
        base = _split(target.upstream) if target.upstream else None
    else:
        base_path = _split(target.base_url).path.rstrip("/")
        source_base = _split(source.base_url).path.rstrip("/") if source else "/v1"
        if dialect == ANTHROPIC:
            new_path = f"{base_path}/messages" if not path.endswith("count_tokens") else f"{base_path}/messages/count_tokens"
        elif dialect == GEMINI:
            new_path = replace_gemini_model(path, route.model) if route.model else path
        elif target.spec.deployment_paths:
            new_path = f"{base_path}/deployments/{route.model}/{_endpoint(path, source_base)}"
        else:
            new_path = f"{base_path}/{_endpoint(path, source_base)}"
        if target.spec.deployment_paths:
            query = _with_param(query, "api-version", target.api_version)
        # new_path already starts with the base URL's path; an upstream override adds its own prefix.
        base = _split(target.upstream) if target.upstream else _split(target.base_url)._replace(path="")
    full = new_path + (f"?{query}" if query else "")
    if base is None:  # same provider, no override: nothing but the path may change
        return Destination("", "", 0, full)
    scheme, host, port, prefix = _parts(base)
    return Destination(scheme, host, port, prefix + full)


@functools.lru_cache(maxsize=256)  # a SplitResult's hostname and port are parsed again on every read
def _parts(base) -> tuple[str, str, int, str]:
    return base.scheme, base.hostname or "", base.port or _default_port(base.scheme), base.path.rstrip("/")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _with_param(query: str, name: str, value: str) -> str:
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != name]
    return "&".join(kept + [f"{name}={value}"])
