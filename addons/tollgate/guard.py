"""Prompt rules: every message, content part, system prompt and tool result (not JSON keys or model names), plus
the URL and chosen headers, scanned against the configured detectors, keywords and regexes. A `block` finding
refuses the call in the provider's error shape, naming the rule but never the secret; `log` findings are recorded
and the call goes on. Rules can be limited to groups or consumers."""

from __future__ import annotations

import asyncio

from tollgate.core.guard import scan, summary
from tollgate.core.tokens import prompt_text
from tollgate.flows import pending, reject

THREAD_ABOVE_CHARS = 50_000  # larger prompts are scanned off the event loop


class Guard:
    def __init__(self, settings):
        self.settings = settings

    async def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        if not config.guard_rules:
            return
        pieces = prompt_text(record.body)
        if config.guard_url:
            pieces.append(flow.request.path)
        pieces += [flow.request.headers.get(h, "") for h in config.guard_headers if h in flow.request.headers]
        args = (config.guard_rules, pieces, record.consumer, record.group)
        if sum(map(len, pieces)) > THREAD_ABOVE_CHARS:
            findings = await asyncio.to_thread(scan, *args)
        else:
            findings = scan(*args)
        if not findings:
            return
        record.guard = summary(findings)
        if blocking := next((f for f in findings if f.action == "block"), None):
            reject(flow, record, blocking.status, f"blocked by rule '{blocking.rule}' "
                                                  f"({blocking.count} finding{'s' if blocking.count > 1 else ''})",
                   code="content_blocked")
