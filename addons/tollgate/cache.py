"""Response cache: identical requests answered at the gate, per tenant, plain or streamed.

Two addons for one concern, at the two places of the pipeline where it acts: CacheLookup after authentication and
authorisation (a refused request is never answered from cache), CacheFill after Meter (it stores the answer with the
usage Meter settled). A stream is stored as its upstream event sequence and replayed as a stream. The store failing
means a miss, never an error."""

from __future__ import annotations

import time

from mitmproxy import http

from tollgate.core.cache import Entry, cache_key, is_deterministic, request_directive, tenant
from tollgate.core.dialects import OPENAI, USAGE_ENDPOINTS, StreamMeter, Usage, wants_stream_usage
from tollgate.core.record import Decision
from tollgate.core.sse import StreamTap
from tollgate.flows import HeaderView, content_of, header, pending, record_of

BYPASS_HEADER = "x-tollgate-cache"
STATUS_HEADER = "x-cache"


class CacheKey:
    """Decides whether the call may be answered from the cache and under which key (before the limits, which fetch
    the entry in the same round trip as their reservation)."""

    def __init__(self, settings):
        self.settings = settings

    def request(self, flow):
        if not (record := pending(flow)):
            return
        headers = record.client_headers or HeaderView(flow.request.headers)
        directive = request_directive(headers.get("cache-control", ""), headers.get(BYPASS_HEADER, ""))
        if BYPASS_HEADER in headers:
            del flow.request.headers[BYPASS_HEADER]
        config = self.settings.config.cache
        if config is None:
            return  # no cache configured: nothing to say about it (no x-cache header, empty ledger column)
        record.cache = "bypass"
        if record.body is None or directive == "bypass" or record.masked:
            return  # a masked prompt's answer holds placeholders only this call can restore
        if config.only_deterministic and not is_deterministic(record.body):
            return
        record.cache = "miss"
        record.cache_keep_bytes = config.max_entry_bytes
        record.cache_key = cache_key(
            provider=record.provider, dialect=record.dialect, path=record.endpoint, model=record.model,
            streamed=record.streamed, body=record.body,
            tenant_id=tenant(config.scope, record.consumer, record.group, record.byok_key))
        record.cache_lookup = directive != "refresh"


class CacheLookup:
    """Identical request, same tenant: answered here (x-cache: HIT)."""

    def __init__(self, settings):
        self.settings = settings

    async def request(self, flow):
        if not (record := pending(flow)) or not record.cache_lookup:
            return
        if record.cache_fetched:  # the limits fetched it with their reservation
            data = record.cache_entry
        else:
            data = await self.settings.store().lookup(record.cache_key)
        entry = Entry.unpack(data) if data else None
        if entry is None or entry.streamed != record.streamed:
            return
        self._answer(flow, record, entry)

    @staticmethod
    def _answer(flow, record, entry: Entry, headers: dict | None = None) -> None:
        answer_from(flow, record, entry, headers or {STATUS_HEADER: "HIT"})

    def responseheaders(self, flow):
        record = record_of(flow)
        if record is not None and record.cache and not record.answered_here:  # a hit says so in its own answer
            # ours, whatever the provider (or a CDN before it) said
            record.add_answer_headers({STATUS_HEADER: "MISS" if record.cache == "miss" else "BYPASS"})


def answer_from(flow, record, entry: Entry, headers: dict) -> None:
    """Answers the call with a stored entry (exact or semantic hit)."""
    body = entry.body
    if entry.streamed:  # replay the stored events; drop the usage chunk unless this client asked for it
        drop = (record.dialect == OPENAI and record.endpoint.endswith(USAGE_ENDPOINTS)
                and not wants_stream_usage(record.body))
        tap = StreamTap(StreamMeter(record.dialect), drop_usage_chunk=drop, clock=time.time)
        body = b"".join(tap(body) + tap(b""))
    flow.response = http.Response.make(200, body, {"content-type": entry.content_type, **headers})
    record.answered_here, record.cache, record.decision = True, "hit", Decision.CACHED
    record.stored_usage = Usage(entry.prompt_tokens, entry.completion_tokens)  # Meter settles the numbers


class CacheFill:
    def __init__(self, settings):
        self.settings = settings

    def response(self, flow):
        record = record_of(flow)
        if record is None or record.cache != "miss" or record.answered_here or flow.response.status_code != 200:
            return
        if record.moderation:
            return  # a withheld answer is not worth keeping
        if record.tap is not None:
            events = record.tap.kept
            body = b"".join(events) if events is not None else None
        else:
            body = content_of(flow.response)
        config = self.settings.config.cache
        if body is None or config is None or len(body) > config.max_entry_bytes:
            return  # too large to keep
        entry = Entry(header(flow.response.headers, "content-type", "application/json"), record.tap is not None,
                      record.prompt_tokens, record.completion_tokens, body)
        self.settings.store().set_later(record.cache_key, entry.pack(), config.ttl_s)
        record.cache_stored = True
