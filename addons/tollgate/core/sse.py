"""Server-sent events cut at arbitrary chunk boundaries, reassembled into whole events."""

from __future__ import annotations

import asyncio
import re
import zlib

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_EMPTY_LIST = re.compile(rb"\[\s*\]")  # every usage-only chunk has one ("choices": []); few other events do


class SSEBuffer:
    """Collects bytes and yields complete events (the raw bytes including the blank line)."""

    def __init__(self, limit: int = 4 * 2**20):
        self._buf = b""
        self._limit = limit  # an event larger than this is passed on unparsed rather than held forever

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        events = []
        start = 0
        for m in _EVENT_END.finditer(self._buf):
            events.append(self._buf[start:m.end()])
            start = m.end()
        self._buf = self._buf[start:]
        if len(self._buf) > self._limit:
            events.append(self._buf)
            self._buf = b""
        return events

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest


def parse_event(raw: bytes) -> tuple[str, str]:
    """(event name, data) of one raw event; multi-line data is joined with newlines."""
    name, data = "", []
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()
    return name, "\n".join(data)


class StreamDecoder:
    """Undoes a stream's Content-Encoding chunk by chunk (a provider may compress despite accept-encoding:
    identity), in pieces of at most 1 MiB, so a compressed bomb cannot balloon in memory."""

    PIECE = 2**20

    def __init__(self, encoding: str):
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._zlib = zlib.decompressobj(47 if encoding != "deflate" else 15)
        elif encoding == "br":
            import brotli

            self._brotli = brotli.Decompressor()
        else:
            raise ValueError(f"unsupported stream encoding {encoding!r}")

    def __call__(self, chunk: bytes) -> list[bytes]:
        out = []
        if self.encoding == "br":
            out.append(self._brotli.process(chunk, output_buffer_limit=self.PIECE))
            while not self._brotli.can_accept_more_data():
                out.append(self._brotli.process(b"", output_buffer_limit=self.PIECE))
            return out
        data = chunk
        while data:
            out.append(self._zlib.decompress(data, self.PIECE))
            data = self._zlib.unconsumed_tail
        return out


class StreamTap:
    """The callable mitmproxy streams an SSE answer through: passes whole events on, meters them, and drops the
    usage-only chunk that the gateway asked for on the client's behalf.

    It never raises (mitmproxy calls it outside any hook): an event the meter cannot read passes on unmetered; a
    failure anywhere else (the answer editor, a decoder) ends the stream for the client at that point, reported
    once through on_failure: what could not be checked is not passed on.

    When nothing rewrites or holds the events (no translator, editor or gate), a chunk's events go on at once and
    are metered once the event loop is free again (or on the tap's next call, or when the meter is read, whichever
    comes first): reading each event's JSON (~10 us an event) no longer delays the client's first token. An event
    that may be the usage-only chunk to drop (one with an empty list) is metered before it goes, in order."""

    def __init__(self, meter, drop_usage_chunk: bool, clock, keep_bytes: int = 0, on_failure=None, decoder=None,
                 translator=None):
        self._stream_meter = meter
        self.translator = translator  # wire.StreamTranslator: the provider's events into the client's format
        self.on_failure = on_failure
        self.failed: Exception | None = None
        self.decoder = decoder
        self.odd_events = 0  # events the meter could not read (passed on as they came)
        self.last_chunk_at: float | None = None
        self.drop_usage_chunk = drop_usage_chunk
        self._first_token_at: float | None = None
        self._unmetered: list[bytes] = []  # passed on, metered next: the events of the last chunk
        self._unmetered_at = 0.0           # when they came
        self._clock = clock
        self._buffer = SSEBuffer()
        # The upstream events as they came (for the cache), while they fit in keep_bytes; None once they did not.
        self.kept: list[bytes] | None = [] if keep_bytes else None
        self._keep_left = keep_bytes
        self.editor = None  # core.answers.StreamEditor: what the client gets instead of each upstream event
        self.gate = None    # content_security.StreamGate: holds events until their window is checked
        self._end: list[bytes] | None = None  # what the end of the stream releases, once computed
        self._early: list[bytes] = []

    def __call__(self, chunk: bytes) -> list[bytes]:
        """Returns the chunks to send on: a list, because an empty bytes chunk would end an HTTP/1 chunked body."""
        if self.failed is not None:
            return []
        self.last_chunk_at = self._clock()
        try:
            if self.decoder is not None and chunk:
                chunk = b"".join(self.decoder(chunk))
                if not chunk:
                    return []
            return self._pass(chunk)
        except Exception as e:
            self.failed = e
            if self.on_failure is not None:
                self.on_failure(e)
            return []

    @property
    def meter(self):
        """The StreamMeter, up to date with every event passed on."""
        self._catch_up()
        return self._stream_meter

    @property
    def first_token_at(self) -> float | None:
        self._catch_up()
        return self._first_token_at

    def _catch_up(self) -> None:
        """Meters the events passed on unmetered, at the time they came."""
        if self._unmetered:
            events, self._unmetered = self._unmetered, []
            for raw in events:
                self._meter(raw, self._unmetered_at)

    def _pass(self, chunk: bytes) -> list[bytes]:
        self._catch_up()
        if not chunk:  # end of stream
            events = self._end_events()
            if self.gate is not None:
                events = self.gate.feed(events, end=True)
            out = b"".join(self._early + events)
            return [out] if out else []
        if self.translator is None and self.editor is None and self.gate is None:
            return self._pass_then_meter(self._buffer.feed(chunk))
        events = [raw for raw in self._buffer.feed(chunk) if not self._meter(raw)]
        if self.translator is not None:
            events = self._translate(events, end=False)
        if self.editor is not None:
            events = [edited for raw in events for edited in self.editor.event(raw)]
        if self.gate is not None:
            events = self.gate.feed(events)
        out = b"".join(events)
        return [out] if out else []

    def _pass_then_meter(self, events: list[bytes]) -> list[bytes]:
        out = []
        for raw in events:
            if self.drop_usage_chunk and _EMPTY_LIST.search(raw):  # it may have to stay behind: metered first
                self._catch_up()
                if self._meter(raw, self.last_chunk_at):
                    continue
            else:
                self._unmetered.append(raw)
            out.append(raw)
        self._unmetered_at = self.last_chunk_at
        if self._unmetered:
            self._catch_up_soon()
        out = b"".join(out)
        return [out] if out else []

    def _catch_up_soon(self) -> None:
        """Meters the events just passed on once the loop is free again (after the chunk was written), not when the
        next chunk comes; without a running loop (tests), the next call does."""
        try:
            asyncio.get_running_loop().call_soon(self._catch_up_quietly)
        except RuntimeError:
            pass

    def _catch_up_quietly(self) -> None:
        try:
            self._catch_up()
        except Exception as e:  # as a failure inside __call__: the stream ends for the client at its next chunk
            self.failed = e
            if self.on_failure is not None:
                self.on_failure(e)

    def _end_events(self) -> list[bytes]:
        """What the end of the stream releases (the buffered rest, the translator's close, the editor's held
        tails): computed once."""
        if self._end is not None:
            events, self._end = self._end, []
            return events
        self._catch_up()
        self._end = []
        rest = self._buffer.flush()
        events = [rest] if rest and not (rest.strip() and self._meter(rest)) else []
        if self.translator is not None:
            events = self._translate(events, end=True)
        if self.editor is not None:
            events = [edited for raw in events for edited in self.editor.event(raw)] + self.editor.end()
        return events

    def prepare_end(self) -> None:
        """Before the end is processed (a check of what it releases must be awaited first): its events go to the
        gate now."""
        if self._end is None and self.gate is not None:
            self._early = self.gate.feed(self._end_events(), end=True)

    def _keep(self, raw: bytes) -> None:
        if self.kept is not None:
            self._keep_left -= len(raw)
            if self._keep_left >= 0:
                self.kept.append(raw)
            else:
                self.kept = None

    def _translate(self, events: list[bytes], end: bool) -> list[bytes]:
        """The client's events for the provider's; the cache keeps them whole (the usage chunk too)."""
        out = [new for raw in events if raw.strip() for new in self.translator(*parse_event(raw))]
        if end:
            out += self.translator.end()
        for raw in out:
            self._keep(raw)
        drop = self.translator.drop_usage_chunk
        return [raw for raw in out if not (drop and self.translator.is_usage_chunk(raw))]

    def _meter(self, raw: bytes, came_at: float | None = None) -> bool:
        """Feeds one event to the meter; True if the event is to be dropped."""
        if self.translator is None:
            self._keep(raw)
        name, data = parse_event(raw)
        meter = self._stream_meter
        try:
            usage_only = meter.feed(data, name)
        except Exception:  # an odd event (wrong types, garbage): forwarded as it came, unmetered
            self.odd_events += 1
            return False
        if self._first_token_at is None and meter.text:
            self._first_token_at = self._clock() if came_at is None else came_at
        return usage_only and self.drop_usage_chunk
