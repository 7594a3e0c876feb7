"""scripts/run --workers N: N gateway processes on this machine behind HAProxy on the public ports.

mitmproxy runs one event loop per process, so a machine's cores are used by several processes. They share the CA
(one confdir), the store (it must be Redis: limits and the cache are then exact across them) and the ledger (one
SQLite file, or the shared PostgreSQL ledger). HAProxy (`mode http`) balances tunnels and reverse-listener requests
by least connections, adds X-Forwarded-For (the workers trust it from 127.0.0.1 only: they listen there), and checks
each worker's /healthz on its metrics port, so a worker that dies or cannot write its ledger is taken out within two
seconds. A worker that exits is started again."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addons"))

from tollgate.core.config import ConfigError, load_config  # noqa: E402

HAPROXY = """global
    maxconn {maxconn}
    log stdout format short local0 warning

defaults
    mode http
    log global
    option forwardfor               # the client's address, for limits per ip and the ledger
    option dontlognull
    timeout connect 5s
    timeout client 10m              # an LLM answer can take minutes
    timeout server 10m
    timeout tunnel 1h               # a CONNECT tunnel (keep-alive SDK connections) may live long
    timeout http-request 30s
    retries 3
    option redispatch               # a worker that refuses a connection: the next one takes it
    default-server inter 1s fall 2 rise 1

frontend proxy
    bind {host}:{proxy_port}
    default_backend proxy_workers

backend proxy_workers
    balance leastconn
    option httpchk GET /healthz     # the worker's metrics port: no ledger row, 503 while its ledger cannot write
{proxy_servers}

frontend reverse
    bind {host}:{reverse_port}
    default_backend reverse_workers

backend reverse_workers
    balance leastconn
    option httpchk GET /healthz
{reverse_servers}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str, port: int, proc: subprocess.Popen, timeout: float = 10) -> bool:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "::") else host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def config_path(passthrough: list[str]) -> str:
    for i, arg in enumerate(passthrough):
        value = arg if arg.startswith("tollgate_config=") else (
            passthrough[i + 1] if arg == "--set" and i + 1 < len(passthrough) else "")
        if value.startswith("tollgate_config="):
            return value.split("=", 1)[1]
    return str(ROOT / "config" / "gateway.yaml")


class Worker:
    def __init__(self, index: int, tool: str, passthrough: list[str]):
        self.index, self.tool, self.passthrough = index, tool, passthrough
        self.proxy_port, self.reverse_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.tool, "-s", str(ROOT / "addons" / "gateway.py"), "--listen-host", "127.0.0.1",
             "--mode", f"regular@{self.proxy_port}", "--mode", f"reverse:https://api.openai.com@{self.reverse_port}",
             "--set", f"tollgate_metrics_port={self.metrics_port}", "--set", "tollgate_trusted_proxies=127.0.0.1",
             *self.passthrough],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc) -> None:
        for line in proc.stdout:
            sys.stdout.write(f"[w{self.index}] {line}")
            sys.stdout.flush()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1, trust_env=False).is_success
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"tollgate: worker {self.index} exited with {self.proc.returncode} while starting")
            if self.healthy():
                return
            time.sleep(0.2)
        sys.exit(f"tollgate: worker {self.index} did not become healthy in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/run --workers N")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--proxy-port", type=int, default=8080)
    parser.add_argument("--reverse-port", type=int, default=8081)
    parser.add_argument("--tool", default=str(Path(sys.executable).parent / "mitmdump"))
    args, passthrough = parser.parse_known_args()
    if args.workers < 1:
        sys.exit("tollgate: --workers needs at least 1")
    try:
        config = load_config(config_path(passthrough))
    except ConfigError as e:
        sys.exit(f"tollgate: bad configuration: {e}")
    if args.workers > 1 and config.store == "memory":
        sys.exit("tollgate: --workers needs a shared store (store: redis://… or redis-cluster://…): with the memory "
                 "store each worker would count limits and keep its cache on its own")
    haproxy = "haproxy"
    if subprocess.run(["which", haproxy], capture_output=True).returncode != 0:
        sys.exit("tollgate: --workers needs HAProxy (Debian: apt-get install haproxy)")

    workers = [Worker(i + 1, args.tool, passthrough) for i in range(args.workers)]
    workers[0].start()
    workers[0].wait_healthy()  # the first one creates the CA in the shared confdir; the others find it there
    for worker in workers[1:]:
        worker.start()
    for worker in workers[1:]:
        worker.wait_healthy()

    servers = lambda port: "\n".join(  # noqa: E731
        f"    server w{w.index} 127.0.0.1:{getattr(w, port)} check port {w.metrics_port}" for w in workers)
    work = Path(tempfile.mkdtemp(prefix="tollgate-haproxy-"))
    import resource

    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # each connection through HAProxy holds two
    maxconn = max(256, min(20000, (files if files != resource.RLIM_INFINITY else 40000) // 2 - 100))
    (work / "haproxy.cfg").write_text(HAPROXY.format(maxconn=maxconn, host=args.listen_host, proxy_port=args.proxy_port,
                                                     reverse_port=args.reverse_port,
                                                     proxy_servers=servers("proxy_port"),
                                                     reverse_servers=servers("reverse_port")))
    balancer = subprocess.Popen([haproxy, "-f", str(work / "haproxy.cfg"), "-db"])
    if not listening(args.listen_host, args.proxy_port, balancer):
        for worker in workers:
            worker.stop()
        sys.exit(f"tollgate: HAProxy did not start listening on {args.listen_host}:{args.proxy_port}")
    print(f"tollgate: {args.workers} workers behind HAProxy: proxy {args.listen_host}:{args.proxy_port}, reverse "
          f"{args.listen_host}:{args.reverse_port} (metrics: " +
          ", ".join(f"w{w.index} 127.0.0.1:{w.metrics_port}" for w in workers) + ")", flush=True)

    stopping = threading.Event()

    def stop(*_):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping.is_set():
            if balancer.poll() is not None:
                print(f"tollgate: HAProxy exited with {balancer.returncode}", flush=True)
                break
            for worker in workers:
                if worker.proc.poll() is not None:
                    print(f"tollgate: worker {worker.index} exited with {worker.proc.returncode}; starting it again",
                          flush=True)
                    worker.start()
            stopping.wait(1)
    finally:
        if balancer.poll() is None:
            balancer.terminate()
            balancer.wait(10)
        for worker in workers:
            worker.stop()
    sys.exit(0 if stopping.is_set() else 1)


if __name__ == "__main__":
    os.environ.pop("HTTPS_PROXY", None)
    main()
