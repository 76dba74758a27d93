"""Real PostgreSQL and Redis servers for the tests and benchmarks, in a temporary directory.

``postgres_server`` runs Debian's PostgreSQL (``initdb`` then ``pg_ctl``) with its data and
its unix socket in ``workdir``, listening on a free loopback port, with password (SCRAM) login
for the user ``batchpump``; ``redis_server`` runs ``redis-server`` on a free loopback port with
persistence off. Both stop their server when the block exits, whatever happened in it.

PostgreSQL refuses to run as root: when this process is root, the server runs as the
``postgres`` system user (created by Debian's package) through ``runuser``, and ``workdir`` is
handed to that user. Where a binary cannot be found, ``ServerUnavailable`` says which and how to
install it (``apt-get install -y postgresql redis-server``); the fixtures in ``tests/conftest``
turn that into a skip with that reason.

Neither server is ever replaced by a mock: the journal and the limiter are tested against the
real thing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "INSTALL_HINT",
    "PostgresServer",
    "RedisServer",
    "ServerUnavailable",
    "free_port",
    "postgres_server",
    "redis_server",
]

INSTALL_HINT: Final = "apt-get install -y postgresql redis-server"
#: How long a server may take to start or stop before the fixture gives up.
START_TIMEOUT: Final = 60.0
PG_USER: Final = "batchpump"


class ServerUnavailable(RuntimeError):
    """A server's binaries are not installed here (the message says how to get them)."""


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL: ``url`` (with the password) reaches its ``batchpump`` database."""

    host: str
    port: int
    user: str
    password: str
    database: str
    socket_dir: Path

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    bindir: Path

    def url_for(self, database: str) -> str:
        """The URL of another database on the same server."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (``createdb``); return its URL."""
        argv, _ = _as_server_user(
            [
                str(self.bindir / "createdb"),
                *("-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, name),
            ]
        )
        _run(argv, "createdb")
        return self.url_for(name)


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server on loopback."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (redis-server refuses port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (PostgreSQL 15 preferred)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    preferred = [c for c in candidates if "/15/" in c]
    if preferred or candidates:
        return Path((preferred or candidates)[-1]).parent
    found = shutil.which("pg_ctl")
    if found and Path(found).with_name("initdb").exists():
        return Path(found).resolve().parent
    raise ServerUnavailable(f"PostgreSQL's pg_ctl/initdb are not installed ({INSTALL_HINT})")


def _as_server_user(argv: list[str]) -> tuple[list[str], int | None]:
    """``argv`` run as a non-root user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return argv, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(
            f"running as root and there is no 'postgres' user to run PostgreSQL as ({INSTALL_HINT})"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServerUnavailable("running as root and runuser(1) is missing")
    return [runuser, "-u", "postgres", "--", *argv], user.pw_uid


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextlib.contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Run PostgreSQL for the block, in a new directory of the system's temporary directory.

    The directory is new (not the caller's: as root, the server's user must reach it, and
    pytest's temporary directories are private to root); it is removed after the server stops.

    Args:
        durable: keep ``fsync`` on (benchmarks measuring commits); tests turn it off.

    Raises:
        ServerUnavailable: the binaries (or, as root, the ``postgres`` user) are missing.
    """
    bindir = postgres_bin()
    password = secrets.token_urlsafe(12)
    workdir = Path(tempfile.mkdtemp(prefix="batchpump-postgres-"))
    try:
        with _postgres_in(bindir, workdir, password, durable) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _postgres_in(
    bindir: Path, workdir: Path, password: str, durable: bool
) -> Iterator[PostgresServer]:
    data, sockets, log = workdir / "data", workdir / "sock", workdir / "postgres.log"
    sockets.mkdir()
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    _, uid = _as_server_user([])
    if uid is not None:
        for path in (workdir, sockets, pwfile):
            os.chown(path, uid, -1)
    initdb, _ = _as_server_user(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
    )
    _run(initdb, "initdb")
    pwfile.unlink()
    port = free_port()
    settings = [
        f"-p {port}",
        f"-k {sockets}",
        "-c listen_addresses=127.0.0.1",
        "-c max_connections=200",
        "-c shared_buffers=32MB",
    ]
    if not durable:
        settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    start, _ = _as_server_user(
        [
            str(bindir / "pg_ctl"),
            *("-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", " ".join(settings)),
            "start",
        ]
    )
    _run(start, "pg_ctl start")
    try:
        server = PostgresServer("127.0.0.1", port, PG_USER, password, PG_USER, sockets, bindir)
        server.create_database(PG_USER)
        yield server
    finally:
        stop, _ = _as_server_user(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        )
        _run(stop, "pg_ctl stop")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """Run ``redis-server`` on a free loopback port for the block (no persistence).

    Raises:
        ServerUnavailable: ``redis-server`` is not installed.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable(f"redis-server is not installed ({INSTALL_HINT})")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(workdir), "--protected-mode", "no", "--loglevel", "notice"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:  # readiness from its own log, not from a sleep
            seen.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server did not start: {''.join(seen[-10:])}")
        # Keep reading its log so a full pipe never blocks the server.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield RedisServer("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
