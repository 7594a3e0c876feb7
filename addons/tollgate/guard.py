"""Prompt rules: every message, content part, system prompt and tool result (not JSON keys or model names), plus
the URL and chosen headers, scanned against the configured detectors, keywords and regexes. A `block` finding
refuses the call in the provider's error shape, naming the rule but never the secret; a `mask` finding is replaced
by a placeholder before the request leaves (AnswerGuard puts the original back into the answer); `log` findings are
recorded and the call goes on. Rules can be limited to groups or consumers.

A `mask` finding that cannot be masked in place (split across two messages, or in the URL or a header) blocks the
call: sending it on would leak it, and rewriting the URL or headers would break the call."""

from __future__ import annotations

from tollgate.core.guard import mask, scan, summary
from tollgate.core.tokens import prompt_slots
from tollgate.flows import THREAD_ABOVE_CHARS, off_loop_if, pending, reject


class Guard:
    def __init__(self, settings):
        self.settings = settings

    async def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        if not config.guard_rules:
            return
        slots = prompt_slots(record.body)
        prompt = [container[key] for container, key in slots]
        others = [flow.request.path] if config.guard_url else []
        others += list(record.form.values()) if record.form else []  # an upload's text fields (e.g. a prompt)
        others += [flow.request.headers[h] for h in config.guard_headers if h in flow.request.headers]
        large = sum(map(len, prompt)) > THREAD_ABOVE_CHARS
        findings = await off_loop_if(large, scan, config.guard_rules, prompt + others, record.consumer, record.group)
        if not findings:
            return
        record.guard = summary(findings)
        if blocking := next((f for f in findings if f.action == "block"), None):
            return self._block(flow, record, blocking.rule, blocking.status, blocking.count)
        if not any(f.action == "mask" for f in findings):
            return
        masked, originals = await off_loop_if(large, mask, config.guard_rules, prompt, record.consumer, record.group)
        leftover = await off_loop_if(large, scan, tuple(r for r in config.guard_rules if r.action == "mask"),
                                     [_without(text, originals) for text in masked] + others, record.consumer,
                                     record.group)
        if leftover:  # across pieces or outside the prompt: cannot be replaced in place
            return self._block(flow, record, leftover[0].rule, leftover[0].status, leftover[0].count,
                               " that cannot be masked (split across messages, or in the URL or a header)")
        for (container, key), text in zip(slots, masked):
            container[key] = text
        record.masked = originals
        record.body_changed = True

    @staticmethod
    def _block(flow, record, rule: str, status: int, count: int, why: str = "") -> None:
        reject(flow, record, status, f"blocked by rule '{rule}' ({count} finding{'s' if count > 1 else ''}{why})",
               code="content_blocked")


def _without(text: str, placeholders: dict) -> str:
    for placeholder in placeholders:
        text = text.replace(placeholder, " ")
    return text
