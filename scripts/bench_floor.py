"""The benchmark's floor: mitmdump with one addon that only sends every request to the fake provider (what any
interception proxy must do at least). Answers are handled as tollgate handles them: plain answers whole (mitmdump's
default), event streams passed through as they come (so stream time to first token compares like with like). `--set bench_upstream=https://127.0.0.1:PORT`;
`--set bench_lag_file=F` also writes event-loop lag figures to F, measured as tollgate measures its own;
`--set bench_like_tollgate=true` runs mitmproxy as tollgate runs it (internals.speed_up: its debug-only type checks of
each message off, its addon dispatch walked once per event name), for a like-for-like floor."""

import asyncio
import json
import os
from urllib.parse import urlsplit

from mitmproxy import ctx

INTERVAL = 0.05


class Rewrite:
    def load(self, loader):
        loader.add_option("bench_upstream", str, "", "where every request goes")
        loader.add_option("bench_lag_file", str, "", "write event-loop lag figures here")
        loader.add_option("bench_like_tollgate", bool, False, "run mitmproxy as tollgate does (internals.speed_up)")

    def configure(self, updated):
        if "bench_like_tollgate" in updated and ctx.options.bench_like_tollgate:
            from tollgate import internals

            internals.speed_up()

    def running(self):
        if ctx.options.bench_lag_file:
            self.probe = asyncio.get_running_loop().create_task(self._probe(ctx.options.bench_lag_file))

    @staticmethod
    async def _probe(path: str) -> None:
        loop, figures = asyncio.get_running_loop(), {"probes": 0, "stalls_over_100ms": 0, "worst_s": 0.0}
        while True:
            asleep = loop.time()
            await asyncio.sleep(INTERVAL)
            lag = max(0.0, loop.time() - asleep - INTERVAL)
            figures["probes"] += 1
            figures["stalls_over_100ms"] += lag > 0.1
            figures["worst_s"] = max(figures["worst_s"], lag)
            with open(path + ".tmp", "w") as f:  # replaced whole: the bench reads it while streams are open
                json.dump(figures, f)
            os.replace(path + ".tmp", path)

    def request(self, flow):
        upstream = urlsplit(ctx.options.bench_upstream)
        flow.request.scheme, flow.request.host, flow.request.port = upstream.scheme, upstream.hostname, upstream.port

    def responseheaders(self, flow):
        flow.response.stream = "text/event-stream" in flow.response.headers.get("content-type", "")


addons = [Rewrite()]
