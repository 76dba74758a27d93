"""``SqliteJournal`` beyond the shared contract: its files, lock, schema and sqlite3 errors.

Rules: real files under ``tmp_path``, real worker threads, a real subprocess for the lock; no
sleeps (waits are on pipes, bounded by ``anyio.fail_after``); every journal and every raw
sqlite3 connection is closed (``filterwarnings = error``). Faults are injected through SQLite
itself (triggers, ``max_page_count``, ``query_only``), never by patching sqlite3.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from batchpump._errors import JournalCorruptError, JournalError, JournalLockedError, UsageError
from batchpump._journal import SCHEMA_VERSION, SqliteJournal
from batchpump._journal import sqlite as sqlite_module  # defines _connect, patched below
from batchpump._models import RunRecord, ShardRecord

from .records import RUN, make_run, make_shard, raw_db


@contextlib.asynccontextmanager
async def open_journal(path: str | os.PathLike[str]) -> AsyncIterator[SqliteJournal]:
    """``SqliteJournal.open`` for the block (``batchpump._journal.open_journal`` takes URLs too,
    and so yields either journal)."""
    async with await SqliteJournal.open(path) as journal:
        yield journal


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    directory.chmod(0o500)
    try:
        yield
    finally:
        directory.chmod(0o700)


# ---------------------------------------------------------------------------------------------
# Atomicity and threads.


async def test_commit_that_fails_midway_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.open_run(make_run())
    with raw_db(path) as conn:  # the 3rd shard insert fails after the run and 2 shards were written
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON shards WHEN NEW.idx = 2"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    async with open_journal(path) as journal:
        with pytest.raises(JournalError, match="injected failure") as caught:
            await journal.commit(
                run=make_run(state="running"), shards=[make_shard(i) for i in range(4)]
            )
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
        assert await journal.get_run(RUN) == make_run()
        assert await journal.load_shards(RUN) == []
        await journal.commit(run=make_run(state="running"), shards=[make_shard(0)])
        assert [s.key for s in await journal.load_shards(RUN)] == [(0, 1)]


async def test_sqlite_calls_run_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real_connect = sqlite_module._connect

    def watched_connect(path: Path) -> sqlite3.Connection:
        threads.append(threading.get_ident())
        conn = real_connect(path)
        conn.set_trace_callback(lambda _statement: threads.append(threading.get_ident()))
        return conn

    monkeypatch.setattr(sqlite_module, "_connect", watched_connect)
    loop_thread = threading.get_ident()
    async with open_journal(tmp_path / "j.sqlite") as journal:
        await journal.open_run(make_run())
        await journal.commit(run=make_run(), shards=[make_shard(0)])
        await journal.get_run(RUN)
        await journal.list_runs()
        await journal.load_shards(RUN)
    assert len(threads) > 10
    assert loop_thread not in threads


# ---------------------------------------------------------------------------------------------
# Files and the lock.


@pytest.mark.parametrize("mask", [0o022, 0o000])
async def test_files_are_private_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "new-dir" / "j.sqlite"
    with umask(mask):
        async with open_journal(path) as journal:
            await journal.commit(run=make_run(), shards=[make_shard(0)])
            names = ["j.sqlite", "j.sqlite-wal", "j.sqlite-shm", "j.sqlite.lock"]
            modes = {n: stat.S_IMODE((path.parent / n).stat().st_mode) for n in names}
    assert modes == dict.fromkeys(names, 0o600)
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


async def test_loose_existing_journal_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.touch()
    path.chmod(0o644)
    async with open_journal(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_second_open_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path):
        with pytest.raises(JournalLockedError) as caught:
            await SqliteJournal.open(path)
    message = str(caught.value)
    assert f"pid {os.getpid()} on {socket.gethostname()} since 2" in message
    assert str(path) in message
    journal = await SqliteJournal.open(path)  # released by the close above
    await journal.aclose()


CHILD = """
import sys, anyio
from batchpump._journal import open_journal
from batchpump._models import RunRecord

async def main():
    async with open_journal(sys.argv[1]) as journal:
        await journal.open_run(RunRecord(run_id="child", provider="p", base_url="u",
            endpoint="e", input_path="i", out_path="o", created_at=1.0))
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

anyio.run(main)
"""


async def test_lock_held_by_another_process_goes_when_it_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    command = [sys.executable, "-c", CHILD, str(path)]
    with anyio.fail_after(15):
        async with await anyio.open_process(command) as child:
            assert child.stdout is not None
            output = b""
            while b"ready" not in output:
                output += await child.stdout.receive()
            with pytest.raises(JournalLockedError, match=f"pid {child.pid} on "):
                await SqliteJournal.open(path)
            child.send_signal(signal.SIGKILL)
            assert await child.wait() == -signal.SIGKILL
        async with open_journal(path) as journal:  # the dead holder's lock is gone ...
            assert (await journal.get_run("child")) is not None  # ... its commit is not


# ---------------------------------------------------------------------------------------------
# Damaged, foreign, newer and older files.


def _truncated(path: Path) -> None:
    with raw_db(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    path.unlink()
    with raw_db(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(16_384))


def _newer(path: Path) -> None:
    with raw_db(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_random_bytes, "damaged or not an SQLite database"),
        (_truncated, "damaged or not an SQLite database"),
        (_foreign, r"not a batchpump journal v0 \(tables: users\)"),
        (_newer, f"schema version {SCHEMA_VERSION + 1}.*newer batchpump.*Upgrade"),
    ],
)
async def test_unusable_file_is_refused_and_left_alone(
    tmp_path: Path, damage: Callable[[Path], None], expected: str
) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.commit(run=make_run(), shards=[make_shard(i) for i in range(300)])
    damage(path)
    before = path.read_bytes()
    for _ in range(2):  # refused the same way again: nothing was recreated, the lock was freed
        with pytest.raises(JournalCorruptError, match=expected) as caught:
            await SqliteJournal.open(path)
        assert str(path) in str(caught.value)
    assert path.read_bytes() == before


async def test_unreadable_record_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.commit(run=make_run(), shards=[make_shard(0)])
    with raw_db(path) as conn:
        conn.execute("UPDATE shards SET record = '{\"run_id\": 5}'")
    async with open_journal(path) as journal:
        with pytest.raises(JournalCorruptError, match="cannot be read while loading shards"):
            await journal.load_shards(RUN)


def _build_v0(path: Path, runs: list[RunRecord], shards: list[ShardRecord]) -> None:
    with raw_db(path) as conn:
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE shards (run_id TEXT NOT NULL, idx INTEGER NOT NULL,"
            " attempt INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (run_id, idx, attempt))"
        )
        conn.executemany(
            "INSERT INTO runs VALUES (?, ?)",
            [(r.run_id, msgspec.json.encode(r).decode()) for r in runs],
        )
        conn.executemany(
            "INSERT INTO shards VALUES (?, ?, ?, ?)",
            [(s.run_id, s.index, s.attempt, msgspec.json.encode(s).decode()) for s in shards],
        )


async def test_v0_journal_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    runs = [make_run("b"), make_run(RUN, state="running")]
    shards = [make_shard(1, state="submitted", batch_id="batch_1", tag="t1"), make_shard(0)]
    _build_v0(path, runs, shards)
    async with open_journal(path) as journal:
        assert await journal.list_runs() == runs
        assert await journal.load_shards(RUN) == shards[::-1]
        await journal.commit(shards=[make_shard(2)])
    with raw_db(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexed = conn.execute("SELECT idx, state, batch_id, tag FROM shards ORDER BY idx")
        assert indexed.fetchall() == [
            (0, "ready", None, None),
            (1, "submitted", "batch_1", "t1"),
            (2, "ready", None, None),
        ]


async def test_failed_migration_leaves_the_v0_journal_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _build_v0(path, [make_run()], [make_shard(0)])
    with raw_db(path) as conn:
        conn.execute("UPDATE shards SET record = 'not json'")
    with pytest.raises(JournalCorruptError, match="cannot be read"):
        await SqliteJournal.open(path)
    with raw_db(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        assert tables.fetchall() == [("runs",), ("shards",)]


# ---------------------------------------------------------------------------------------------
# sqlite3 errors become JournalErrors that say what to do.


async def test_disk_full_says_free_space_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.open_run(make_run())

        def fill_up(conn: sqlite3.Connection) -> None:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await journal._call(fill_up, doing="test setup")
        big = [make_shard(i, path="x" * 2000) for i in range(50)]
        with pytest.raises(JournalError) as caught:
            await journal.commit(run=make_run(state="running"), shards=big)
        assert str(caught.value) == (
            f"journal at {path}: disk is full while committing; "
            f"free space and run `batchpump resume {RUN}`"
        )
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert await journal.get_run(RUN) == make_run()
        assert await journal.load_shards(RUN) == []


async def test_read_only_journal_says_so(tmp_path: Path) -> None:
    # chmod cannot make a file read-only for root (tests often run as root), so SQLite's
    # query_only switch stands in for a read-only file: it fails writes with SQLITE_READONLY.
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.open_run(make_run())
        await journal._call(lambda conn: conn.execute("PRAGMA query_only = ON"), doing="setup")
        with pytest.raises(JournalError, match=r"read-only.*batchpump resume run-1") as caught:
            await journal.commit(run=make_run(state="running"))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert await journal.get_run(RUN) == make_run()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_read_only_directory_says_so(tmp_path: Path) -> None:
    with read_only(tmp_path), pytest.raises(JournalError, match="cannot open"):
        await SqliteJournal.open(tmp_path / "j.sqlite")


async def test_directory_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "j.sqlite").mkdir()
    with pytest.raises(JournalError, match="cannot open it") as caught:
        await SqliteJournal.open(tmp_path / "j.sqlite")
    assert isinstance(caught.value.__cause__, OSError)
    journal = await SqliteJournal.open(tmp_path / "other.sqlite")  # nothing left locked
    await journal.aclose()


async def test_bad_synchronous_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="synchronous"):
        await SqliteJournal.open(tmp_path / "j.sqlite", synchronous="OFF")  # type: ignore[arg-type]


async def test_repr_and_statistics(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = await SqliteJournal.open(path, synchronous="FULL")
    await journal.open_run(make_run())
    await journal.commit(run=make_run(), shards=[make_shard(0), make_shard(1)])
    assert repr(journal) == f"<SqliteJournal path={str(path)!r} state=open commits=1>"
    stats = journal.statistics()
    assert (stats.commits, stats.runs_written, stats.shards_written) == (1, 2, 2)
    await journal.aclose()
    assert "state=closed" in repr(journal)
    assert journal.statistics().state == "closed"
