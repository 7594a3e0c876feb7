"""Streaming: SSE answers flow to the client event by event (never buffered) through a tap that meters them.

For OpenAI streams the gateway asks for the final usage chunk (stream_options.include_usage) when the client did
not, and removes that chunk again so the client sees exactly the stream it asked for.

A stream the provider compresses anyway (gzip, deflate, br) is decoded on the way, so it is metered and checked
like any other; a failure inside the tap ends the client's stream there and is a gateway_error."""

from __future__ import annotations

import logging
import time
import traceback
import weakref

from tollgate.core.dialects import OPENAI, USAGE_ENDPOINTS, StreamMeter, wants_stream_usage
from tollgate.core.wire import StreamTranslator
from tollgate.core.record import Decision
from tollgate.core.sse import StreamDecoder, StreamTap
from tollgate.flows import header, pending, record_of
from tollgate.metrics import GATEWAY_ERRORS

log = logging.getLogger("tollgate")


def _tap_failed(flow, record):
    """What the tap calls when it fails. It holds the record weakly and not the flow: the record holds the tap, so
    strong references would make every stream a reference cycle, freed only by the collector's full collections
    (which then scan thousands of open streams and pause the event loop)."""
    flow_id, weak_record = flow.id, weakref.ref(record)

    def report(error: Exception) -> None:
        GATEWAY_ERRORS.labels("stream").inc()
        if (failed := weak_record()) is not None:
            failed.decision = Decision.GATEWAY_ERROR
            failed.reason = f"stream tap failed: {type(error).__name__}"
        log.error("tollgate: the stream tap failed for flow %s: %s (message withheld); the stream was cut\n%s",
                  flow_id, type(error).__name__, "".join(traceback.format_tb(error.__traceback__)).rstrip())
    return report

class Stream:
    def request(self, flow):
        if not (record := pending(flow)) or not record.streamed or record.dialect != OPENAI or record.body is None:
            return
        if not record.endpoint.endswith(USAGE_ENDPOINTS) or wants_stream_usage(record.body):
            return
        options = record.body.get("stream_options")
        record.body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        record.body_changed = True
        record.usage_injected = True

    def responseheaders(self, flow):
        record = record_of(flow)
        if record is None or record.answered_here or flow.error:
            return
        if not header(flow.response.headers, "content-type", "").startswith("text/event-stream"):
            return
        encoding = header(flow.response.headers, "content-encoding", "identity").strip().lower()
        if record.untouched and encoding != "identity":
            return  # an untouched flow may get a compressed stream: pass it on as it is, unmetered
        decoder = StreamDecoder(encoding) if encoding != "identity" else None  # unknown: raises, answer withheld
        if decoder is not None:
            del flow.response.headers["content-encoding"]
            flow.response.headers.pop("content-length", None)
        record.streamed = True
        upstream = record.upstream_dialect or record.dialect
        translator = None
        if upstream != record.dialect:  # the provider's events become the client's (core/wire)
            translator = StreamTranslator(upstream, record.dialect, record.requested_model or record.model)
            translator.drop_usage_chunk = record.usage_injected or not wants_stream_usage(record.body or {})
            flow.response.headers.pop("content-length", None)
        tap = StreamTap(StreamMeter(upstream), drop_usage_chunk=record.usage_injected and translator is None,
                        clock=time.time, keep_bytes=record.cache_keep_bytes, on_failure=_tap_failed(flow, record),
                        decoder=decoder, translator=translator)
        record.tap = tap
        flow.response.stream = tap
