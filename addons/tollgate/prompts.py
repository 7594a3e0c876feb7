"""Prompt templates and decorators: a template call ({"template": name, "properties": {...}}) is expanded into a
normal request (400 naming an unknown template or a missing property), then the decorators that match the model,
group or consumer add their messages. Runs after authentication, so only consumers learn template names."""

from __future__ import annotations

from tollgate.core.prompts import PromptError, decorate, expand, is_template_call
from tollgate.flows import pending, reject


class Prompts:
    def __init__(self, settings):
        self.settings = settings

    def request(self, flow):
        if not (record := pending(flow)) or record.body is None:
            return
        prompts = self.settings.config.prompts
        applied = []
        if is_template_call(record.body):
            name = record.body["template"]
            try:
                record.body = expand(prompts.templates, record.body)
            except PromptError as e:
                return reject(flow, record, 400, str(e), code="invalid_template")
            applied.append(f"template:{name}")
            if not record.requested_model and isinstance(record.body.get("model"), str):
                record.requested_model = record.body["model"]
            record.streamed = record.streamed or record.body.get("stream") is True
        if prompts.decorators:
            applied += [f"decorator:{name}" for name in decorate(
                record.dialect, record.endpoint, record.body, prompts.decorators, record.requested_model,
                record.consumer, record.group)]
        if applied:
            record.prompts = ", ".join(applied)
            record.body_changed = True
