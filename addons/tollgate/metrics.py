"""Prometheus metrics (prometheus-client) and a liveness endpoint, on --set tollgate_metrics_port=9464.

Label values come from the configuration (consumers, providers) or from clients (model names): the latter are
capped in number and in length (and made valid text), so a client inventing model names, authenticated or not,
cannot grow the registry or break the exposition. /healthz answers 503 while the usage ledger cannot write."""

from __future__ import annotations

import asyncio
import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mitmproxy import ctx
from prometheus_client import (GCCollector, CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, disable_created_metrics, make_wsgi_app)
from prometheus_client.core import CounterMetricFamily

from tollgate.flows import record_of

log = logging.getLogger("tollgate")
MAX_MODELS = 500
MAX_LABEL_CHARS = 100
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)

OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

disable_created_metrics()  # no *_created series: they double what a scrape carries and say nothing here
registry = CollectorRegistry()  # module level: a hot-reloaded script must not register the metrics twice
ProcessCollector(registry=registry)   # process_cpu_seconds_total, process_resident_memory_bytes, open fds
PlatformCollector(registry=registry)
GCCollector(registry=registry)
REQUESTS = Counter("tollgate_requests", "LLM calls", ["consumer", "provider", "model", "status", "decision"],
                   registry=registry)
TOKENS = Counter("tollgate_tokens", "Tokens by kind (input | output, as OpenTelemetry's gen_ai.token.type)",
                 ["consumer", "provider", "model", "kind"], registry=registry)
COST = Counter("tollgate_cost_usd", "Cost in USD (genai-prices catalogue, config/prices.yaml overrides)",
               ["consumer", "provider", "model"], registry=registry)
UNPRICED = Counter("tollgate_unpriced_calls", "Calls priced at the `default` price: neither config/prices.yaml nor "
                   "the catalogue knows the model", ["model"], registry=registry)
LATENCY = Histogram("tollgate_request_latency_seconds", "Request start to end of answer", ["provider", "model"],
                    buckets=LATENCY_BUCKETS, registry=registry)
TTFT = Histogram("tollgate_time_to_first_token_seconds", "Request start to first streamed text", ["provider", "model"],
                 buckets=LATENCY_BUCKETS, registry=registry)
CACHE = Counter("tollgate_cache_lookups", "Response cache lookups by result (hit | miss | bypass)", ["result"],
                registry=registry)
SAVED = Counter("tollgate_cache_saved_usd", "Money saved by cache hits", ["consumer"], registry=registry)
REJECTIONS = Counter("tollgate_rejections", "Calls the gateway refused, by status and the limit rule (if one)",
                     ["status", "consumer", "rule"], registry=registry)
OVERHEAD = Histogram("tollgate_gateway_overhead_seconds", "Time spent in tollgate's own steps per call (not waiting "
                     "for the provider)", buckets=OVERHEAD_BUCKETS, registry=registry)
RELOADS = Counter("tollgate_config_reloads", "Configuration loads and reloads by result (ok | failed | refused)",
                  ["result"], registry=registry)
BUDGET_SPENT = Gauge("tollgate_budget_spent_usd", "Money spent in the current period of a budget, as last seen",
                     ["rule", "period", "subject"], registry=registry)
BUDGET_LIMIT = Gauge("tollgate_budget_limit_usd", "The amount of a budget per period", ["rule", "period"],
                     registry=registry)
GATEWAY_ERRORS = Counter("tollgate_gateway_errors", "Failures inside tollgate (each refused or ended the call)",
                         ["stage"], registry=registry)
KEY_STATE = Gauge("tollgate_key_state", "Org key health: 0 ok, 1 cooling down (429), 2 out (401/403: replace it); "
                  "`key` is a short id, never the key", ["provider", "key"], registry=registry)
PROVIDER_STATE = Gauge("tollgate_provider_state", "Provider breaker: 0 closed, 1 half-open (probing), 2 open",
                       ["provider"], registry=registry)
RETRIES = Counter("tollgate_retries", "Fallback attempts after a target failed, and those the retry budget refused",
                  ["result"], registry=registry)
CS_LATENCY = Histogram("tollgate_content_security_seconds", "Content security service calls (cache hits excluded)",
                       ["service"], registry=registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
CS_VERDICTS = Counter("tollgate_content_security_verdicts", "Content security verdicts by rule (allow | block | mask | "
                      "error)", ["rule", "verdict"], registry=registry)
CS_ERRORS = Counter("tollgate_content_security_errors", "Content security service calls that failed or timed out",
                    ["service"], registry=registry)
LEDGER_BACKLOG = Gauge("tollgate_ledger_backlog_rows", "Rows committed locally that the shared ledger (PostgreSQL) "
                       "does not have yet", registry=registry)
LEDGER_ERRORS = Counter("tollgate_ledger_errors", "Ledger rows that could not be written", registry=registry)
LOOP_LAG = Histogram("tollgate_event_loop_lag_seconds", "How late the event loop woke a 50 ms timer: time every "
                     "connection waited for the gateway's own work", registry=registry,
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LAG_PROBE_INTERVAL = 0.05


class Health:
    """What /healthz reports; set by the ledger."""
    ledger_ok = True


health = Health()


async def _probe_loop_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        asleep = loop.time()
        await asyncio.sleep(LAG_PROBE_INTERVAL)
        LOOP_LAG.observe(max(0.0, loop.time() - asleep - LAG_PROBE_INTERVAL))


def label(value: str) -> str:
    """A label value a client may have chosen: valid UTF-8, at most MAX_LABEL_CHARS characters."""
    if len(value) > MAX_LABEL_CHARS:
        value = value[:MAX_LABEL_CHARS - 1] + "…"
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")


class _StoreErrors:
    """Exports the shared store's error count (the store counts; nothing to keep in sync)."""

    def __init__(self, settings):
        self.settings = settings

    def collect(self):
        store = self.settings.current_store()
        family = CounterMetricFamily("tollgate_store_errors", "Shared store calls that failed (Redis down or slow)")
        family.add_metric([], getattr(store, "errors", 0))
        yield family


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # scrapes every few seconds would flood the gateway log
        pass


def _app(metrics_app):
    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/livez":
            start_response("200 OK", [("content-type", "text/plain")])
            return [b"ok\n"]
        if environ.get("PATH_INFO") == "/healthz":
            if health.ledger_ok:
                start_response("200 OK", [("content-type", "text/plain")])
                return [b"ok\n"]
            start_response("503 Service Unavailable", [("content-type", "text/plain")])
            return [b"unhealthy: the usage ledger cannot be written\n"]
        return metrics_app(environ, start_response)
    return app


class Metrics:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self, settings):
        self.settings = settings
        self._server: WSGIServer | None = None
        self._models: set[str] = set()
        self._store_errors = _StoreErrors(settings)
        self._lag_probe: asyncio.Task | None = None

    def running(self):
        if self._lag_probe is None:  # always on: 20 wake-ups a second cost nothing, and a stall must show
            self._lag_probe = asyncio.get_running_loop().create_task(_probe_loop_lag())

    def load(self, loader):
        registry.register(self._store_errors)  # unregistered in done(): a reloaded script registers its own
        loader.add_option("tollgate_metrics_port", int, 0, "Prometheus metrics and /healthz on this port (0: off)")
        loader.add_option("tollgate_metrics_host", str, "127.0.0.1", "address of the metrics listener")

    def configure(self, updated):
        if {"tollgate_metrics_port", "tollgate_metrics_host"} & updated:
            self._stop()
            if ctx.options.tollgate_metrics_port:
                self._server = make_server(ctx.options.tollgate_metrics_host, ctx.options.tollgate_metrics_port,
                                           _app(make_wsgi_app(registry)), handler_class=_QuietHandler)
                threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
                log.info("tollgate: metrics at http://%s:%d/metrics", ctx.options.tollgate_metrics_host,
                         self._server.server_port)

    def done(self):
        self._stop()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        registry.unregister(self._store_errors)

    def _stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _capped(self, value: str) -> str:
        """Client-chosen values (model names, unapproved hosts): at most MAX_MODELS distinct ones, then 'other'."""
        value = label(value)
        if value in self._models or len(self._models) < MAX_MODELS:
            self._models.add(value)
            return value
        return "other"

    def response(self, flow):
        record = record_of(flow)
        if record is None or self._server is None or record.session_open:  # off: nothing on the hot path
            return
        model = self._capped(record.model or record.requested_model or "-")
        consumer, provider = record.consumer or "-", self._capped(record.provider or "-")
        REQUESTS.labels(consumer, provider, model, str(record.status), record.decision).inc()
        if record.decision in ("rejected", "limited", "over_budget"):
            REJECTIONS.labels(str(record.status), consumer, label(record.limited_by)).inc()
        if record.overhead_s:
            OVERHEAD.observe(record.overhead_s)
        if record.cache:
            CACHE.labels(record.cache).inc()
        if record.cache == "hit":
            SAVED.labels(consumer).inc(record.saved_usd)
            return  # a hit spent no tokens or money
        TOKENS.labels(consumer, provider, model, "input").inc(record.prompt_tokens)
        TOKENS.labels(consumer, provider, model, "output").inc(record.completion_tokens)
        COST.labels(consumer, provider, model).inc(record.cost_usd)
        if record.priced_by == "default":
            UNPRICED.labels(model).inc()
        if record.latency_ms is not None and record.decision not in ("rejected", "limited", "over_budget"):
            LATENCY.labels(provider, model).observe(record.latency_ms / 1000)
        if record.streamed and record.ttft_ms is not None:
            TTFT.labels(provider, model).observe(record.ttft_ms / 1000)

    def error(self, flow):
        self.response(flow)

    def websocket_end(self, flow):  # a WebSocket session's row, once it ends
        self.response(flow)
