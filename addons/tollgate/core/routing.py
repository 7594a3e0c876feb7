"""Routing and model mapping: which provider answers, under which model name, at which URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Config, ModelRule, Provider
from .dialects import ANTHROPIC, GEMINI, azure_path_parts, replace_gemini_model


class RouteError(ValueError):
    """No provider can take the request; the message is safe to show to the client."""


def match_rule(rules: tuple[ModelRule, ...], model: str, usable) -> ModelRule | None:
    """Exact match first, then the longest 'prefix*', then '*'. Only rules whose provider is usable count."""
    candidates = [r for r in rules if usable(r.provider)]
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


def resolve(config: Config, dialect: str, source: Provider | None, model: str) -> Route:
    """source is the provider whose host the client called (None on the reverse listener)."""
    usable = lambda name: dialect in config.providers[name].spec.dialects  # noqa: E731
    rule = match_rule(config.rules, model, usable) if model else None
    if rule:
        return Route(config.providers[rule.provider], rule.model or model, rule.match)
    if source is not None:
        return Route(source, model)
    # Reverse listener without a matching rule: the first configured provider that speaks the dialect.
    for provider in config.providers.values():
        if usable(provider.name):
            return Route(provider, model)
    raise RouteError(f"no provider configured for the {dialect} API")


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


def destination(route: Route, dialect: str, source: Provider | None, path: str, query: str) -> Destination:
    """Where the request goes. The same provider keeps its path; another provider gets its own base path."""
    target = route.provider
    if source is not None and source.name == target.name:
        new_path = path
        if dialect == GEMINI and route.model:
            new_path = replace_gemini_model(path, route.model)
        elif target.spec.deployment_paths and route.model and (parts := azure_path_parts(path)):
            new_path = path.replace(f"/deployments/{parts[0]}/", f"/deployments/{route.model}/", 1)
        base = urlsplit(target.upstream) if target.upstream else None
    else:
        base_path = urlsplit(target.base_url).path.rstrip("/")
        source_base = urlsplit(source.base_url).path.rstrip("/") if source else "/v1"
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
        base = urlsplit(target.upstream) if target.upstream else urlsplit(target.base_url)._replace(path="")
    full = new_path + (f"?{query}" if query else "")
    if base is None:  # same provider, no override: nothing but the path may change
        return Destination("", "", 0, full)
    return Destination(base.scheme, base.hostname or "", base.port or _default_port(base.scheme),
                       base.path.rstrip("/") + full)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _with_param(query: str, name: str, value: str) -> str:
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != name]
    return "&".join(kept + [f"{name}={value}"])
