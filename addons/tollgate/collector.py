"""Python's cycle collector, tuned for a proxy with thousands of calls in flight.

mitmproxy makes a few hundred objects of cyclic garbage per call (generators and frames held by exceptions it raises
and catches). With the default thresholds the collector runs a young collection every 2,000 allocations and, as
flows pile up, full collections that scan every live flow: pauses of 0.1 to 0.5 s with 2,000 open streams, every
connection waiting. So: everything alive once the gateway is up (mitmproxy, tollgate, the configuration) is frozen
out of the collector's sight, and young collections run every 50,000 allocations (each still a few ms)."""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


class CollectorTuning:
    def running(self):
        gc.collect()
        gc.freeze()
        gc.set_threshold(*THRESHOLDS)

    def done(self):
        gc.unfreeze()
