"""Who is calling: the consumer whose gateway key the request carries, from any header an SDK uses, Gemini's ?key=,
or proxy authentication (HTTPS_PROXY=http://alice:KEY@gateway:8080). Without consumers configured, everyone is
'anonymous'. Missing, unknown, expired and disabled keys are refused with 401; a real provider key is refused with a
hint to use the gateway key, or forwarded untouched as 'byok' when unknown_keys is passthrough."""

from __future__ import annotations

from tollgate.core.access import key_problem, looks_like_provider_key, proxy_credentials
from tollgate.core.credentials import client_key, find_consumer, without_key_param
from tollgate.core.providers import CREDENTIAL_HEADERS
from tollgate.flows import pending, reject, strip_credentials

CHECKED_HEADERS = CREDENTIAL_HEADERS + ("proxy-authorization",)


class Authenticate:
    def __init__(self, settings):
        self.settings = settings
        self._proxy_auth: dict[str, tuple[str, str]] = {}  # client connection id -> (user, key) of its CONNECT

    def http_connect(self, flow):
        if credentials := proxy_credentials(flow.request.headers.get("proxy-authorization", "")):
            self._proxy_auth[flow.client_conn.id] = credentials

    def client_disconnected(self, client):
        self._proxy_auth.pop(client.id, None)

    def request(self, flow):
        if not (record := pending(flow)):
            return
        request = flow.request
        for name in CHECKED_HEADERS:  # a key is printable ASCII; anything else would be read differently downstream
            values = request.headers.get_all(name)
            if len(values) > 1:
                return reject(flow, record, 400, f"more than one {name} header", code="invalid_request")
            if values and not (values[0].isascii() and values[0].isprintable()):
                return reject(flow, record, 400, f"the {name} header holds bytes that are not printable ASCII",
                              code="invalid_request")
        # Plain-HTTP proxy requests carry Proxy-Authorization themselves; it must never go upstream.
        header = request.headers.get("proxy-authorization", "")
        if header:
            del request.headers["proxy-authorization"]
        path, _, query = request.path.partition("?")
        key = client_key(request.headers, query)
        self._identify(flow, record, header, key)
        if not record.byok:  # the client's key goes no further: not upstream, not into logs or mitmweb
            strip_credentials(request.headers)
            if "key=" in query:
                request.path = path + (f"?{q}" if (q := without_key_param(query)) else "")

    def _identify(self, flow, record, header: str, key: str) -> None:
        config = self.settings.config
        if not config.auth_required:
            record.consumer = "anonymous"
            return
        proxy_user = proxy_credentials(header) or self._proxy_auth.get(flow.client_conn.id)

        consumer = None
        if proxy_user:  # proxy authentication names the consumer; the SDK's own key is then a placeholder
            consumer = find_consumer(config.consumers_by_digest, proxy_user[1])
            if consumer is None or consumer.name != proxy_user[0]:
                return reject(flow, record, 401, "proxy authentication failed: use your name and gateway key",
                              code="invalid_api_key")
        elif key:
            consumer = find_consumer(config.consumers_by_digest, key)
        else:
            return reject(flow, record, 401, "missing gateway key: send your personal tollgate key as the API key",
                          code="missing_api_key")

        if consumer is None:
            if config.unknown_keys == "passthrough":  # Route leaves the client's key in place
                record.consumer, record.byok = "byok", True
                record.decision, record.reason = "byok", "client's own provider key forwarded"
                return
            if looks_like_provider_key(key):
                return reject(flow, record, 401, "this is a provider API key, which the gateway does not accept: "
                                                 "use your personal tollgate gateway key instead",
                              code="invalid_api_key")
            return reject(flow, record, 401, "unknown gateway key: use your personal tollgate key",
                          code="invalid_api_key")
        record.consumer, record.group, record.account = consumer.name, consumer.group, consumer
        if problem := key_problem(consumer):
            return reject(flow, record, 401, problem, code="invalid_api_key")
