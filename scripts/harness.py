"""Real parts for tests, the demo and the benchmark: the fake provider and mitmdump as subprocesses, and SDK clients
that reach them the way a developer machine does (HTTPS_PROXY and the gateway CA)."""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import re
import socket
import ssl
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED_TIKTOKEN = ROOT.parent / "shared" / "tiktoken-cache"


def subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    if SHARED_TIKTOKEN.is_dir():
        env.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN))
    return env


def wait_for_line(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 30) -> list[re.Match]:
    """Waits until the log has a line matching pattern; returns every match so far."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text() if log.exists() else ""
        matches = list(re.finditer(pattern, text))
        if matches:
            return matches
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    raise TimeoutError(f"no {pattern!r} within {timeout}s:\n{log.read_text()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeLLM:
    def __init__(self, workdir: Path, *args: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "fake-llm.log"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fake_llm.py"), "--port", "0", *args],
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=subprocess_env())
        m = wait_for_line(self.proc, self.log, r"listening on (https?://[\d.]+:(\d+))")[0]
        self.url, self.port = m[1], int(m[2])

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_fake/requests", trust_env=False, verify=False).json()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_fake/requests", trust_env=False, verify=False)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def journaled(ledger: Path | str) -> int:
    """Bytes of rows the ledger's gateways have on disk but not yet in SQLite (core/ledger.py: Journal)."""
    total = 0
    for path in glob.glob(glob.escape(str(ledger)) + ".journal-*"):
        try:
            total += os.path.getsize(path)
        except OSError:  # removed meanwhile: its rows are in
            pass
    return total


class Gateway:
    """A real mitmdump running addons/gateway.py with its own confdir (and so its own CA), on free ports."""

    def __init__(self, workdir: Path, config: dict, reverse: bool = False, extra: tuple[str, ...] = (),
                 env: dict | None = None, script: bool = True, tool: str = "mitmdump", script_file: Path | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "gateway.yaml"
        config = {"ledger": {"path": str(workdir / "usage.db")}, **config}
        self.write_config(config)
        self.ledger_path = Path(config["ledger"]["path"])
        self.confdir = workdir / "conf"
        self.log = workdir / "mitmdump.log"
        modes = ["--mode", "regular@0"] + (["--mode", f"reverse:https://api.openai.com@{free_port()}"] if reverse else [])
        gateway = ["-s", str(script_file or ROOT / "addons" / "gateway.py"), "--set", f"tollgate_config={self.config_path}"]
        cmd = [str(BIN / tool), *(gateway if script else []), "--listen-host", "127.0.0.1",
               *modes, "--set", f"confdir={self.confdir}", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env={**subprocess_env(), **(env or {})}, cwd=workdir)
        if script:
            wait_for_line(self.proc, self.log, r"usage ledger at")
        self.port = int(wait_for_line(self.proc, self.log, r"HTTP\(S\) proxy listening at [\d.]+:(\d+)")[0][1])
        self.reverse_port = None
        if reverse:
            self.reverse_port = int(wait_for_line(self.proc, self.log, r"[Rr]everse proxy.*listening at [\d.]+:(\d+)")[0][1])
        self.proxy = f"http://127.0.0.1:{self.port}"
        self.web_url = None
        if tool == "mitmweb":  # mitmweb 12 protects its API with a token printed at start
            self.web_url = wait_for_line(self.proc, self.log, r"Web server listening at (http://\S+)")[0][1]
        self.ca = str(self.confdir / "mitmproxy-ca-cert.pem")

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)  # atomic: the gateway never reads half a file

    @contextlib.contextmanager
    def client_env(self, proxy: bool = True, proxy_auth: tuple[str, str] | None = None):
        """The environment a developer machine has: HTTPS_PROXY and the gateway CA, nothing else.
        proxy=False: no proxy at all, for base-URL clients of the reverse listener; proxy_auth: (user, key) in
        the proxy URL (HTTPS_PROXY=http://alice:KEY@gateway:8080)."""
        saved = {k: os.environ.get(k) for k in ("HTTPS_PROXY", "HTTP_PROXY", "SSL_CERT_FILE", "NO_PROXY", "no_proxy",
                                                 "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")}
        for k in saved:
            os.environ.pop(k, None)
        if proxy:
            url = self.proxy if not proxy_auth else self.proxy.replace("://", f"://{proxy_auth[0]}:{proxy_auth[1]}@")
            os.environ.update(HTTPS_PROXY=url, HTTP_PROXY=url, SSL_CERT_FILE=self.ca)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def openai(self, key: str, proxy_auth: tuple[str, str] | None = None, **kw):
        import openai

        with self.client_env(proxy="base_url" not in kw, proxy_auth=proxy_auth):  # the SDK reads the proxy and CA when its client is built
            return openai.OpenAI(api_key=key, **{"max_retries": 0, **kw})

    def anthropic(self, key: str, **kw):
        import anthropic

        with self.client_env(proxy="base_url" not in kw):
            return anthropic.Anthropic(api_key=key, **{"max_retries": 0, **kw})

    def httpx(self, **kw) -> httpx.Client:
        with self.client_env():
            return httpx.Client(timeout=30, **kw)

    def rows(self, where: str = "1=1", args=()) -> list[dict]:
        """The ledger's rows, once every row the gateway has journaled is in SQLite (an empty journal says so)."""
        deadline = time.time() + 5
        while time.time() < deadline and journaled(self.ledger_path):
            time.sleep(0.005)
        db = sqlite3.connect(self.ledger_path)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(f"SELECT * FROM calls WHERE {where} ORDER BY started_at", args)]
        finally:
            db.close()

    def mark(self) -> int:
        return len(self.rows())

    def rows_since(self, mark: int, count: int = 1) -> list[dict]:
        """The rows of the calls made after mark(). A streamed call's row lands just after the client has read the
        final event (the ledger writes when the upstream stream ends), so wait for it."""
        return self.wait_for(lambda: rows[mark:] if len(rows := self.rows()) >= mark + count else None)

    def last_row(self) -> dict:
        rows = self.rows()
        assert rows, "ledger is empty"
        return rows[-1]

    def wait_for(self, predicate, timeout: float = 5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if result := predicate():
                return result
            time.sleep(0.05)
        raise AssertionError("condition not met in time")

    def logs(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def raw_request(gw: Gateway, head: str, body: bytes = b"", *, connect: str | None = None, sni: str | None = None,
                timeout: float = 10) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request through the proxy, byte for byte: plain (absolute-form head) or, with connect, inside a
    CONNECT tunnel with the given SNI, trusting the gateway CA."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    if connect:
        sock.sendall(f"CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n".encode())
        assert b" 200 " in sock.recv(4096)
        context = ssl.create_default_context(cafile=gw.ca)
        context.check_hostname = False
        sock = context.wrap_socket(sock, server_hostname=sni)
    sock.sendall(head.encode("latin-1") + body if isinstance(head, str) else head + body)
    response = http.client.HTTPResponse(sock)
    response.begin()
    data = response.read()
    sock.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def providers_to(fake: FakeLLM, **extra) -> dict:
    """Every provider type the tests use, with org keys, sent to the fake provider."""
    providers = {
        "openai": {"type": "openai", "keys": ["sk-org-openai-1", "sk-org-openai-2"], "upstream": fake.url},
        "anthropic": {"type": "anthropic", "keys": ["sk-ant-org-1"], "upstream": fake.url},
        "gemini": {"type": "gemini", "keys": ["gem-org-1"], "upstream": fake.url},
        "qwen": {"type": "qwen", "keys": ["dash-org-1"], "upstream": fake.url},
    }
    providers.update(extra)
    return providers


class RedisServer:
    """A private redis-server on a free port, nothing kept on disk; stop() and start() again for outage tests."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=(self.workdir / "redis.log").open("a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class PostgresServer:
    """A private PostgreSQL (Debian's binaries) on a free port in a temp dir; stop() and start() for outage tests.
    initdb refuses to run as root, so as root the server runs as the postgres user."""

    def __init__(self):
        import pwd
        import shutil
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="tollgate-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._shutil = shutil
        subprocess.run([*self._as, "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True)
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run([*self._as, "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w",
                        "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self._as, "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"], capture_output=True)

    def query(self, sql: str, args=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def destroy(self) -> None:
        self.stop()
        self._shutil.rmtree(self.dir, ignore_errors=True)


def cluster_port() -> int:
    """A free port a cluster node can use: at most 55535 (its bus port is 10000 higher, and free too)."""
    import random

    while True:
        port = random.randint(20000, 55535)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


class RedisCluster:
    """A private Redis Cluster of three masters (no replicas), nothing kept on disk."""

    def __init__(self, workdir: Path, masters: int = 3):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ports = [cluster_port() for _ in range(masters)]
        self.procs: dict[int, subprocess.Popen] = {}
        for port in self.ports:
            self.start(port)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline:  # every node agrees that all slots are served
            states = [subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True,
                                     text=True).stdout for p in self.ports]
            if all("cluster_state:ok" in s for s in states):
                break
            time.sleep(0.1)
        self.url = "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=(self.workdir / f"redis-{port}.log").open("a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def keys_per_node(self, pattern: str = "*") -> dict[int, int]:
        return {p: len(subprocess.run(["redis-cli", "-p", str(p), "--scan", "--pattern", pattern],
                                      capture_output=True, text=True).stdout.split()) for p in self.ports}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class Workers:
    """scripts/run --workers N: gateway processes behind HAProxy, as an operator starts them."""

    def __init__(self, workdir: Path, config: dict, workers: int = 3, extra: tuple[str, ...] = ()):
        import signal  # noqa: F401 (stop)

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
        self.port, self.reverse_port = free_port(), free_port()
        self.log = workdir / "run.log"
        self.proc = subprocess.Popen(
            [str(ROOT / "scripts" / "run"), "--workers", str(workers), "--proxy-port", str(self.port),
             "--reverse-port", str(self.reverse_port), "--set", f"tollgate_config={workdir / 'gateway.yaml'}",
             "--set", f"confdir={workdir / 'conf'}", *extra],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True)
        line = wait_for_line(self.proc, self.log, r"workers behind HAProxy.*\(metrics: (.*)\)", timeout=120)[0]
        self.metrics = {int(w): int(p) for w, p in re.findall(r"w(\d+) 127\.0\.0\.1:(\d+)", line[1])}
        self.ca = str(workdir / "conf" / "mitmproxy-ca-cert.pem")
        self.proxy = f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"tollgate_config={self.workdir / 'gateway.yaml'}"],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if int(p) != self.proc.pid]

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
