"""The last step before a request leaves: serialise the edited body once, ask for an uncompressed answer (the
stream tap reads SSE bytes as they come), and watch the upstream: an unreachable provider is answered 502 and a
provider that sends no answer within gateway.upstream_timeout is answered 504, both in the provider's shape."""

from __future__ import annotations

import asyncio
import json
import weakref

from mitmproxy import ctx, http
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

from tollgate.core.dialects import error_body
from tollgate.flows import pending, record_of, redact_credentials

# HTTP/1 requests on their way upstream -> their record. Weak, so finished flows leave by themselves.
_in_flight: "weakref.WeakKeyDictionary[http.Request, object]" = weakref.WeakKeyDictionary()
_original_send = _http1.Http1Server.send


def _send(self, event):
    """mitmproxy answers a failed upstream with an HTML page; LLM clients get their provider's error shape.
    Only protocol errors take the detour: every other event goes straight to mitmproxy's own generator."""
    if not isinstance(event, ResponseProtocolError) or self.request is None or self.request not in _in_flight:
        return _original_send(self, event)
    return _send_error(self, event, _in_flight[self.request])


def _send_error(self, event, record):
    status = event.code.http_status_code()
    if status is None or self.response or not (self.conn.state & ConnectionState.CAN_WRITE):
        yield from _original_send(self, event)
        return
    # The error hook (Meter) has settled status and reason already; the ledger row says what the client gets.
    status = record.status if record.status >= 500 else status
    message = record.reason or f"provider {record.provider} failed: {event.message}"
    response = http.Response.make(status, error_body(record.dialect, status, message),
                                  {"content-type": "application/json", "connection": "close"})
    yield commands.SendData(self.conn, assemble_response(response))
    yield commands.CloseConnection(self.conn)


class Forward:
    def __init__(self, settings):
        self.settings = settings
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, loader):
        _http1.Http1Server.send = _send

    def done(self):
        _http1.Http1Server.send = _original_send
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def request(self, flow):
        if not (record := pending(flow)):
            return
        if record.body_changed:
            flow.request.text = json.dumps(record.body, ensure_ascii=False, separators=(",", ":"))
        flow.request.headers["accept-encoding"] = "identity"
        _in_flight[flow.request] = record
        timeout = self.settings.config.upstream_timeout_s
        self._timers[flow.id] = asyncio.get_running_loop().call_later(timeout, self._timed_out, flow)

    def responseheaders(self, flow):
        if timer := self._timers.pop(flow.id, None):
            timer.cancel()
        record = record_of(flow)
        if record is not None and not record.byok:
            redact_credentials(flow.request.headers)  # sent already: mitmweb and flow dumps never show the org key

    def error(self, flow):
        self.responseheaders(flow)

    def _timed_out(self, flow):
        self._timers.pop(flow.id, None)
        record = record_of(flow)
        if record is None or flow.response or flow.error:
            return
        record.decision = "upstream_timeout"
        # Closing the upstream connection makes mitmproxy fail the stream; _send renders the 504.
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
        if handler is not None and flow.server_conn in handler.transports:
            handler.close_connection(flow.server_conn)
        else:
            flow.kill()
