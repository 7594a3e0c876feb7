"""Wire formats: one module per format (openai.py, anthropic.py, gemini.py), each with the same small set of
functions: usage, error_body / error_event / error_message, meter (a stream's usage and text), stream_deltas /
refusal_events / answer_items / mark_refused (where answer text sits, for restoring and moderation), and, for the
formats that translate, parse_request / render_request / parse_answer / render_answer / StreamReader / StreamWriter
over the common form in common.py. Adding a wire format is adding one module and naming it here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import anthropic, gemini, openai
from .common import TranslationError, Usage

FORMATS = {m.NAME: m for m in (openai, anthropic, gemini)}
OPENAI, ANTHROPIC, GEMINI = openai.NAME, anthropic.NAME, gemini.NAME
ALL = openai.ALL


def of(dialect: str):
    return FORMATS[dialect]


def translatable(client: str, upstream: str) -> bool:
    return bool(FORMATS[client].CHAT_ENDPOINT and FORMATS[upstream].CHAT_ENDPOINT)


def chat_endpoint(dialect: str) -> str | None:
    return FORMATS[dialect].CHAT_ENDPOINT


@dataclass
class StreamMeter:
    """Follows the events of one streamed answer: usage as reported, and the text streamed so far
    (to count tokens when the stream is cut before the provider reports usage)."""

    dialect: str
    usage: Usage | None = None
    text: list[str] = field(default_factory=list)  # non-empty pieces only: the first one marks the first token
    events: int = 0
    finished: bool = False  # the provider's final event came ([DONE], message_stop, response.completed, finishReason)

    def __post_init__(self):
        self._meter = FORMATS[self.dialect].meter

    def feed(self, data: str, event: str = "") -> bool:
        """Takes one SSE event's data. Returns True if this is an OpenAI usage-only chunk (no choices)."""
        self.events += 1
        if data == "[DONE]":
            self.finished = True
            return False
        if not data:
            return False
        try:
            obj = json.loads(data)
        except ValueError:
            return False
        return self._meter(self, obj) if isinstance(obj, dict) else False

    @property
    def streamed_text(self) -> str:
        return "".join(self.text)


# Both sides may send anything: a value of the wrong type deep inside is a TranslationError (the request is refused
# with 400, an answer becomes a 502), never a failure of the gateway.
_MALFORMED = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def translate_request(body: dict, client: str, upstream: str, model: str) -> tuple[dict, list[str]]:
    """The client's request body in the upstream's format, and the fields that had no counterpart there."""
    try:
        chat = FORMATS[client].parse_request(body)
        chat.model = model or chat.model
        rendered = FORMATS[upstream].render_request(chat)
    except TranslationError:
        raise
    except _MALFORMED as e:
        raise TranslationError(f"a field has a value of the wrong type ({type(e).__name__})") from None
    return rendered, chat.dropped


def translate_answer(body: dict, upstream: str, client: str) -> dict:
    try:
        return FORMATS[client].render_answer(FORMATS[upstream].parse_answer(body))
    except _MALFORMED as e:
        raise TranslationError(f"the provider's answer has an unexpected shape ({type(e).__name__})") from None


def translate_error(body, status: int, upstream: str, client: str) -> bytes:
    message = FORMATS[upstream].error_message(body) or f"the provider answered {status}"
    return FORMATS[client].error_body(status, message)


class StreamTranslator:
    """One upstream SSE event in, the client's events out."""

    def __init__(self, upstream: str, client: str, model: str):
        self.reader = FORMATS[upstream].StreamReader()
        self.writer = FORMATS[client].StreamWriter(model)
        self.odd_events = 0
        self.drop_usage_chunk = False  # an OpenAI client that did not ask for the usage chunk does not get it

    def __call__(self, name: str, data: str) -> list[bytes]:
        try:
            return [raw for event in self.reader(name, data) for raw in self.writer(event)]
        except _MALFORMED:  # not JSON, or not the provider's event shape: nothing the client's format could say
            self.odd_events += 1
            return []

    def end(self) -> list[bytes]:
        """The upstream stream ended: the client's stream is closed properly even if the provider's was not."""
        return self.writer(("end",))

    def is_usage_chunk(self, raw: bytes) -> bool:
        return raw is getattr(self.writer, "usage_chunk", None)


__all__ = ["ALL", "ANTHROPIC", "FORMATS", "GEMINI", "OPENAI", "StreamMeter", "StreamTranslator", "TranslationError",
           "Usage", "chat_endpoint", "of", "translatable", "translate_answer", "translate_error", "translate_request"]
