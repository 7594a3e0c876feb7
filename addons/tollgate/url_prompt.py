"""Seed 000's prompt-in-URL endpoint (core/url_prompt.py), on the reverse listener only: the GET is turned into a
chat completion before the gateway reads it (so authentication, the guard, limits, the cache and the ledger treat it
as one), and its answer is turned into plain text (or a small JSON) once every step is done with it."""

from __future__ import annotations

import json
import weakref

from mitmproxy.proxy import mode_specs

from tollgate.core.url_prompt import ENDPOINT, as_chat, render
from tollgate.flows import record_of


class UrlPromptIn:
    """Before Classify: GET /?text=… becomes POST /v1/chat/completions."""

    def __init__(self, settings):
        self.settings = settings
        self._bodies: "weakref.WeakKeyDictionary[object, bytes]" = weakref.WeakKeyDictionary()

    @staticmethod
    def active(config) -> bool:  # the pipeline leaves it out while url_prompt is unset
        return config.url_prompt is not None

    def requestheaders(self, flow):
        config = self.settings.config.url_prompt
        request = flow.request
        if config is None or request.method != "GET" or \
                not isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return
        path, _, query = request.path.partition("?")
        chat = as_chat(config, path, query)
        if chat is None:
            return
        rest, body = chat
        request.method, request.path = "POST", ENDPOINT + (f"?{rest}" if rest else "")
        request.headers["content-type"] = "application/json"
        self._bodies[flow] = body

    def request(self, flow):
        if (body := self._bodies.pop(flow, None)) is not None:
            flow.request.content = body  # read by Classify as any body is (the GET's own body, if any, is gone)
            if (record := record_of(flow)) is not None:
                record.url_prompt = True


class UrlPromptOut:
    """After the cache and the meter: the answer in the endpoint's output form (errors stay in OpenAI's shape)."""

    def __init__(self, settings):
        self.settings = settings

    @staticmethod
    def active(config) -> bool:  # the pipeline leaves it out while url_prompt is unset
        return config.url_prompt is not None

    def response(self, flow):
        record = record_of(flow)
        config = self.settings.config.url_prompt
        if record is None or not record.url_prompt or config is None or flow.response.status_code != 200:
            return
        try:
            answer = json.loads(flow.response.get_content(strict=False) or b"null")
        except (ValueError, UnicodeDecodeError):
            return
        content_type, body = render(config, answer)
        flow.response.headers["content-type"] = content_type
        flow.response.content = body
