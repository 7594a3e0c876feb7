"""What operators see in mitmweb: the call record as the flow comment, a marker on refused or failed calls, the URL
the client called (not the rewritten upstream). (The finished call's ledger row goes into flow.metadata with the
ledger's write: ledger.py.)"""

from __future__ import annotations

from mitmproxy import ctx

from tollgate.core.record import Decision
from tollgate.flows import point_at, record_of

# mitmweb turns these names into symbols; all of them are in DejaVu Sans and the usual system fonts (no emoji font
# needed), and the comment spells the decision out anyway.
MARKERS = {Decision.REJECTED: ":heavy_multiplication_x:", Decision.LIMITED: ":zap:",         # ✖ ⚡
           Decision.OVER_BUDGET: ":balance_scale:", Decision.MODERATED: ":biohazard:",       # ⚖ ☣
           Decision.UPSTREAM_ERROR: ":warning:", Decision.UPSTREAM_TIMEOUT: ":interrobang:",  # ⚠ ⁉
           Decision.CLIENT_ABORTED: ":scissors:", Decision.GATEWAY_ERROR: ":skull_and_crossbones:",  # ✂ ☠
           Decision.UNAVAILABLE: ":radioactive:"}                                             # ☢
MASKED, FAILED = ":eight_pointed_black_star:", ":warning:"  # ✴ a prompt was masked; ⚠ any other 5xx answer


def shown() -> bool:
    """Does anything show or keep flows? mitmweb and the console (their flow view), a flow file, a HAR dump.
    mitmdump's log line is written before the gateway's answer-phase steps run, so it does not count."""
    options = ctx.options
    return (ctx.master.addons.get("view") is not None  # a sequence of flows: empty at the start, so no bool()
            or bool(getattr(options, "save_stream_file", None) or getattr(options, "hardump", None)))


class Annotate:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self):
        self.shown = True

    def running(self):
        self.shown = shown()

    def configure(self, updated):
        if {"save_stream_file", "hardump"} & updated:
            self.shown = shown()

    def response(self, flow):
        if self.shown and (record := record_of(flow)) and not record.session_open:  # else nobody would see it
            if record.client_url and not record.untouched:  # mitmweb lists the URL the client called, not ours
                scheme, host, port, flow.request.path = record.client_url
                point_at(flow.request, scheme, host, port)
            flow.comment = record.comment()
            flow.marked = MARKERS.get(record.decision) or (FAILED if record.status >= 500 else
                                                           MASKED if record.masked else "")

    def error(self, flow):
        self.response(flow)

    def websocket_end(self, flow):  # a WebSocket session's row, once it ends
        self.response(flow)
