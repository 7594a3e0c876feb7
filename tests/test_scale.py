"""Many calls in flight on one gateway process: every stream is served whole, the rows all land, and the
gateway's own clock probe sees it keep up. (scripts/bench --streams 2000 measures the large case.)"""

import asyncio
import resource

import bench
from harness import Gateway


def test_hundreds_of_concurrent_streams_are_all_served(tmp_path, fake):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    gw = Gateway(tmp_path, bench.chain(fake))
    try:
        n = 400
        result = asyncio.run(bench._open_streams(gw, n, words=6, delay_ms=500, ramp_s=2))
        assert result["errors"] == [] and len(result["ttfts"]) == n and all(result["ttfts"])
        assert result["peak"] > n // 2  # they were open at the same time, not one after another
        rows = gw.rows_since(0, n)
        assert {(r["status"], r["streamed"], r["decision"], r["completion_tokens"]) for r in rows} == {
            (200, 1, "forwarded", 6)}
    finally:
        gw.stop()
