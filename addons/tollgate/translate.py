"""Answers of a translated call, back in the client's wire format (the request went out translated in Forward; a
stream is translated event by event in its tap, see stream.py). Request fields that had no counterpart at the
provider are named in x-tollgate-dropped. An answer that cannot be read is a 502 in the client's shape."""

from __future__ import annotations

import json

from tollgate.core import wire
from tollgate.core.dialects import error_body
from tollgate.flows import record_of

DROPPED_HEADER = "x-tollgate-dropped"


def _translated(flow):
    record = record_of(flow)
    if record is None or record.answered_here or not record.upstream_dialect:
        return None
    return record if record.upstream_dialect != record.dialect else None


class Translate:
    def responseheaders(self, flow):
        if (record := _translated(flow)) is not None and record.dropped:
            flow.response.headers[DROPPED_HEADER] = record.dropped

    def response(self, flow):
        record = _translated(flow)
        if record is None or record.tap is not None:
            return
        response = flow.response
        try:
            body = json.loads(response.get_content(strict=False) or b"null")
            if response.status_code >= 400:
                content = wire.translate_error(body, response.status_code, record.upstream_dialect, record.dialect)
            elif not isinstance(body, dict):
                raise ValueError("not a JSON object")
            else:
                answer = wire.translate_answer(body, record.upstream_dialect, record.dialect)
                content = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
        except (ValueError, UnicodeDecodeError):  # wire.TranslationError is a ValueError
            status = response.status_code if response.status_code >= 400 else 502
            message = f"provider {record.provider} answered {response.status_code} with a body the gateway cannot " \
                      f"translate for this client"
            response.status_code = status
            content = error_body(record.dialect, status, message, "upstream_error")
        response.headers["content-type"] = "application/json"
        response.headers.pop("content-encoding", None)
        response.content = content
