"""Routing, model mapping and the org key: picks the provider and model, rewrites the destination and injects the
provider's organisation key (round-robin over several keys)."""

from __future__ import annotations

import itertools

from tollgate.core.config import Config
from tollgate.core.routing import Route as RouteTo
from tollgate.core.routing import RouteError, destination, resolve
from tollgate.flows import pending, reject
from tollgate.internals import send_with_credential


class Route:
    def __init__(self, settings):
        self.settings = settings
        self._keys: dict[str, itertools.cycle] = {}
        self._keys_of: Config | None = None

    def _next_key(self, config: Config, provider) -> str:
        if self._keys_of is not config:  # a reloaded configuration starts new rotations
            self._keys = {name: itertools.cycle(p.keys) for name, p in config.providers.items() if p.keys}
            self._keys_of = config
        rotation = self._keys.get(provider.name)
        return next(rotation) if rotation else ""

    def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        source = config.providers.get(record.source)
        try:
            if record.byok and source is not None:  # the client's key belongs to the provider it called
                route = RouteTo(source, record.requested_model)
            else:
                route = resolve(config, record.dialect, source, record.requested_model)
        except RouteError as e:
            return reject(flow, record, 404, str(e), code="model_not_found")
        record.provider = route.provider.name
        record.model = route.model
        record.route_rule = route.rule

        request = flow.request
        path, _, query = request.path.partition("?")
        target = destination(route, record.dialect, source, path, query)
        if target.host:  # scheme first, then host, then port (setting host rewrites the Host header)
            request.scheme = target.scheme
            request.host = target.host
            request.port = target.port
        request.path = target.path
        if record.body is not None and route.model and record.body.get("model") not in (None, route.model):
            record.body["model"] = route.model
            record.body_changed = True

        if record.byok:
            return
        if not route.provider.configured:  # never forward without credentials
            return reject(flow, record, 503, f"provider {route.provider.name} is not configured on the gateway "
                                             f"(no org key); tell the gateway's operators",
                          code="provider_not_configured")
        if key := self._next_key(config, route.provider):  # the client's own key was removed by Authenticate
            header, prefix = route.provider.spec.auth[record.dialect]
            # Only the wire sees the key; the flow (mitmweb, dumps, logs) shows whose key it is.
            send_with_credential(request, header, prefix + key, f"{prefix}<{route.provider.name} org key>")
