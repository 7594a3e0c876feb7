"""Python's cycle collector, told what is permanent.

Everything alive once the gateway is up (mitmproxy, tollgate, the configuration, the token tables) stays for the
process's life; frozen, the collector's full collections no longer scan it (with many calls in flight, those
collections paused the event loop for up to 0.43 s). The collection thresholds stay Python's own: raising them made
young collections rarer but longer and measured no faster (scripts/bench, same run)."""

from __future__ import annotations

import gc


class CollectorTuning:
    def running(self):
        gc.collect()
        gc.freeze()

    def done(self):
        gc.unfreeze()
