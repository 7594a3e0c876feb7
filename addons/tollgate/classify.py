"""Recognises LLM calls and opens their record; reads their body, once, strictly.

A flow is an LLM call when any name it carries (the CONNECT target or URL host, the Host header, the TLS SNI) is a
configured provider, in any spelling (case, trailing dot, default port), or when it came in on the reverse
listener. Names that disagree (an IP with a provider's SNI, a provider's Host header on another host) are refused
with 421 rather than guessed at; plain HTTP to a provider that speaks HTTPS is refused with a hint. A known AI host
that is not a configured provider is refused (403) or recorded. Everything else passes untouched.

The body is decompressed with a bound, parsed whatever its Content-Type claims (JSON, or the form of an upload
endpoint), and checked (UTF-8, no lone surrogates, no duplicate keys, no NaN, nesting within the limit) before any
other step sees it. What goes upstream is the body that was checked, uncompressed."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from mitmproxy.proxy import mode_specs

from tollgate.core.access import unapproved_entry
from tollgate.core.credentials import path_without_key
from tollgate.core.body import BodyError, decode, is_form_endpoint, parse_form, parse_json
from tollgate.core.dialects import GEMINI, azure_path_parts, dialect_of_path, gemini_path_parts
from tollgate.core.providers import split_host
from tollgate.core.record import CallRecord, Decision
from tollgate import internals
from tollgate.flows import (THREAD_ABOVE_CHARS, HeaderView, host_header, off_loop_if, open_record, pending,
                            record_of, reject, strip_credentials)

NO_BODY_METHODS = ("GET", "HEAD", "DELETE", "OPTIONS")


def _names(flow) -> list[tuple[str, int]]:
    """Every (host, port) the flow names: URL/CONNECT target, Host header, SNI."""
    request = flow.request
    names = [(request.host, request.port)]
    if host := host_header(request):
        names.append(split_host(host, request.port))
    if sni := flow.client_conn.sni:
        names.append((sni, request.port))
    if request.scheme == "http":  # http://api.openai.com is still OpenAI (and refused: it must be https)
        names = [(host, 443 if port == 80 else port) for host, port in names]
    return names


class Classify:
    def __init__(self, settings):
        self.settings = settings

    def load(self, loader):
        internals.request_limit = self._request_limit
        internals.too_large = self._too_large

    def _request_limit(self, flow) -> int | None:
        return self.settings.config.max_request_bytes if self.is_gate_flow(flow) else None

    @staticmethod
    def _too_large(flow, message: str) -> None:
        strip_credentials(flow.request.headers)  # it goes no further, and must not show in the log either
        if (record := record_of(flow)) is not None:
            record.status, record.decision, record.reason = 413, Decision.REJECTED, message
            record.answered_here = True

    def is_gate_flow(self, flow) -> bool:
        """Does the gateway own this flow (decided from the request head alone)? Its body limit then applies."""
        if record_of(flow) is not None or isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return True
        config = self.settings.config
        path = flow.request.path.split("?", 1)[0]
        return any(config.provider_for_host(host, port) or unapproved_entry(config.known_ai_hosts, host, path)
                   for host, port in _names(flow))

    def _open(self, flow, dialect: str, path: str, source: str) -> CallRecord:
        record = CallRecord(
            id=flow.id,
            started_at=flow.request.timestamp_start or time.time(),
            client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else "",
            dialect=dialect,
            endpoint=path,
            source=source,
            client_url=(flow.request.scheme, flow.request.host, flow.request.port, path_without_key(flow.request.path, self.settings.config.key_sources.params)),
        )
        return open_record(flow, record)

    def requestheaders(self, flow):
        if flow.response or flow.error or record_of(flow) is not None:
            return
        config = self.settings.config
        path = flow.request.path.split("?", 1)[0]
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            self._open(flow, dialect_of_path(path), path, "")
            return
        names = _names(flow)
        named = {getattr(config.provider_for_host(host, port), "name", None) for host, port in names}
        if named == {None}:
            return self._unapproved(flow, config, path, names)
        source = config.providers[next(name for name in named if name is not None)]
        dialect = dialect_of_path(path)
        record = self._open(flow, dialect if dialect in source.spec.dialects else source.spec.dialects[0], path,
                            source.name)
        if len(named) > 1:
            spelled = ", ".join(sorted({f"{host}:{port}" for host, port in names}))
            return reject(flow, record, 421, f"misdirected request: the connection names several hosts ({spelled}); "
                                             f"call the provider by its name", code="misdirected_request")
        if flow.request.scheme == "http" and source.base_url.startswith("https:"):
            return reject(flow, record, 400, f"plain HTTP to {source.name} is refused: use https://",
                          code="https_required")

    def _unapproved(self, flow, config, path: str, names) -> None:
        """A known AI provider the organisation has not configured: refused (403) or recorded and let through."""
        entry_host = next((host for host, _ in names if unapproved_entry(config.known_ai_hosts, host, path)), None)
        if entry_host is None:
            return
        record = self._open(flow, dialect_of_path(path), path, entry_host)
        record.provider = entry_host
        message = f"provider not approved: {entry_host} is not an AI provider approved by your organisation"
        if config.unapproved_providers == "record":
            record.untouched, record.decision, record.reason = True, Decision.UNAPPROVED, message
            return
        reject(flow, record, 403, message, code="provider_not_approved")

    async def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        request = flow.request
        raw = request.raw_content or b""
        if len(raw) > config.max_request_bytes:  # the transport refuses earlier; this holds without it too
            return reject(flow, record, 413, f"request body of {len(raw)} bytes exceeds the gateway limit of "
                                             f"{config.max_request_bytes} bytes", code="request_too_large")
        headers = record.client_headers = HeaderView(request.headers)  # read once (its credentials are gone)
        content_type = headers.get("content-type", "")
        form = is_form_endpoint(record.endpoint, content_type)
        try:
            encoding = headers.get("content-encoding", "")
            data = await off_loop_if(len(raw) > THREAD_ABOVE_CHARS, decode, raw, encoding, config.max_request_bytes) \
                if encoding else raw
            if encoding:  # upstream gets exactly the bytes that were checked
                del request.headers["content-encoding"]
                request.content = data  # (and a Content-Length that says so)
            if not data and request.method.upper() in NO_BODY_METHODS:
                body = None
            elif form:
                body = parse_form(data, content_type)
            else:
                body = await off_loop_if(len(data) > THREAD_ABOVE_CHARS, parse_json, data, config.max_json_depth)
                if not isinstance(body, dict):
                    raise BodyError(400, "invalid_json", "request body must be a JSON object")
            if form:
                record.form = body
            else:
                record.body = body
            # A call without a body (a realtime handshake) names its model in the query.
            self._model(record, body if body is not None else dict(parse_qsl(request.path.partition("?")[2])))
        except BodyError as e:
            # Shown as bytes from now on: text views (the log at flow_detail 3+, mitmweb) would choke on it, and a
            # viewer must not decompress a bomb either.
            request.headers["content-type"] = "application/octet-stream"
            if "content-encoding" in request.headers:
                request.headers["x-refused-content-encoding"] = request.headers.pop("content-encoding")
            return reject(flow, record, e.status, e.message, code=e.code)

    def _model(self, record: CallRecord, body: dict) -> None:
        path = record.endpoint
        source = self.settings.config.providers.get(record.source)
        if record.dialect == GEMINI and (parts := gemini_path_parts(path)):
            record.requested_model = parts[0]
            record.streamed = parts[1] == "streamGenerateContent"
            return
        model = body.get("model", body.get("deployment"))  # Azure realtime names its deployment in the query
        if model is not None and not isinstance(model, str):
            raise BodyError(400, "invalid_request", "model must be a string")
        if source is not None and source.spec.deployment_paths and (parts := azure_path_parts(path)):
            record.requested_model = parts[0]  # Azure: the deployment in the path is what answers
        elif model:
            record.requested_model = model
        record.streamed = body.get("stream") is True
