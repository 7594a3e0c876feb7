"""The shared ledger in PostgreSQL: the same table as the SQLite ledger, written by every replica.

Rows reach it from each replica's SQLite outbox (core/ledger.py) in batches, upserted by call id, so a batch sent
twice (a replica killed between the insert and its mark) leaves one row. The schema is created and upgraded by the
gateway (under an advisory lock: replicas start together); retention is applied by one replica at a time. Reports
read it through PgReader, which speaks the few SQL forms core/report.py uses."""

from __future__ import annotations


from .record import stored_columns
from .schema import redacted  # noqa: F401 (callers take it from here too)

TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT"}
SCHEMA_LOCK, RETENTION_LOCK = 74_201, 74_202  # advisory lock ids


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def schema_sql() -> list[str]:
    columns = stored_columns()
    body = ", ".join(f'"{c}" {TYPES[kind]}' for c, kind in columns.items() if c != "id")
    return [f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})",
            f"CREATE TABLE IF NOT EXISTS calls (id TEXT PRIMARY KEY, {body})",
            *(f'ALTER TABLE calls ADD COLUMN IF NOT EXISTS "{c}" {TYPES[kind]}' for c, kind in columns.items()
              if c != "id"),
            "CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at)",
            "CREATE INDEX IF NOT EXISTS calls_consumer_started ON calls (consumer, started_at)"]


def upsert_sql() -> tuple[str, list[str]]:
    columns = list(stored_columns())
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c != "id")
    return (f"INSERT INTO calls ({quoted}) VALUES ({', '.join('%s' for _ in columns)}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"), columns


RETENTION_LOCK_SQL = f"SELECT pg_try_advisory_xact_lock({RETENTION_LOCK})"
RETENTION_SQL = "DELETE FROM calls WHERE started_at < %s"


class PgReader:
    """A read-only view of the shared ledger with the sqlite3 calls core/report.py makes."""

    def __init__(self, url: str):
        import psycopg

        self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)

    def execute(self, sql: str, args=()):
        if sql.startswith("PRAGMA table_info(calls)"):
            return self._db.execute("SELECT ordinal_position, column_name FROM information_schema.columns "
                                    "WHERE table_name = 'calls'").fetchall()
        return self._db.execute(sql.replace("?", "%s"), tuple(args)).fetchall()

    def close(self) -> None:
        self._db.close()
