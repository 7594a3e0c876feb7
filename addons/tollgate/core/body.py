"""Request bodies as the gate reads them: decompressed with a bound, parsed strictly, whatever the Content-Type says.

A body the gate cannot read exactly the way the provider will is refused, never passed on unread: invalid UTF-8,
lone surrogates, duplicate keys (two readers may pick different ones), NaN/Infinity, nesting deeper than the limit.
Everything here takes and returns plain data and raises BodyError(status, code, message)."""

from __future__ import annotations

import json
import zlib
from urllib.parse import parse_qsl

# Endpoints whose uploads are forms (multipart/form-data or urlencoded); every other LLM endpoint takes JSON.
FORM_ENDPOINTS = ("/audio/transcriptions", "/audio/translations", "/files", "/uploads", "/parts",
                  "/images/edits", "/images/variations")
_CHUNK = 64 * 1024


class BodyError(ValueError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _too_large(limit: int) -> BodyError:
    return BodyError(413, "request_too_large", f"request body exceeds the gateway limit of {limit} bytes "
                                               f"once decompressed")


def _zlib(raw: bytes, wbits: int, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    out = decompressor.decompress(raw, limit + 1)  # at most limit + 1 bytes; the rest waits in unconsumed_tail
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _too_large(limit)
    if decompressor.unused_data:  # a second gzip member: read as one body by some servers, not by others
        raise BodyError(400, "invalid_encoding", "request body has data after the end of its compressed stream")
    return out


def decode(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding undone (gzip, deflate, br, zstd, or a chain of them), never producing more
    than limit bytes: the bound is checked while decompressing, so a small bomb costs at most limit of memory."""
    for name in reversed([e.strip().lower() for e in encoding.split(",") if e.strip()]):
        if name == "identity":
            continue
        try:
            if name in ("gzip", "x-gzip", "deflate"):
                wbits = 31 if name != "deflate" else (15 if raw[:1] == b"\x78" else -15)
                raw = _zlib(raw, wbits, limit)
            elif name == "br":
                raw = _brotli(raw, limit)
            elif name == "zstd":
                raw = _zstd(raw, limit)
            else:
                raise BodyError(415, "unsupported_encoding", f"unsupported Content-Encoding {name!r}")
        except BodyError:
            raise
        except Exception:  # zlib.error, brotli.error, zstd errors: the body is not what its header says
            raise BodyError(400, "invalid_encoding", f"request body is not valid {name} data") from None
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _brotli(raw: bytes, limit: int) -> bytes:
    import brotli

    decompressor = brotli.Decompressor()
    out = bytearray()
    for start in range(0, len(raw), _CHUNK):
        out += decompressor.process(raw[start:start + _CHUNK], output_buffer_limit=limit + 1 - len(out))
        while len(out) <= limit and not decompressor.can_accept_more_data():
            out += decompressor.process(b"", output_buffer_limit=limit + 1 - len(out))
        if len(out) > limit:
            raise _too_large(limit)
    return bytes(out)


def _zstd(raw: bytes, limit: int) -> bytes:
    import io

    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)) as reader:
        out = reader.read(limit + 1)
    if len(out) > limit:
        raise _too_large(limit)
    return out


def _no_constants(name: str):
    raise BodyError(400, "invalid_json", f"request body contains {name}, which is not JSON")


def _unique(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BodyError(400, "invalid_json", f"request body has the key {_safe(duplicate)!r} twice")
    return result


def _safe(text: str) -> str:
    return text[:40].encode("utf-8", "backslashreplace").decode()


def parse_json(data: bytes, max_depth: int):
    """The JSON document of a body, or BodyError. UTF-8 only (as RFC 8259 says for JSON on the wire)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError(400, "invalid_encoding", f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except ValueError as e:
        if isinstance(e, BodyError):
            raise
        raise BodyError(400, "invalid_json", f"request body is not valid JSON: {e.args[0].split(':')[0]}") from None
    check_tree(doc, max_depth)
    return doc


def _too_deep(max_depth: int) -> BodyError:
    return BodyError(400, "invalid_json", f"request body is nested deeper than {max_depth} levels")


def check_tree(doc, max_depth: int) -> None:
    """Nesting within max_depth, and every string (keys too) encodable as UTF-8: a lone surrogate escape such as
    \\ud800 parses in Python but breaks every later step that encodes text (scanners, hashes, the ledger)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise _too_deep(max_depth)
            for key, value in node.items():
                _check_text(key)
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                elif isinstance(value, str):
                    _check_text(value)
        elif isinstance(node, list):
            if depth > max_depth:
                raise _too_deep(max_depth)
            for value in node:
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                elif isinstance(value, str):
                    _check_text(value)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError(400, "invalid_encoding", "request body contains a lone surrogate (\\ud800-\\udfff), "
                                                     "which is not valid Unicode text") from None


def is_form_endpoint(path: str, content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in ("multipart/form-data", "application/x-www-form-urlencoded") and path.endswith(FORM_ENDPOINTS)


def parse_form(data: bytes, content_type: str) -> dict[str, str]:
    """The text fields of a form upload (file parts are left out: they are the payload, not parameters)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    fields: list[tuple[str, bytes]] = []
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = [(k, v.encode()) for k, v in parse_qsl(data.decode("utf-8"), keep_blank_values=True,
                                                           strict_parsing=False, errors="strict")]
        except UnicodeDecodeError:
            raise BodyError(400, "invalid_encoding", "form body is not valid UTF-8") from None
    else:
        from mitmproxy.net.http.multipart import decode_multipart

        try:
            parts = decode_multipart(content_type, data)
        except Exception:
            raise BodyError(400, "invalid_form", "multipart body cannot be parsed") from None
        fields = [(k.decode("utf-8", "replace"), v) for k, v in parts]
    result: dict[str, str] = {}
    for key, value in fields:
        if len(value) > 64 * 1024:  # a file part: not a parameter
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary: a file part
        _check_text(key)
        if key in result:
            raise BodyError(400, "invalid_form", f"form field {_safe(key)!r} appears twice")
        result[key] = text
    return result
