"""Small helpers the addons share: the call record of a flow, and answering a flow from the gateway itself."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http
from mitmproxy.net.http import url

from tollgate.core.dialects import error_body
from tollgate.core.providers import CREDENTIAL_HEADERS
from tollgate.core.store import MemoryStore, StoreError
from tollgate.core.record import CallRecord

THREAD_ABOVE_CHARS = 50_000  # prompts larger than this are scanned and counted off the event loop


async def off_loop_if(large: bool, fn, *args):
    """CPU-bound work on plain data (scanning, token counting): in a worker thread when the input is large."""
    return await asyncio.to_thread(fn, *args) if large else fn(*args)


# A flow's call record rides on the flow object as a plain attribute: not in flow.metadata on purpose, because what
# is in there is serialised into flow dumps and mitmweb saves, and the record holds the parsed prompt and other
# things that must not be (Annotate puts the finished record's ledger row into flow.metadata instead). The flow's
# state (dumps, copies, replays) leaves the attribute out, and the record goes when the flow goes. Read by every
# step at every hook: an attribute, not a weak mapping (which makes a weak reference on every lookup).
_RECORD = "_tollgate_record"


def record_of(flow) -> CallRecord | None:
    return getattr(flow, _RECORD, None)


def open_record(flow, record: CallRecord) -> CallRecord:
    setattr(flow, _RECORD, record)
    return record


def pending(flow) -> CallRecord | None:
    """The record of an LLM flow that is still on its way upstream and is the gateway's to shape (the guard of
    request-phase hooks); None for other flows, answered flows and flows forwarded untouched."""
    if flow.response or flow.error or not flow.live:
        return None
    record = getattr(flow, _RECORD, None)
    return None if record is None or record.untouched else record


def reject(flow, record: CallRecord, status: int, message: str, *, decision: str = "rejected",
           code: str | None = None, headers: dict | None = None) -> None:
    """Answers in the provider's error shape, so the client's SDK raises the exception that fits the status.
    Nothing goes upstream, so the client's credentials go no further either (not into logs, dumps or mitmweb)."""
    strip_credentials(flow.request.headers)
    flow.response = http.Response.make(
        status, error_body(record.dialect, status, message, code),
        {"content-type": "application/json", **(headers or {})},
    )
    record.answered_here = True
    record.status = status
    record.decision = decision
    record.reason = message


_NAMES: dict[bytes, str] = {}  # header names as sent -> as compared: the same few dozen on every call
_NAMES_KEPT = 512  # names are the client's choice: no more than this many are remembered


def _name(raw: bytes) -> str:
    """A header's name as mitmproxy's Headers compare names (case-folded)."""
    if (name := _NAMES.get(raw)) is None:
        name = raw.lower().decode() if raw.isascii() else raw.decode("utf-8", "surrogateescape").lower()
        if len(_NAMES) < _NAMES_KEPT:
            _NAMES[raw] = name
    return name


class HeaderView:
    """A message's headers read in one pass, for a step that looks up several: mitmproxy's Headers scan and
    case-fold every field on each lookup. A snapshot: later changes to the message do not show in it."""
    __slots__ = ("_values",)

    def __init__(self, headers):
        values: dict[str, list[str]] = {}
        known = _NAMES
        for name, value in headers.fields:
            key = known.get(name) or _name(name)
            if (same := values.get(key)) is None:
                values[key] = [value.decode("utf-8", "surrogateescape")]
            else:
                same.append(value.decode("utf-8", "surrogateescape"))
        self._values = values

    def get(self, name: str, default=None):
        values = self._values.get(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name, [])

    def __contains__(self, name: str) -> bool:
        return name in self._values


def header_values(headers, name: str) -> list[str]:
    """headers.get_all(name) for a lower-case name, in one plain pass: mitmproxy's Headers make two method calls per
    field on every lookup, and the gateway looks up a dozen a call."""
    key = name.encode()
    return [value.decode("utf-8", "surrogateescape") for field, value in headers.fields if field.lower() == key]


def header(headers, name: str, default=None):
    """headers.get(name) for a lower-case name (several fields of the name fold as mitmproxy folds them)."""
    return ", ".join(values) if (values := header_values(headers, name)) else default


def host_header(request) -> str | None:
    """request.host_header (the :authority of HTTP/2 and 3, else the Host header), with a one-pass lookup."""
    return (request.is_http2 or request.is_http3) and request.authority or header(request.headers, "host")


def content_of(message) -> bytes | None:
    """message.get_content(strict=False), without a Headers lookup when the body is not encoded (the usual case)."""
    return message.get_content(strict=False) if header(message.headers, "content-encoding") else message.raw_content


def drop_headers(headers, names) -> None:
    """Removes every header of these (lower-case) names in one pass."""
    fields = headers.fields
    known = _NAMES
    if any((known.get(f[0]) or _name(f[0])) in names for f in fields):
        headers.fields = tuple(f for f in fields if _name(f[0]) not in names)


def set_headers(headers, values: dict[str, str]) -> None:
    """Sets several headers in one pass over the message's headers (one by one, each would be a pass), replacing
    any of the same name (the provider's own x-ratelimit-*, say)."""
    names = {name.lower() for name in values}
    headers.fields = tuple(f for f in headers.fields if _name(f[0]) not in names) + tuple(
        (name.encode(), value.encode()) for name, value in values.items())


CREDENTIALS = frozenset(CREDENTIAL_HEADERS + ("proxy-authorization",))


def strip_credentials(headers) -> None:
    drop_headers(headers, CREDENTIALS)


def point_at(request, scheme: str, host: str, port: int) -> None:
    """Sets where a request goes, and its Host header and authority as mitmproxy's host setter does (a Host header
    that is there gets the new host[:port], the others of that name go; an authority that is set follows), in one
    pass over the headers instead of mitmproxy's three."""
    data = request.data
    if (request.scheme, data.host, data.port) == (scheme, host, port):
        return
    request.scheme = scheme
    data.host, data.port = host, port
    hostport = url.hostport(scheme, host, port)
    fields = data.headers.fields
    if any(name.lower() == b"host" for name, _ in fields):
        value, kept = hostport.encode("utf-8", "surrogateescape"), []
        for name, old in fields:
            if name.lower() != b"host":
                kept.append((name, old))
            elif value is not None:
                kept.append((name, value))
                value = None
        data.headers.fields = tuple(kept)
    if data.authority:
        request.authority = hostport


class StoreHealth:
    """Logs a shared-store outage once when it starts and once when it ends (the cache and the limits share it)."""

    def __init__(self):
        self.down = False

    def failed(self, e: Exception) -> None:
        if not self.down:
            logging.getLogger("tollgate").warning("tollgate: shared store unavailable: %s", e)
        self.down = True

    def ok(self) -> None:
        if self.down:
            logging.getLogger("tollgate").info("tollgate: shared store is back")
        self.down = False


store_health = StoreHealth()


_background: set[asyncio.Task] = set()  # the loop holds tasks weakly


class SharedStore:
    """The one door to the shared store (cache and limits): every call records the store's health, so an outage is
    logged once when it starts and once when it ends; callers only decide what an outage means for them."""

    def __init__(self, store):
        self.store = store
        self.in_process = isinstance(store, MemoryStore)  # answers at once: its writes need no task
        self._queued: list[tuple] = []

    async def _call(self, coro):
        try:
            result = await coro
        except StoreError as e:
            store_health.failed(e)
            raise
        store_health.ok()
        return result

    async def lookup(self, key: str) -> bytes | None:
        """A cache entry; an outage is a miss."""
        try:
            return await self._call(self.store.get(key))
        except StoreError:
            return None

    async def lookup_many(self, keys: list[str]) -> list[bytes | None]:
        """Several entries in one round trip; an outage is a miss for each."""
        try:
            return await self._call(self.store.get_many(keys))
        except StoreError:
            return [None] * len(keys)

    def reserve_now(self, counters: list, fetch: str = ""):
        """reserve() of the in-process store, which answers at once (callers check in_process first)."""
        states = self.store.reserve_now(counters)
        return (states, self.store.get_now(fetch)) if fetch else states

    async def reserve(self, counters: list, fetch: str = ""):
        """Raises StoreError in an outage: the limits' on_store_error decides. With `fetch`, the value under that
        key comes along in the same round trip: (states, value)."""
        if self.in_process:
            return self.reserve_now(counters, fetch)
        if fetch:
            return await self._call(self.store.reserve_and_get(counters, fetch))
        return await self._call(self.store.reserve(counters))

    def set_later(self, key: str, value: bytes, ttl_s: float) -> None:
        self._later(("set", key, value, ttl_s))

    def settle_later(self, corrections: list) -> None:
        self._later(("settle", corrections))

    def _later(self, write: tuple) -> None:
        """A write that must not delay the answer. The writes of one turn of the event loop go together (Redis: one
        round trip for all of them); in an outage they are lost (the cache misses; a limit keeps its reservation:
        the safe side)."""
        if self.in_process:  # the memory store answers at once (and never fails): no task, no coroutine
            self.store.write_now([write])
            return
        self._queued.append(write)
        if len(self._queued) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        writes, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._quietly(writes))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _quietly(self, writes: list[tuple]) -> None:
        try:
            await self._call(self.store.write(writes))
        except StoreError:
            pass
