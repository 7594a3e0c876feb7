"""AI transformation at the gate (core/transform.py): for flows to the hosts listed under `transform:` (decrypted
only because they are listed; every other host stays a tunnel), the request and/or the response is shown to a model
as an HTTP message with the rule's prompt, and the model's answer replaces it once it reads as a valid HTTP message
(headers checked, Content-Length recomputed, body bounded). An invalid answer, a timeout or a failing model leaves
the original untouched (`on_error: passthrough`) or answers 502 (`fail`). Results are cached by the digest of prompt
and message; each model call is a ledger row (system:transform); mitmweb shows which rule transformed a flow."""

from __future__ import annotations

import logging

from mitmproxy import http

from tollgate.core.transform import (SYSTEM_PROMPT, Invalid, cache_key, kept_credentials, parse_message,
                                     render_message)
from tollgate.flows import record_of

log = logging.getLogger("tollgate")
CONSUMER = "system:transform"


class Transformer:
    def __init__(self, settings, calls):
        self.settings = settings
        self.calls = calls

    @staticmethod
    def active(config) -> bool:  # the pipeline leaves it out while no transform rule is set
        return bool(config.transform)

    def _rule(self, flow, side: str):
        if record_of(flow) is not None:  # LLM calls are the gateway's own business
            return None
        request = flow.request
        for rule in self.settings.config.transform:
            prompt = rule.request_prompt if side == "request" else rule.response_prompt
            if prompt and rule.matches(request.pretty_host, request.port, request.path):
                return rule
        return None

    def request(self, flow):
        if flow.response or flow.error or (rule := self._rule(flow, "request")) is None:
            return None
        return self._rewrite(flow, rule, "request")

    def response(self, flow):
        if flow.response is None or (rule := self._rule(flow, "response")) is None:
            return None
        return self._rewrite(flow, rule, "response")

    async def _rewrite(self, flow, rule, side: str) -> None:
        message = flow.request if side == "request" else flow.response
        text = message.get_text(strict=False)
        if text is None or len(message.raw_content or b"") > rule.max_bytes:
            return
        start_line = (f"{flow.request.method} {flow.request.path} HTTP/1.1" if side == "request"
                      else f"HTTP/1.1 {flow.response.status_code} {flow.response.reason}")
        parsed = await self._transform(flow, rule, side, render_message(start_line, list(message.headers.items()), text))
        if parsed is None:
            return
        start, headers, body = parsed
        headers += kept_credentials(list(message.headers.items()))  # never shown to the model, never dropped
        parts = start.split(" ", 2)
        if side == "request":
            flow.request.method, flow.request.path = parts[0], parts[1]
        else:
            flow.response.status_code, flow.response.reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        message.headers = http.Headers([(k.encode(), v.encode()) for k, v in headers])
        message.content = body  # sets Content-Length to the new body's

    async def _transform(self, flow, rule, side: str, message: str):
        key = cache_key(rule, side, message)
        store = self.settings.store()
        answer = (await store.lookup(key) or b"").decode("utf-8", "replace")
        try:
            if not answer:
                prompt = rule.request_prompt if side == "request" else rule.response_prompt
                reply, row = await self.calls.post(rule.provider, "/v1/chat/completions", {
                    "model": rule.model, "temperature": 0, "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": f"{prompt}\n\n{message}"}]},
                    consumer=CONSUMER, timeout=rule.timeout_s)
                if reply is None:
                    raise Invalid(f"the model failed: {row.reason}")
                answer = reply["choices"][0]["message"]["content"]
                if not isinstance(answer, str):
                    raise Invalid("the model's answer has no text")
            parsed = parse_message(answer, side, rule.max_bytes)
        except (Invalid, KeyError, IndexError, TypeError) as e:
            log.warning("tollgate: transformation %s of a %s failed: %s (%s)", rule.name, side, e,
                        "502" if rule.on_error == "fail" else "original kept")
            flow.comment = f"transformation {rule.name} failed: {str(e)[:120]}"
            if rule.on_error == "fail":
                flow.response = http.Response.make(502, f"transformation {rule.name} failed\n",
                                                   {"content-type": "text/plain"})
            return None
        store.set_later(key, answer.encode(), rule.cache_ttl_s)
        flow.comment = f"{side} transformed by {rule.name}"
        flow.marked = ":sparkles:"
        return parsed
