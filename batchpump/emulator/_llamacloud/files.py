"""The LlamaCloud emulator's knobs and the directory side of its state: directories, uploads.

``DirectoryStore`` holds what every LlamaCloud object shares (the knobs, the project, ids from
the seeded factory) and the directories with their files; ``LlamaCloudState`` builds the v2
batches and jobs on it. Uploads pass a per-project fixed window (``upload_limit`` per
``upload_window_seconds``, the published 50 / 5 s by default): the counter restarts when each
window ends. Only the first ``HEAD_BYTES`` of each upload are kept.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Final, final

import msgspec

from .._routing import ApiError
from .._state import Emulator
from .jobs import FileRecord
from .wire import DirectoryCreateBody

__all__ = ["HEAD_BYTES", "DirectoryRecord", "DirectoryStore", "LlamaCloudConfig"]

#: Bytes of each upload kept to echo in parse output.
HEAD_BYTES: Final = 512


class LlamaCloudConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """LlamaCloud-only knobs (timing shared with the other providers is in ``EmulatorConfig``).

    Attributes:
        upload_limit: directory uploads per fixed window per project; ``None``: unlimited.
        upload_window_seconds: the window's length (emulator-clock seconds).
        throttled_seconds: time in ``THROTTLED`` between ``PENDING`` and ``RUNNING``.
        midrun_throttled_seconds: time in ``THROTTLED`` halfway through ``RUNNING``.
        job_tail_seconds: the last file's job ends this long after the batch completes.
        job_failure_rate: chance a file's job ends ``FAILED`` with a transient error.
        mapping_error_rate: chance a file gets an ``error_message`` instead of a job.
        fail_batches: batches end ``FAILED`` (orchestration failure) instead of ``COMPLETED``.
        newest_first: batch listing order (the real order is unconfirmed).
        max_upload_bytes: biggest accepted upload (413 above).
        max_files: most files a batch may cover (400 above).
    """

    upload_limit: int | None = 50
    upload_window_seconds: float = 5.0
    throttled_seconds: float = 0.0
    midrun_throttled_seconds: float = 0.0
    job_tail_seconds: float = 0.0
    job_failure_rate: float = 0.0
    mapping_error_rate: float = 0.0
    fail_batches: bool = False
    newest_first: bool = True
    max_upload_bytes: int = 512 * 1000 * 1000
    max_files: int = 1000


@final
class DirectoryRecord:
    """One directory and its files (by id, in upload order; and by ``unique_id``)."""

    __slots__ = ("created_at", "description", "expires_at", "files", "id", "name", "type")

    def __init__(self, id: str, body: DirectoryCreateBody, now: float) -> None:
        self.id = id
        self.name = body.name
        self.description = body.description
        self.type = body.type
        self.expires_at = body.expires_at
        self.created_at = now
        self.files: dict[str, FileRecord] = {}

    def by_unique_id(self, unique_id: str) -> FileRecord | None:
        return next((f for f in self.files.values() if f.unique_id == unique_id), None)


class DirectoryStore:
    """The knobs, the project and its directories; the batch store builds on it."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.config = LlamaCloudConfig()
        self._rng = random.Random(emulator.config.seed + 3)
        self.project_id = self.new_id("prj")
        self.directories: dict[str, DirectoryRecord] = {}
        #: Upload calls that reached a directory, per ``(directory name, unique_id)``.
        self.uploads: dict[tuple[str, str], int] = {}
        self._window = (-1, 0)

    def configure(self, config: LlamaCloudConfig) -> None:
        """Replace the LlamaCloud knobs; takes effect on the next request or batch."""
        self.config = config

    def new_id(self, prefix: str) -> str:
        """``<prefix>-<uuid4>``, reproducible from the emulator's seed."""
        return f"{prefix}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    def create_directory(self, body: DirectoryCreateBody) -> DirectoryRecord:
        record = DirectoryRecord(self.new_id("dir"), body, self.emulator.now())
        self.directories[record.id] = record
        return record

    def directory(self, directory_id: str) -> DirectoryRecord:
        record = self.directories.get(directory_id)
        if record is None:
            raise ApiError(404, f"Directory {directory_id} not found")
        return record

    def delete_directory(self, directory_id: str) -> None:
        self.directory(directory_id)
        del self.directories[directory_id]

    def check_upload_window(self) -> None:
        """Count one upload in the project's fixed window, or answer 429."""
        limit, window = self.config.upload_limit, self.config.upload_window_seconds
        if limit is None:
            return
        now = self.emulator.clock.monotonic()
        index = math.floor(now / window)
        current, used = self._window
        if index != current:
            current, used = index, 0
        if used >= limit:
            self.emulator.raw_stats.faults["rate_limited"] += 1
            wait = (index + 1) * window - now
            raise ApiError(
                429,
                f"Rate limit exceeded: {limit} uploads per {window:g} seconds",
                headers={"retry-after": str(max(1, min(60, math.ceil(wait))))},
            )
        self._window = (current, used + 1)

    def upload(
        self,
        directory_id: str,
        *,
        filename: str,
        size: int,
        head: bytes,
        unique_id: str | None,
        display_name: str | None,
    ) -> FileRecord:
        """Add a file to a directory; the same ``unique_id`` again replaces it in place.

        Whether the real API replaces, rejects or duplicates is unconfirmed; replacing keeps
        one entry per ``unique_id``, and ``uploads`` counts every call so tests see repeats.
        """
        record = self.directory(directory_id)
        if size > self.config.max_upload_bytes:
            raise ApiError(413, f"File exceeds the maximum size of {self.config.max_upload_bytes}")
        uid = unique_id or filename
        now = self.emulator.now()
        key = (record.name, uid)
        self.uploads[key] = self.uploads.get(key, 0) + 1
        existing = record.by_unique_id(uid)
        if existing is not None:
            existing.size, existing.head, existing.updated_at = size, head[:HEAD_BYTES], now
            return existing
        file = FileRecord(
            id=self.new_id("dfl"),
            directory_id=record.id,
            file_id=self.new_id("file"),
            unique_id=uid,
            display_name=display_name or filename,
            size=size,
            head=head[:HEAD_BYTES],
            created_at=now,
        )
        record.files[file.id] = file
        return file
