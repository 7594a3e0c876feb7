"""Calls the gateway makes itself (embeddings, content security services, transformations), to its own providers
with their org keys, each a ledger row of its own (the consumer it served, or a `system:` name), priced like any
call. Its HTTP client (trusting what mitmproxy's upstream connections trust) also sends fallback attempts."""

from __future__ import annotations

import ssl
import time
import uuid

import httpx

from tollgate.core.dialects import OPENAI
from tollgate.core.record import CallRecord, Decision
from tollgate.core.routing import Route, destination


class OwnCalls:
    def __init__(self, settings, ledger):
        self.settings = settings
        self.ledger = ledger
        self._client: httpx.AsyncClient | None = None
        self._turn = 0

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            import certifi

            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=certifi.where())
            try:
                from mitmproxy import ctx
                if extra := ctx.options.ssl_verify_upstream_trusted_ca:  # the same trust as mitmproxy's own calls
                    verify.load_verify_locations(extra)
                if ctx.options.ssl_insecure:
                    verify = False
            except (AttributeError, OSError):
                pass
            self._client = httpx.AsyncClient(verify=verify, trust_env=False, timeout=httpx.Timeout(10.0))
        return self._client

    async def post(self, provider_name: str, endpoint: str, body: dict, *, consumer: str, group: str = "",
                   timeout: float = 10.0) -> tuple[dict | None, CallRecord]:
        """POSTs an OpenAI-format call (endpoint like "/v1/embeddings") to the provider; returns (its JSON answer or
        None, the ledger row written for it)."""
        config = self.settings.config
        provider = config.providers[provider_name]
        model = str(body.get("model", ""))
        started = time.time()
        row = CallRecord(id=uuid.uuid4().hex, started_at=started, client_ip="", dialect=OPENAI, endpoint=endpoint,
                         consumer=consumer, group=group, provider=provider.name, requested_model=model, model=model)
        target = destination(Route(provider, model), OPENAI, None, endpoint, "")
        headers = {"content-type": "application/json"}
        if provider.keys:
            header, prefix = provider.spec.auth[OPENAI]
            headers[header] = prefix + provider.keys[self._turn % len(provider.keys)]
            self._turn += 1
        answer = None
        try:
            response = await self.http().post(f"{target.scheme}://{target.host}:{target.port}{target.path}",
                                              json=body, headers=headers, timeout=timeout)
            row.status = response.status_code
            if response.status_code != 200:
                raise ValueError(f"the provider answered {response.status_code}")
            answer = response.json()
            usage = answer.get("usage") if isinstance(answer, dict) else None
            usage = usage if isinstance(usage, dict) else {}
            row.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            row.completion_tokens = int(usage.get("completion_tokens") or 0)
            row.usage_source = "provider"
            priced = config.priced(provider.name, model, row.prompt_tokens, row.completion_tokens, at=started)
            row.cost_usd, row.priced_by = round(priced.usd, 8), priced.by
        except (httpx.HTTPError, ValueError, TypeError) as e:
            answer = None
            row.decision = Decision.UPSTREAM_ERROR
            row.reason = f"{type(e).__name__}: {str(e)[:200]}"
            row.status = row.status or 502
        row.latency_ms = round((time.time() - started) * 1000, 2)
        self.ledger.write(row.row())
        return answer, row
