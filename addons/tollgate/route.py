"""Routing: the pool's targets in the order they are tried (core/routing.py), the first healthy one applied to the
flow: destination, model, wire format, and the provider's org key (round-robin over its keys, skipping keys that
are out or cooling down). Fallback (fallback.py) applies the next one when an attempt fails."""

from __future__ import annotations

import math

from tollgate.core import health as core_health
from tollgate.core import wire
from tollgate.core.routing import Route as RouteTo
from tollgate.core.routing import RouteError, destination, plan
from tollgate.flows import pending, point_at, reject, strip_credentials
from tollgate.internals import send_with_credential

ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")


class Route:
    def __init__(self, settings, health):
        self.settings = settings
        self.health = health
        self._turn: dict[str, int] = {}  # provider -> where its key rotation stands

    def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        source = config.providers.get(record.source)
        path, _, query = flow.request.path.partition("?")
        record.origin = (path, query)
        try:
            if record.byok and source is not None:  # the client's key belongs to the provider it called
                routes = [RouteTo(source, record.requested_model)]
            else:
                routes = plan(config, record.dialect, record.endpoint, source, record.requested_model,
                              self.health.busy)
        except RouteError as e:
            return reject(flow, record, 404, str(e), code="model_not_found")
        record.provider, record.model, record.route_rule = routes[0].provider.name, routes[0].model, routes[0].rule
        if record.byok:
            self.apply(flow, record, routes[0], "")
            return
        if not any(r.provider.configured for r in routes):  # never forward without credentials
            names = ", ".join(dict.fromkeys(r.provider.name for r in routes))
            return reject(flow, record, 503, f"provider {names} is not configured on the gateway (no org key); "
                                             f"tell the gateway's operators", code="provider_not_configured")
        record.routes = routes
        self.health.current()
        self.health.budget.called()
        if not self.next(flow, record):
            return self._none_healthy(flow, record, routes)

    def next(self, flow, record) -> bool:
        """Applies the next healthy target of the call's pool; False when none is left."""
        state = self.health.current()
        while record.routes:
            route = record.routes.pop(0)
            name = route.provider.name
            if not route.provider.configured or not state.provider_usable(name, claim=False):
                continue
            key = self._key(route.provider, state)
            if key is None or not state.provider_usable(name):  # the last check claims a half-open probe
                continue
            self.apply(flow, record, route, key)
            record.target = route
            record.attempts += 1
            self.health.started(flow, name)
            return True
        return False

    def _key(self, provider, state) -> str | None:
        if not provider.keys:
            return ""  # a keyless (self-hosted) provider
        turn = self._turn.get(provider.name, 0)
        for i in range(len(provider.keys)):
            key = provider.keys[(turn + i) % len(provider.keys)]
            if state.key_usable(provider.name, core_health.key_id(key)):
                self._turn[provider.name] = turn + i + 1
                return key
        return None

    def apply(self, flow, record, route: RouteTo, key: str) -> None:
        """Points the flow at the route's provider, in its wire format, with its key (on the wire only)."""
        record.provider, record.model, record.route_rule = route.provider.name, route.model, route.rule
        record.upstream_dialect = route.dialect or record.dialect
        request = flow.request
        path, query = record.origin
        if route.dialect:  # translated: the provider's own chat endpoint
            target = destination(route, route.dialect, None, "/v1/" + wire.chat_endpoint(route.dialect), "")
        else:
            target = destination(route, record.dialect, self.settings.config.providers.get(record.source), path, query)
        if target.host:
            point_at(request, target.scheme, target.host, target.port)
        request.path = target.path
        if record.body is not None and route.model and record.body.get("model") not in (None, route.model):
            record.body["model"] = route.model
            record.body_changed = True
        if route.dialect:
            record.body_changed = True  # Forward renders the body in the provider's format
            for name in ANTHROPIC_HEADERS:
                request.headers.pop(name, None)
            if route.dialect == wire.ANTHROPIC:
                request.headers["anthropic-version"] = wire.anthropic.VERSION
        if record.byok:
            return
        strip_credentials(request.headers)  # a previous attempt's (redacted) key header goes
        record.key_id = core_health.key_id(key) if key else ""
        if key:  # the client's own key was removed by Authenticate
            header, prefix = route.provider.spec.auth[record.upstream_dialect]
            # Only the wire sees the key; the flow (mitmweb, dumps, logs) shows whose key it is.
            send_with_credential(request, header, prefix + key, f"{prefix}<{route.provider.name} org key>")

    def _none_healthy(self, flow, record, routes) -> None:
        state = self.health.current()
        now = state.clock()
        providers = {r.provider.name for r in routes}
        waits = [s.until - now for name, s in state.states.items()
                 if s.until > now and name.split(":")[1] in providers]  # provider:NAME and key:NAME:ID
        retry_after = str(max(1, math.ceil(min(waits)))) if waits else "30"
        names = ", ".join(dict.fromkeys(r.provider.name for r in routes))
        reject(flow, record, 503, f"no healthy provider for {record.requested_model or 'this call'}: {names} "
                                  f"cooling down or failing; retry after {retry_after} s",
               code="no_healthy_provider", headers={"retry-after": retry_after})
