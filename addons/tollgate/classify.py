"""Recognises LLM calls (a configured provider's host, or the reverse listener) and opens their record.

Everything else passes untouched. The JSON body is parsed here, once per flow; a malformed or oversized body is
refused before anything goes upstream."""

from __future__ import annotations

import json
import time

from mitmproxy.proxy import mode_specs

from tollgate.core.access import unapproved_entry
from tollgate.core.dialects import GEMINI, azure_path_parts, dialect_of_path, gemini_path_parts
from tollgate.core.record import METADATA_KEY, CallRecord
from tollgate.flows import reject


class Classify:
    def __init__(self, settings):
        self.settings = settings

    @staticmethod
    def _open(flow, dialect: str, path: str, source: str) -> CallRecord:
        record = CallRecord(
            id=flow.id,
            started_at=flow.request.timestamp_start or time.time(),
            client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else "",
            dialect=dialect,
            endpoint=path,
            source=source,
        )
        flow.metadata[METADATA_KEY] = record
        return record

    def _unapproved(self, flow, config, path: str) -> None:
        """A known AI provider the organisation has not configured: refused (403) or recorded and let through."""
        host = flow.request.pretty_host
        if not unapproved_entry(config.known_ai_hosts, host, path):
            return
        record = self._open(flow, dialect_of_path(path), path, host)
        record.provider = host
        message = f"provider not approved: {host} is not an AI provider approved by your organisation"
        if config.unapproved_providers == "record":
            record.untouched, record.decision, record.reason = True, "unapproved", message
            return
        reject(flow, record, 403, message, code="provider_not_approved")

    def request(self, flow):
        if flow.response or flow.error or not flow.live or METADATA_KEY in flow.metadata:
            return
        config = self.settings.config
        reverse = isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)
        source = None if reverse else config.provider_for_host(flow.request.host, flow.request.port)
        path = flow.request.path.split("?", 1)[0]
        if source is None and not reverse:
            return self._unapproved(flow, config, path)
        dialect = dialect_of_path(path)
        if source is not None and dialect not in source.spec.dialects:
            dialect = source.spec.dialects[0]
        record = self._open(flow, dialect, path, source.name if source else "")

        size = len(flow.request.raw_content or b"")
        if size > config.max_request_bytes:
            return reject(flow, record, 413, f"request body of {size} bytes exceeds the gateway limit of "
                                             f"{config.max_request_bytes} bytes", code="request_too_large")
        if size and "json" in flow.request.headers.get("content-type", "application/json"):
            try:
                record.body = json.loads(flow.request.get_content(strict=False) or b"")
            except (ValueError, UnicodeDecodeError) as e:
                return reject(flow, record, 400, f"request body is not valid JSON: {e}", code="invalid_json")
            if not isinstance(record.body, dict):
                record.body = None
                return reject(flow, record, 400, "request body must be a JSON object", code="invalid_json")

        body = record.body or {}
        if dialect == GEMINI and (parts := gemini_path_parts(path)):
            record.requested_model = parts[0]
            record.streamed = parts[1] == "streamGenerateContent"
        else:
            model = body.get("model")
            if source is not None and source.spec.deployment_paths and (parts := azure_path_parts(path)):
                record.requested_model = parts[0]  # Azure: the deployment in the path is what answers
            elif isinstance(model, str):
                record.requested_model = model
            record.streamed = body.get("stream") is True
