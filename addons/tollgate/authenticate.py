"""Who is calling: the consumer whose gateway key the request carries, from any header an SDK uses, Gemini's ?key=,
a WebSocket subprotocol (openai-insecure-api-key.KEY), or proxy authentication (HTTPS_PROXY=http://alice:KEY@
gateway:8080). Without consumers configured, everyone is 'anonymous'. Missing, unknown, expired and disabled keys
are refused with 401; a real provider key is refused with a hint to use the gateway key, or forwarded as 'byok'
when unknown_keys is passthrough.

Keys leave the flow as soon as its headers arrive (requestheaders), before mitmweb, the log or a flow dump can show
them; Proxy-Authorization is consumed on every flow, LLM call or not, and never goes upstream. A byok key goes
upstream on the wire only (see internals.send_with_credential)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from tollgate.core.access import key_problem, looks_like_provider_key, proxy_credentials
from tollgate.core.credentials import client_key, find_consumer, path_without_key, websocket_key
from tollgate.core.providers import CREDENTIAL_HEADERS
from tollgate.core.record import Decision
from tollgate.flows import CREDENTIALS, HeaderView, drop_headers, pending, reject
from tollgate.internals import send_with_credential

CHECKED_HEADERS = CREDENTIAL_HEADERS + ("proxy-authorization",)
PROXY_AUTHORIZATION = frozenset({"proxy-authorization"})


@dataclass
class Presented:
    """What a request presented, taken out of the flow."""
    key: str = ""
    proxy_user: tuple[str, str] | None = None
    header: str = ""          # where the key was (for a byok key that goes on upstream)
    value: str = ""
    query: str = ""           # the query with ?key= (byok on Gemini)


class Authenticate:
    def __init__(self, settings):
        self.settings = settings
        self._proxy_auth: dict[str, tuple[str, str]] = {}  # client connection id -> (user, key) of its CONNECT
        self._presented: "weakref.WeakKeyDictionary[object, Presented]" = weakref.WeakKeyDictionary()

    def http_connect(self, flow):
        header = flow.request.headers.pop("proxy-authorization", "")
        if credentials := proxy_credentials(header):
            self._proxy_auth[flow.client_conn.id] = credentials

    def client_disconnected(self, client):
        self._proxy_auth.pop(client.id, None)

    def requestheaders(self, flow):
        request = flow.request
        if not (record := pending(flow)):  # not the gate's call: only the proxy credentials are ours to take
            drop_headers(request.headers, PROXY_AUTHORIZATION)
            return
        sources = self.settings.config.key_sources
        headers = HeaderView(request.headers)
        for name in CHECKED_HEADERS + sources.headers:  # a key is printable ASCII, or it is read differently later
            values = headers.get_all(name)
            if len(values) > 1:
                return reject(flow, record, 400, f"more than one {name} header", code="invalid_request")
            if values and not (values[0].isascii() and values[0].isprintable()):
                return reject(flow, record, 400, f"the {name} header holds bytes that are not printable ASCII",
                              code="invalid_request")
        presented = Presented(proxy_user=proxy_credentials(headers.get("proxy-authorization", "")))
        path, _, query = request.path.partition("?")
        presented.key = client_key(headers, query, sources)
        presented.header = next((name for name in CREDENTIAL_HEADERS + sources.headers
                                 if headers.get(name, "").strip()), "")
        presented.value = headers.get(presented.header, "") if presented.header else ""
        if not presented.key and (protocols := headers.get("sec-websocket-protocol")):
            presented.key, rest = websocket_key(protocols)
            if presented.key:
                request.headers["sec-websocket-protocol"] = rest
        drop_headers(request.headers, CREDENTIALS.union(sources.headers))
        if any(f"{param}=" in query for param in sources.params):
            presented.query = query
            request.path = path_without_key(request.path, sources.params)
        self._presented[flow] = presented

    def request(self, flow):
        if not (record := pending(flow)):
            return
        presented = self._presented.pop(flow, None) or Presented()
        self._identify(flow, record, presented)
        if record.byok and not flow.response:  # the client's own key goes on, on the wire only
            if presented.header:
                send_with_credential(flow.request, presented.header, presented.value, "<client's own key>")
            elif presented.query:
                flow.request.path = flow.request.path.partition("?")[0] + "?" + presented.query

    def _identify(self, flow, record, presented: Presented) -> None:
        config = self.settings.config
        if not config.auth_required:
            record.consumer = "anonymous"
            return
        proxy_user = presented.proxy_user or self._proxy_auth.get(flow.client_conn.id)
        key = presented.key

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
                record.byok_key = key
                record.decision, record.reason = Decision.BYOK, "client's own provider key forwarded"
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
