"""Streaming: SSE answers flow to the client event by event (never buffered) through a tap that meters them.

For OpenAI streams the gateway asks for the final usage chunk (stream_options.include_usage) when the client did
not, and removes that chunk again so the client sees exactly the stream it asked for."""

from __future__ import annotations

import time

from tollgate.core.dialects import OPENAI, USAGE_ENDPOINTS, StreamMeter, wants_stream_usage
from tollgate.core.sse import StreamTap
from tollgate.flows import SYNTHETIC, pending, record_of

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
        if record is None or flow.metadata.get(SYNTHETIC) or flow.error:
            return
        if not flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            return
        if flow.response.headers.get("content-encoding", "identity") != "identity":
            return  # an untouched flow may get a compressed stream: pass it on as it is, unmetered
        record.streamed = True
        tap = StreamTap(StreamMeter(record.dialect), drop_usage_chunk=record.usage_injected, clock=time.time,
                        keep_bytes=record.cache_keep_bytes)
        record.tap = tap
        flow.response.stream = tap
