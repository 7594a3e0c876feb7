"""The ledger's journal (core/ledger.py): a row is on disk before the answer completes, in SQLite with the next
batch, never twice, and a journal whose process died goes in with the next process that opens the ledger."""

import os
import sqlite3
import subprocess
import sys

from conftest import ROOT
from harness import journaled
from tollgate.core.ledger import Journal, JournalCommitter, LedgerDB, recover_journals
from tollgate.core.record import CallRecord


def row(i: int) -> dict:
    return CallRecord(id=f"call-{i}", started_at=1_790_000_000 + i, client_ip="10.0.0.1", dialect="openai",
                      endpoint="chat/completions", consumer="alice").row()


def ids(path) -> list[str]:
    return [r[0] for r in sqlite3.connect(path).execute("SELECT id FROM calls ORDER BY started_at")]


def test_rows_reach_sqlite_and_the_journal_empties(tmp_path):
    path = str(tmp_path / "usage.db")
    db = LedgerDB(path)
    journal = Journal(path)
    for i in range(200):
        journal.append(row(i))
    assert journaled(path) > 0 and ids(path) == []  # on disk at once, in SQLite with the next batch
    committer = JournalCommitter(journal, db)
    assert committer.commit(max_bytes=2000) is False, "a batch is bounded: a backlog drains in steps"
    assert 0 < len(ids(path)) < 200
    assert committer.commit() is True
    assert journaled(path) == 0
    assert ids(path) == [f"call-{i}" for i in range(200)]
    journal.close()
    db.close()
    assert not [p for p in os.listdir(tmp_path) if ".journal-" in p], "an emptied journal is removed on close"


def test_a_busy_journal_rotates_and_every_file_goes_once_in(tmp_path, monkeypatch):
    monkeypatch.setattr(Journal, "ROTATE_BYTES", 4096)
    path = str(tmp_path / "usage.db")
    db, journal = LedgerDB(path), Journal(path)
    for i in range(100):  # no writer yet: the rows pile up over several files
        journal.append(row(i))
    files = [p for p in os.listdir(tmp_path) if ".journal-" in p]
    assert len(files) > 3
    JournalCommitter(journal, db).commit()
    assert journaled(path) == 0
    assert ids(path) == [f"call-{i}" for i in range(100)]
    assert len([p for p in os.listdir(tmp_path) if ".journal-" in p]) == 1, "rotated files go once they are in"
    journal.close()


def test_rows_past_the_memory_bound_are_read_back_from_the_files_and_memory_takes_over_again(tmp_path, monkeypatch):
    monkeypatch.setattr(Journal, "MEMORY_ROWS", 10)
    monkeypatch.setattr(Journal, "ROTATE_BYTES", 4096)
    path = str(tmp_path / "usage.db")
    db, journal = LedgerDB(path), Journal(path)
    for i in range(60):  # SQLite away for a while: more rows wait than memory keeps, over several files
        journal.append(row(i))
    committer = JournalCommitter(journal, db)
    assert committer.commit(max_bytes=1500) is False
    assert committer.commit() is True
    assert ids(path) == [f"call-{i}" for i in range(60)]
    for i in range(60, 65):
        journal.append(row(i))
    assert len(journal._unread) == 5, "with the journal empty again, new rows are kept in memory"
    with open(journal.path, "r+b") as f:  # what is in memory is what goes in: the file is not read back
        f.write(b"x" * 10)
    assert committer.commit() is True
    assert ids(path) == [f"call-{i}" for i in range(65)]
    journal.close()
    db.close()


DIES = """
import os, sys
sys.path.insert(0, {addons!r})
from tollgate.core.ledger import Journal
from tollgate.core.record import CallRecord
journal = Journal({path!r})
for i in range(25):
    journal.append(CallRecord(id=f"dead-{{i}}", started_at=1_790_000_000 + i, client_ip="", dialect="openai",
                              endpoint="x").row())
print("written", flush=True)
if {linger}:
    sys.stdin.read()  # alive (and holding its journal) until the test closes stdin
os._exit(9)  # no shutdown: the rows are in the journal only
"""


def test_the_journal_of_a_process_that_died_goes_in_with_the_next_one_and_a_live_ones_does_not(tmp_path):
    path = str(tmp_path / "usage.db")
    script = DIES.format(addons=str(ROOT / "addons"), path=path, linger=False)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 9
    LedgerDB(path).close()
    assert ids(path) == [] and journaled(path) > 0

    live = tmp_path / "live"
    live.mkdir()
    live_path = str(live / "usage.db")
    alive = subprocess.Popen([sys.executable, "-c", DIES.format(addons=str(ROOT / "addons"), path=live_path,
                                                                linger=True)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout.readline().strip() == "written"
        live_db = LedgerDB(live_path)
        assert recover_journals(live_db) == 0, "a live process commits its own journal"
    finally:
        alive.stdin.close()
        alive.wait(10)

    db = LedgerDB(path)
    assert recover_journals(db) == 25
    assert ids(path) == [f"dead-{i}" for i in range(25)]
    assert journaled(path) == 0 and not [p for p in os.listdir(tmp_path) if ".journal-" in p]
    assert recover_journals(live_db) == 25, "once its process is gone, its journal goes in too"


def test_a_row_committed_twice_is_one_row(tmp_path):
    path = str(tmp_path / "usage.db")
    db = LedgerDB(path)
    db.write_many([row(1), row(2)])
    db.write_many([row(2), row(3)])  # a journal committed again after a crash between commit and emptying
    assert ids(path) == ["call-1", "call-2", "call-3"]


def test_text_sqlite_refuses_goes_in_repaired(tmp_path):
    path = str(tmp_path / "usage.db")
    db, journal = LedgerDB(path), Journal(path)
    bad = row(1) | {"reason": "header bytes \udcff here"}  # a lone surrogate, from bytes a client sent
    journal.append(bad)
    journal.append(row(2))
    JournalCommitter(journal, db).commit()
    reasons = dict(sqlite3.connect(path).execute("SELECT id, reason FROM calls"))
    assert reasons["call-1"] == "header bytes ? here" and "call-2" in reasons


CLOSE_DURING_CHECKPOINT = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from tollgate.core.ledger import LedgerDB
db = LedgerDB(sys.argv[2])
db.checkpoint()
inside = threading.Event()
def slow_statement():  # SQLite calls this while the checkpoint's DELETE runs
    inside.set()
    time.sleep(0.3)
    return 0
db._checkpointer.set_progress_handler(slow_statement, 1)
worker = threading.Thread(target=db.checkpoint, args=(0,))
worker.start()
inside.wait()
db.close()
worker.join()
print("after close:", db.checkpoint(0))
"""


def test_a_ledger_closed_while_a_worker_thread_checkpoints_it_waits_for_it(tmp_path):
    """A reload that moves the ledger (another path, a JSONL mirror turned on) closes it, maybe while the checkpoint
    (with retention) runs in a worker thread. Closing the connection under that statement crashed the gateway
    (SIGSEGV); now close waits, and a checkpoint after it does nothing."""
    done = subprocess.run([sys.executable, "-c", CLOSE_DURING_CHECKPOINT, str(ROOT / "addons"),
                           str(tmp_path / "usage.db")], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "after close: 0"), done.stderr[-2000:]
