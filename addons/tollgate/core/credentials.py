"""Where clients put their API key, and which consumer a key belongs to."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl

from .config import Consumer, key_digest
from .providers import CREDENTIAL_HEADERS


def client_key(headers, query: str) -> str:
    """The key a client sent, from any header an SDK uses or Gemini's ?key=; '' if none.
    The scheme word is optional: 'Bearer k', 'bearer k' and a bare 'k' are the same key."""
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            scheme, _, rest = value.partition(" ")
            return rest.strip() if scheme.lower() == "bearer" else value
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "key" and value:
            return value
    return ""


WEBSOCKET_KEY_PREFIX = "openai-insecure-api-key."  # browsers cannot set headers on a WebSocket: the key rides here


def websocket_key(protocols: str) -> tuple[str, str]:
    """(key, the Sec-WebSocket-Protocol value without it) of a WebSocket handshake; ('', protocols) if none."""
    items = [p.strip() for p in protocols.split(",") if p.strip()]
    key = next((p[len(WEBSOCKET_KEY_PREFIX):] for p in items if p.startswith(WEBSOCKET_KEY_PREFIX)), "")
    return key, ", ".join(p for p in items if not p.startswith(WEBSOCKET_KEY_PREFIX))


def without_key_param(query: str) -> str:
    return "&".join(p for p in query.split("&") if p and p.split("=", 1)[0] != "key")


def path_without_key(path: str) -> str:
    """A request path with Gemini's ?key= taken out of its query."""
    path, _, query = path.partition("?")
    return path + (f"?{q}" if (q := without_key_param(query)) else "")


def find_consumer(by_digest: dict[str, Consumer], key: str) -> Consumer | None:
    """Looks the key up by its SHA-256 digest, then confirms in constant time. Timing can at most reveal something
    about digests, which says nothing usable about keys."""
    digest = key_digest(key)
    consumer = by_digest.get(digest)
    return consumer if consumer is not None and hmac.compare_digest(consumer.key_sha256, digest) else None
