"""The README's front-door commands run as a newcomer would run them (a smoke test each)."""

import json
import subprocess
import sys

from conftest import ROOT
from harness import subprocess_env


def test_demo_runs_offline_and_shows_the_ledger():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                            timeout=120, env={**subprocess_env(), "PYTHONPATH": str(ROOT / "scripts")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "usage ledger" in result.stdout and "The provider saw only org keys" in result.stdout
    assert "tg-demo-alice-key" not in result.stdout.split("The provider saw only org keys")[1]


def test_run_and_run_web_start_on_the_default_config(tmp_path):
    from harness import free_port, wait_for_line

    for web in (False, True):
        log = tmp_path / f"run-{web}.log"
        env = subprocess_env()
        proxy_port, reverse_port = free_port(), free_port()
        args = [str(ROOT / "scripts" / "run"), "--listen-host", "127.0.0.1", "--proxy-port", str(proxy_port),
                "--reverse-port", str(reverse_port), "--web-port", str(free_port()),
                *(["--web", "--set", "web_open_browser=false"] if web else []), "--set", f"confdir={tmp_path / 'conf'}"]
        proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            wait_for_line(proc, log, rf"HTTP\(S\) proxy listening at 127.0.0.1:{proxy_port}")
            wait_for_line(proc, log, rf"[Rr]everse proxy.*listening at 127.0.0.1:{reverse_port}")
            if web:
                wait_for_line(proc, log, r"Web server listening at")
            assert proc.poll() is None, log.read_text()
        finally:
            proc.terminate()
            proc.wait(10)


def test_bench_quick_measures_every_row(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300,
                            env={**subprocess_env(), "PYTHONPATH": str(ROOT / "scripts")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert {"plain mitmdump", "tollgate", "tollgate cache hit", "limits, memory"} <= set(figures)
    assert all(row["rps"] > 0 and row["ttft_p50"] > 0 for row in figures.values())
    assert "guard: scanning a 100,000-character prompt" in result.stdout
