"""Who is really calling, behind a load balancer (core/forwarded.py): the CONNECT of a tunnel, or a plain request,
from a trusted balancer address (gateway.trusted_proxies, or --set tollgate_trusted_proxies=…) carries the client's
address in X-Forwarded-For; the call's record (limits `per: ip`, the ledger's client_ip) gets that address. From
anyone else the header is ignored, and so is one inside a TLS tunnel (the balancer cannot see in there: the client
wrote it). It never goes upstream."""

from __future__ import annotations

from mitmproxy import ctx

from tollgate.core.forwarded import forwarded_client, is_trusted, parse_trusted
from tollgate.core.schema import ConfigError
from tollgate.flows import header_values, record_of

HEADER = "x-forwarded-for"


class ClientAddress:
    def __init__(self, settings):
        self.settings = settings
        self._tunnels: dict[str, str] = {}  # client connection id -> the address its CONNECT was forwarded for
        self._option: tuple = ()

    def load(self, loader):
        loader.add_option("tollgate_trusted_proxies", str, "",
                          "comma-separated balancer addresses or networks whose X-Forwarded-For is believed")

    def configure(self, updated):
        if "tollgate_trusted_proxies" in updated:
            items = [i.strip() for i in ctx.options.tollgate_trusted_proxies.split(",") if i.strip()]
            try:
                self._option = parse_trusted(items, "tollgate_trusted_proxies")
            except ConfigError as e:
                raise ValueError(str(e)) from None

    def _forwarded(self, flow) -> str | None:
        if not (values := header_values(flow.request.headers, HEADER)):
            return None
        del flow.request.headers[HEADER]
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        if not is_trusted(peer, self.settings.config.trusted_proxies + self._option):
            return None
        return forwarded_client(values)

    def http_connect(self, flow):
        if address := self._forwarded(flow):
            self._tunnels[flow.client_conn.id] = address

    def client_disconnected(self, client):
        self._tunnels.pop(client.id, None)

    def requestheaders(self, flow):
        forwarded = self._forwarded(flow)
        if flow.client_conn.tls_established:  # inside a TLS tunnel the balancer saw nothing: the client wrote it
            forwarded = None
        address = forwarded or self._tunnels.get(flow.client_conn.id)
        if address and (record := record_of(flow)) is not None:
            record.client_ip = address
