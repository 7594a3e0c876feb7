"""May this consumer call this model at this provider? Checked after routing, so the provider is the one that
would answer; refused with 403 (the SDKs raise PermissionDeniedError). Optionally tags the request with a hashed
consumer id as OpenAI's `user`, for the provider's abuse tracking."""

from __future__ import annotations

from tollgate.core.access import access_problem, user_id
from tollgate.core.dialects import OPENAI
from tollgate.flows import pending, reject


class Authorize:
    def __init__(self, settings):
        self.settings = settings

    def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        consumer = record.account
        if consumer is None:  # anonymous: no consumers configured
            return
        if problem := access_problem(config, consumer, record.requested_model, record.provider, record.endpoint):
            return reject(flow, record, 403, problem, code="model_not_allowed")
        if config.send_user_id and record.dialect == OPENAI and record.body is not None and "messages" in record.body:
            record.body["user"] = user_id(consumer.name)
            record.body_changed = True
