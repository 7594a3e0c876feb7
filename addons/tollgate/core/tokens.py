"""Token counting with tiktoken: the encoding of each model family, and estimates of prompts and streamed text.

OpenAI models are counted with their own encoding (o200k_base for gpt-4o, gpt-4.1, o-series and gpt-5;
cl100k_base for gpt-4 and gpt-3.5). Other providers publish no tokenizer; their text is counted with cl100k_base,
which lands within about 10-20 % of their own counts for English text and code, and is documented as an estimate.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss", "codex")
_encodings: dict[str, object] = {}
_lock = threading.Lock()


def encoding_name(model: str) -> str:
    model = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" on OpenRouter
    return "o200k_base" if model.startswith(_O200K_PREFIXES) else "cl100k_base"


def preload() -> None:
    """Loads both encodings (reads files, builds tables: ~1 s of CPU). Call from a thread at start-up."""
    for name in ("o200k_base", "cl100k_base"):
        _load(name)


def _load(name: str):
    with _lock:
        if name not in _encodings:
            try:
                import tiktoken

                _encodings[name] = tiktoken.get_encoding(name)
            except Exception as e:  # no network and no cache: fall back to the 4-characters rule
                log.warning("tiktoken encoding %s unavailable (%s); estimating 4 characters per token", name, e)
                _encodings[name] = None
        return _encodings[name]


def count_text(model: str, text: str) -> int:
    if not text:
        return 0
    name = encoding_name(model)
    enc = _encodings.get(name, False)
    if enc is False:  # not preloaded yet: never load on the event loop, estimate instead
        enc = None
    if enc is None:
        return max(1, (len(text) + 3) // 4)
    return len(enc.encode(text, disallowed_special=()))


def prompt_slots(body: dict | None) -> list[tuple[object, object]]:
    """Where the prompt text of a request body sits, as (container, key) pairs with container[key] a string:
    messages, content parts, system prompts, tool results (never JSON keys or model names)."""
    if not isinstance(body, dict):
        return []
    slots: list[tuple[object, object]] = []
    # depth first, in document order; an explicit stack, not a recursive closure (that is a reference cycle a call)
    stack = [(body, key) for key in reversed(_TOP_KEYS) if key in body]
    while stack:
        container, key = stack.pop()
        node = container[key]
        if isinstance(node, str):
            slots.append((container, key))
        elif isinstance(node, list):
            stack.extend((node, i) for i in range(len(node) - 1, -1, -1))
        elif isinstance(node, dict):
            stack.extend((node, k) for k in reversed(_PART_KEYS) if k in node)
    return slots


_TOP_KEYS = ("messages", "system", "prompt", "input", "contents", "systemInstruction", "instructions")
_PART_KEYS = ("text", "content", "input", "prompt", "parts", "system", "arguments", "output")


def prompt_text(body: dict | None) -> list[str]:
    """Every piece of prompt text in a request body, in order."""
    return [container[key] for container, key in prompt_slots(body)]


def estimate_prompt(model: str, body: dict | None, bound_below: int = 0) -> int:
    """Prompt tokens of a request: its text plus OpenAI's per-message framing (3 per message, 3 to prime).
    bound_below: a piece shorter than this many characters counts as many tokens as it has UTF-8 bytes, an upper
    bound (a token is at least one byte) without the tokenizer, for a reservation's worst case."""
    pieces = prompt_text(body)
    messages = body.get("messages") if isinstance(body, dict) else None
    framing = 3 * len(messages) + 3 if isinstance(messages, list) else 0
    return sum(len(p.encode("utf-8", "surrogatepass")) if len(p) < bound_below else count_text(model, p)
               for p in pieces) + framing
