"""Who is calling: the consumer whose gateway key the request carries. Without consumers configured, everyone is
'anonymous'; with consumers, a missing or unknown key is refused with 401."""

from __future__ import annotations

from tollgate.core.credentials import client_key, find_consumer
from tollgate.flows import pending, reject


class Authenticate:
    def __init__(self, settings):
        self.settings = settings

    def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        if not config.auth_required:
            record.consumer = "anonymous"
            return
        key = client_key(flow.request.headers, flow.request.path.partition("?")[2])
        if not key:
            return reject(flow, record, 401, "missing gateway key: send your personal tollgate key as the API key",
                          code="missing_api_key")
        consumer = find_consumer(config.consumers, key)
        if consumer is None:
            return reject(flow, record, 401, "unknown gateway key: use your personal tollgate key",
                          code="invalid_api_key")
        record.consumer = consumer.name
        record.group = consumer.group
