"""The answer's way back: originals of masked prompt findings restored, and answers moderated under `moderation:`.

A plain answer that violates a rule is replaced by a refusal in the provider's shape (200, finish reason
content_filter / stop_reason refusal / finishReason SAFETY); a streamed one is cut at the violating event and ended
with a refusal event and a clean finish. Withheld answers are not cached."""

from __future__ import annotations

import json

from tollgate.core.answers import Moderator, Restorer, StreamEditor, answer_slots, refuse_answer
from tollgate.flows import record_of


class AnswerGuard:
    def __init__(self, settings):
        self.settings = settings

    def _rules(self, record) -> tuple:
        moderation = self.settings.config.moderation
        if moderation is None:
            return ()
        return tuple(r for r in moderation.rules if r.applies_to(record.consumer, record.group))

    def responseheaders(self, flow):
        record = record_of(flow)
        if record is None or record.tap is None or record.answered_here or flow.response.status_code != 200:
            return
        rules = self._rules(record)
        if not rules and not record.masked:
            return
        moderation = self.settings.config.moderation  # None when only masking: rules is empty then
        record.tap.editor = StreamEditor(record.dialect, record.masked or {}, rules,
                                         *((moderation.window, moderation.refusal) if rules else (0, "")))

    def response(self, flow):
        record = record_of(flow)
        if record is None or record.answered_here or flow.response.status_code != 200:
            return
        if record.tap is not None:
            if record.tap.editor is not None and record.tap.editor.violated:
                self._withheld(record, record.tap.editor.violated.name, "cut")
            return
        rules = self._rules(record)
        if not rules and not record.masked:
            return
        original = text = flow.response.get_text(strict=False)
        if text is None:
            return
        if record.masked:
            text = Restorer(record.masked).restore_json(text)
        if rules:
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            answer = "".join(container[key] for container, key in answer_slots(record.dialect, body))
            rule, _ = Moderator(rules, 0).violation(answer)
            if rule:
                refuse_answer(record.dialect, body, self.settings.config.moderation.refusal.format(rule=rule.name))
                text = json.dumps(body, ensure_ascii=False)
                self._withheld(record, rule.name, "refused")
        if text != original:
            flow.response.text = text

    @staticmethod
    def _withheld(record, rule: str, how: str) -> None:
        record.moderation = f"{rule}:{how}"
        record.decision = "moderated"
        record.reason = f"answer withheld by moderation rule '{rule}'"
