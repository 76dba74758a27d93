"""The journal's files: the single-holder ``flock`` on ``PATH.lock`` and 0600 file modes.

``PATH`` is created 0600 before SQLite opens it; SQLite gives ``PATH-wal`` and ``PATH-shm`` the
database file's mode, which is checked. ``PATH.lock`` carries an advisory ``flock`` while the
journal is open and names its holder; the kernel drops the lock when the holder exits or dies,
so a second holder gets ``JournalLockedError``, never a shared file.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import stat
import time
from pathlib import Path
from typing import Final, final

import msgspec

from .._errors import JournalError, JournalLockedError

__all__ = ["FILE_MODE", "JournalLock", "create_journal_file", "tighten_sidecars"]

#: Mode of the journal file and its ``-wal``, ``-shm`` and ``.lock`` siblings.
FILE_MODE: Final = 0o600

_enc: Final = msgspec.json.Encoder()


class _Holder(msgspec.Struct, frozen=True):
    pid: int
    hostname: str
    since: float


@final
class JournalLock:
    """The advisory ``flock`` on ``<journal>.lock``; the kernel drops it when the holder dies."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, journal: Path) -> JournalLock:
        """Take the lock of the journal file ``journal`` and write this process as its holder.

        Raises:
            JournalLockedError: another process, or another open journal, holds it.
            OSError: the lock file cannot be created or written.
        """
        path = journal.with_name(journal.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held_by = _describe_holder(os.pread(fd, 4096, 0))
                raise JournalLockedError(
                    f"journal at {journal} is in use by {held_by} (lock file {path}); wait for "
                    "that batchpump to finish or stop it. The lock goes away by itself when "
                    "that process exits, even if it crashed"
                ) from None
            me = _Holder(pid=os.getpid(), hostname=socket.gethostname(), since=time.time())
            os.ftruncate(fd, 0)
            os.pwrite(fd, _enc.encode(me), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Forget the holder and drop the lock. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # forget the holder; the lock itself is what counts
            os.close(fd)  # drops the flock


def _describe_holder(raw: bytes) -> str:
    try:
        holder = msgspec.json.decode(raw, type=_Holder)
    except msgspec.DecodeError:
        return "another process (it has not written its name yet)"
    since = datetime.datetime.fromtimestamp(holder.since, tz=datetime.UTC)
    return f"pid {holder.pid} on {holder.hostname} since {since.isoformat(timespec='seconds')}"


def create_journal_file(path: Path) -> None:
    """Create ``path`` 0600 (or tighten an existing one to 0600) before SQLite touches it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JournalError(f"journal at {path}: not a regular file")
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten_sidecars(path: Path) -> None:
    """Make sure ``-wal`` and ``-shm`` are 0600 (SQLite copies the database file's mode)."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(side.stat().st_mode) != FILE_MODE:
                side.chmod(FILE_MODE)
