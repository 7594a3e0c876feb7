"""The "LLM" content view for mitmweb: chat requests and answers as a conversation, a streamed answer as its
reassembled text plus usage. (scripts/run --web keeps streamed bodies so there is something to show.)"""

from __future__ import annotations

import json

from mitmproxy import contentviews, http

from tollgate.core.conversation import render_answer, render_record, render_request, wrap
from tollgate.core.dialects import dialect_of_path
from tollgate.core.record import METADATA_KEY
from tollgate.flows import record_of


class LLMContentview(contentviews.Contentview):
    name = "LLM"

    @staticmethod
    def _dialect(metadata) -> str | None:
        flow = metadata.flow
        if flow is None or not isinstance(flow, http.HTTPFlow):
            return None
        record = record_of(flow)
        return record.dialect if record else None

    def prettify(self, data: bytes, metadata) -> str:
        flow = metadata.flow
        dialect = self._dialect(metadata) or dialect_of_path(flow.request.path.split("?")[0])
        record = record_of(flow)
        row = flow.metadata.get(METADATA_KEY) or (record.row() if record else None)
        if isinstance(metadata.http_message, http.Request):
            text = render_request(dialect, json.loads(data))
        else:
            metered = bool(row and (row.get("prompt_tokens") or row.get("completion_tokens")))
            text = render_answer(dialect, data, metadata.content_type or "", metered)
        text = (render_record(row) if row else "") + wrap(text)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate must not break a view

    def render_priority(self, data: bytes, metadata) -> float:
        if not data or self._dialect(metadata) is None or "octet-stream" in (metadata.content_type or ""):
            return -1  # a body the gate refused as unreadable is shown as bytes
        return 2  # above the JSON view (1) for every LLM call


class LLMView:
    def load(self, loader):
        contentviews.add(LLMContentview)  # registering again (hot reload) replaces the old one
