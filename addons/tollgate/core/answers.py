"""What the client gets back: masked originals restored, and answers moderated, plain or streamed.

A streamed answer is edited event by event. Each text channel (an OpenAI choice, an Anthropic content block, a
Gemini candidate) passes its deltas through a restorer and a moderator; each holds back only what it must: the
restorer a tail that could be the start of a placeholder, the moderator a tail that could be the start of a denied
term (and `window` characters for regexes and detectors, whose match length is unknown). Held text is released when
more text proves it harmless, or when the channel closes. A violation cuts the stream at that event: the text before
it is sent, then a refusal in the provider's own stream shape, and nothing after it."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

from . import wire
from .guard import Rule, normalise, parse_text_rules
from .sse import parse_event
from .wire.common import sse as _event
from .schema import ConfigError, mapping, string

DEFAULT_REFUSAL = "[answer withheld by the gateway: content policy '{rule}']"


class Restorer:
    """Placeholders back to the originals they stand for."""

    def __init__(self, originals: dict[str, str]):
        self.originals = originals
        self._pattern = re.compile("|".join(map(re.escape, sorted(originals, key=len, reverse=True))))
        self._held = ""

    def restore(self, text: str) -> str:
        return self._pattern.sub(lambda m: self.originals[m.group(0)], text) if self.originals else text

    def restore_json(self, text: str) -> str:
        """In JSON text: originals inserted as JSON string content (a private key's newlines stay escaped)."""
        if not self.originals:
            return text
        return self._pattern.sub(lambda m: json.dumps(self.originals[m.group(0)], ensure_ascii=False)[1:-1], text)

    def feed(self, text: str) -> str:
        text, self._held = self._held + text, ""
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and any(p.startswith(text[cut:]) for p in self.originals):
            text, self._held = text[:cut], text[cut:]
        return self.restore(text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class Moderator:
    """Deny rules over text that arrives in pieces. feed() returns (text safe to release, violated rule or None)."""

    def __init__(self, rules: tuple[Rule, ...], window: int):
        self.rules = rules
        self.window = window if any(r.detectors or r.regexes for r in rules) else 0
        self._terms = sorted({k if r.case_sensitive else k.casefold() for r in rules for k in r.keywords},
                             key=len, reverse=True)
        self._pending = ""

    def violation(self, text: str, final: bool = True) -> tuple[Rule | None, int]:
        """The first rule text violates and where the match starts. A whole-word match that touches the end of
        unfinished text is not one yet (more letters may follow); the second value then says where to hold from."""
        text = normalise(text)
        hold_from = len(text)
        for rule in self.rules:
            for start, end, _ in rule.spans(text):
                if final or end < len(text) or not rule.whole_word:
                    return rule, start
                hold_from = min(hold_from, start)
        return None, hold_from

    def feed(self, text: str, final: bool = False) -> tuple[str, Rule | None]:
        pending = self._pending + text
        rule, at = self.violation(pending, final)
        if rule is not None:
            self._pending = ""
            return (pending[:at] if normalise(pending) == pending else ""), rule
        keep = 0 if final else max(self._term_prefix(pending), min(self.window, len(pending)), len(pending) - at)
        self._pending = pending[len(pending) - keep:]
        return pending[:len(pending) - keep], None

    def _term_prefix(self, text: str) -> int:
        """Length of the longest tail of text that is the start of a denied term."""
        if not self._terms:
            return 0
        tail = normalise(text[-len(self._terms[0]):])
        for n in range(min(len(tail), len(self._terms[0]) - 1), 0, -1):
            piece = tail[-n:]
            if any(t.startswith(piece) or t.startswith(piece.casefold()) for t in self._terms):
                return n
        return 0


class _Channel:
    def __init__(self, restorer: Restorer | None, moderator: Moderator | None):
        self.restorer = restorer
        self.moderator = moderator
        self.template: tuple[dict, tuple, str] | None = None  # last delta event: (object, text path, event name)

    def feed(self, text: str, final: bool) -> tuple[str, Rule | None]:
        if self.restorer:
            text = self.restorer.feed(text) + (self.restorer.flush() if final else "")
        if self.moderator:
            return self.moderator.feed(text, final)
        return text, None

    def flush(self) -> tuple[str, Rule | None]:
        return self.feed("", final=True)


# --- where the text sits: each wire format says (wire/*.py) -------------------------------------------------------

ALL = wire.ALL  # "every channel"


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _set(obj, path, value):
    _get(obj, path[:-1])[path[-1]] = value


def stream_deltas(dialect: str, obj: dict) -> tuple[list[tuple[object, tuple, bool]], object]:
    """([(channel, path to the delta text, channel ends here)], channels this event closes: a list or ALL)."""
    return wire.of(dialect).stream_deltas(obj)


def refusal_events(dialect: str, template: dict, path: tuple, name: str, channel, message: str) -> list[bytes]:
    """The end of a cut stream, in the provider's stream shape: the refusal text, then a clean finish."""
    return wire.of(dialect).refusal_events(template, path, name, channel, message)


class StreamEditor:
    """Called by the stream tap with each upstream event; returns the events the client gets instead."""

    def __init__(self, dialect: str, originals: dict[str, str], rules: tuple[Rule, ...], window: int,
                 refusal: str = DEFAULT_REFUSAL):
        self.dialect = dialect
        self.originals = originals
        self.rules = rules
        self.window = window
        self.refusal = refusal
        self.channels: dict[object, _Channel] = {}
        self.violated: Rule | None = None
        self._restorer = Restorer(originals) if originals else None

    def _channel(self, key) -> _Channel:
        if key not in self.channels:
            self.channels[key] = _Channel(Restorer(self.originals) if self.originals else None,
                                          Moderator(self.rules, self.window) if self.rules else None)
        return self.channels[key]

    def event(self, raw: bytes) -> list[bytes]:
        if self.violated:
            return []
        name, data = parse_event(raw)
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict):  # "[DONE]" and the like: every channel is over
            return self._close(list(self.channels)) + [raw]
        deltas, closes = stream_deltas(self.dialect, obj)
        if not deltas:
            out = self._close(list(self.channels) if closes is ALL else closes)
            if self.violated:
                return out
            if self._restorer and any(p in data for p in self.originals):  # e.g. the full text in a done event
                raw = _event(name, self._restorer.restore_json(data))
            return out + [raw]
        changed = False
        for key, path, final in deltas:
            channel = self._channel(key)
            text = _get(obj, path)
            out, rule = channel.feed(text, final)
            channel.template = (obj, path, name)
            if out != text:
                _set(obj, path, out)
                changed = True
            if rule:
                return self._cut(obj, name, path, key, rule)
        return [_event(name, obj) if changed else raw]

    def end(self) -> list[bytes]:
        """The upstream stream ended: whatever is still held goes out (or a refusal, if it violates)."""
        return [] if self.violated else self._close(list(self.channels))

    def _close(self, keys) -> list[bytes]:
        out = []
        for key in keys:
            channel = self.channels.get(key)
            if channel is None or channel.template is None:
                continue
            text, rule = channel.flush()
            if not text and not rule:
                continue
            template, path, name = channel.template
            obj = copy.deepcopy(template)
            _set(obj, path, text)
            if rule:
                return out + self._cut(obj, name, path, key, rule)
            out.append(_event(name, obj))
        return out

    def _cut(self, obj: dict, name: str, path: tuple, channel, rule: Rule) -> list[bytes]:
        self.violated = rule
        head = [_event(name, obj)] if _get(obj, path) else []
        return head + refusal_events(self.dialect, obj, path, name, channel, self.refusal.format(rule=rule.name))


# --- plain answers -------------------------------------------------------------------------------------------------

def answer_slots(dialect: str, body) -> list[tuple[object, object]]:
    """Where the answer text of a complete response sits, as (container, key) pairs."""
    if isinstance(body, list):  # Gemini's streamGenerateContent without alt=sse: an array of responses
        return [slot for item in body for slot in answer_slots(dialect, item)]
    if not isinstance(body, dict):
        return []
    return [(c, k) for c, k in wire.of(dialect).answer_items(body) if isinstance(c.get(k), str)]


def refuse_answer(dialect: str, body, message: str) -> None:
    """Replaces the answer text of a complete response by the refusal (in place), and says why it stopped."""
    slots = answer_slots(dialect, body)
    for i, (container, key) in enumerate(slots):
        container[key] = message if i == 0 else ""
    for item in body if isinstance(body, list) else [body]:
        if isinstance(item, dict):
            wire.of(dialect).mark_refused(item)


@dataclass(frozen=True)
class Moderation:
    rules: tuple                      # core.guard.Rule, compiled (terms are their keywords)
    refusal: str                      # what the client gets instead; {rule} names the rule
    window: int = 64                  # characters of a stream held back while regexes/detectors may still match


def parse_moderation(node, groups: dict, consumer_names: set[str]) -> Moderation | None:
    if node is None:
        return None
    node = mapping(node, "moderation", {"rules", "refusal", "window"})
    refusal = string(node.get("refusal", DEFAULT_REFUSAL), "moderation.refusal")
    try:
        refusal.format(rule="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError("moderation.refusal: only {rule} may appear in braces") from None
    window = node.get("window", 64)
    if not isinstance(window, int) or not 0 <= window <= 4096:
        raise ConfigError(f"moderation.window: expected characters between 0 and 4096, got {window!r}")
    rules = parse_text_rules(node.get("rules"), "moderation.rules", groups, consumer_names, "terms", ())
    return Moderation(rules, refusal, window) if rules else None
