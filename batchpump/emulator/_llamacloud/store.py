"""The LlamaCloud emulator's knobs and state: directories, uploads, v2 batches and their jobs.

Nothing runs in the background: a batch fixes its timeline and one outcome per file at create,
and every status is computed from the clock on read. A batch is ``PENDING`` for
``EmulatorConfig.validate_seconds``, ``THROTTLED`` for ``LlamaCloudConfig.throttled_seconds``
(and again for ``midrun_throttled_seconds`` halfway through the run), ``RUNNING`` for
``run_seconds + line_seconds * files``, then ``COMPLETED`` (``FAILED`` with ``fail_batches``).
While it runs, file ``i`` is mapped to its job at an even pace; the job ends at its slot's end
plus a share of ``job_tail_seconds``, so the last jobs may still run after the batch is
``COMPLETED`` (as the real API allows). A cancel stops the batch ``cancel_seconds`` later: files
not yet mapped stay unmapped, unfinished jobs become ``CANCELLED``.

Uploads pass a per-project fixed window (``upload_limit`` per ``upload_window_seconds``, the
published 50 / 5 s by default): the counter restarts when each window ends. Only the first
``HEAD_BYTES`` of each upload are kept.

``Stats.tags`` counts created batches per source directory *name* (``llamacloud:<name>``):
batchpump names a directory after its shard attempt, so a count above one is a duplicate
create. ``Stats.billing`` counts each ``unique_id`` whose job completed.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Final, final

import msgspec

from .._routing import ApiError
from .._state import Emulator
from .records import DirectoryRecord, FileRecord, LlamaBatch, LlamaJob, Outcome
from .wire import BatchCreateBody, DirectoryCreateBody

__all__ = ["HEAD_BYTES", "LlamaCloudConfig", "LlamaCloudState"]

_TRANSIENT_ERROR: Final = "Internal error while processing the document; please retry."
_PERMANENT_ERROR: Final = "The document could not be parsed: the file is corrupted or encrypted."

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
class LlamaCloudState:
    """Every LlamaCloud object of one emulator: knobs, project, directories, batches, jobs."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.config = LlamaCloudConfig()
        self._rng = random.Random(emulator.config.seed + 3)
        self.project_id = self.new_id("prj")
        self.directories: dict[str, DirectoryRecord] = {}
        #: Upload calls that reached a directory, per ``(directory name, unique_id)``.
        self.uploads: dict[tuple[str, str], int] = {}
        self._window = (-1, 0)
        self.batches: dict[str, LlamaBatch] = {}
        self.jobs: dict[str, LlamaJob] = {}

    def configure(self, config: LlamaCloudConfig) -> None:
        """Replace the LlamaCloud knobs; takes effect on the next request or batch."""
        self.config = config

    def new_id(self, prefix: str) -> str:
        """``<prefix>-<uuid4>``, reproducible from the emulator's seed."""
        return f"{prefix}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    # -- directories and uploads -------------------------------------------------------------

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
        now = self.emulator.emulated_clock.monotonic()
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

    # -- batches -----------------------------------------------------------------------------

    def create_batch(self, body: BatchCreateBody) -> LlamaBatch:
        directory = self.directories.get(body.source_directory_id)
        if directory is None:
            raise ApiError(404, f"Directory {body.source_directory_id} not found")
        files = list(directory.files.values())
        if not files:
            raise ApiError(400, f"Directory {directory.id} has no files")
        if len(files) > self.config.max_files:
            raise ApiError(
                400,
                f"A batch can process at most {self.config.max_files} files; directory "
                f"{directory.id} has {len(files)}",
            )
        emu, config = self.emulator, self.emulator.config
        now = emu.now()
        run = config.run_seconds + config.line_seconds * len(files)
        batch = LlamaBatch(
            id=self.new_id("bat"),
            directory_id=directory.id,
            config=body.config,
            created_at=now,
            pending=config.validate_seconds,
            throttled=self.config.throttled_seconds,
            midrun_throttled=self.config.midrun_throttled_seconds,
            run=run,
            tail=self.config.job_tail_seconds,
            fail=self.config.fail_batches,
            files=files,
        )
        prefix = "pjb" if body.config.job.type == "parse_v2" else "ext"
        fatal = emu.faults.line_fatal_rate
        transient = max(self.config.job_failure_rate, emu.faults.line_retryable_rate)
        mapping = self.config.mapping_error_rate
        for i, file in enumerate(files):
            x = emu.line_rng.random() if fatal or transient or mapping else 1.0
            if x < mapping:
                batch.outcomes.append(Outcome(error="Failed to create a job for this file."))
                continue
            error = None
            if file.size == 0:
                error = "The file is empty."
            elif x < mapping + fatal:
                error = _PERMANENT_ERROR
            elif x < mapping + fatal + transient:
                error = _TRANSIENT_ERROR
            job = LlamaJob(id=self.new_id(prefix), batch=batch, index=i, error=error)
            self.jobs[job.id] = job
            batch.outcomes.append(Outcome(job=job))
        self.batches[batch.id] = batch
        emu.raw_stats.batches_created += 1
        emu.raw_stats.tags[f"llamacloud:{directory.name}"] += 1
        return batch

    def batch(self, batch_id: str) -> LlamaBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Batch {batch_id} not found")
        return batch

    def cancel_batch(self, batch_id: str) -> LlamaBatch:
        """Start cancelling; a terminal batch cannot be (400, never 409: SDKs retry 409)."""
        batch = self.batch(batch_id)
        now = self.emulator.now()
        if batch.terminal(now):
            raise ApiError(400, f"Batch {batch_id} is already {batch.status(now)}")
        if batch.cancel_at is None:
            batch.cancel_at = now
            batch.stop = now + self.emulator.config.cancel_seconds
        return batch

    def list_batches(
        self, *, status: str | None, source_directory_id: str | None
    ) -> list[LlamaBatch]:
        now = self.emulator.now()
        cutoff = now - self.emulator.faults.list_lag_seconds
        picked = [
            b
            for b in self.batches.values()
            if b.created_at <= cutoff
            and (status is None or b.status(now) == status)
            and (source_directory_id is None or b.directory_id == source_directory_id)
        ]
        return picked[::-1] if self.config.newest_first else picked

    # -- jobs --------------------------------------------------------------------------------

    def job(self, kind: str, job_id: str) -> LlamaJob:
        """A job visible by now (mapped), of ``kind`` (``parse_v2``/``extract_v2``)."""
        job = self.jobs.get(job_id)
        if job is None or job.kind != kind or not job.visible(self.emulator.now()):
            what = "Parse job" if kind == "parse_v2" else "Extract job"
            raise ApiError(404, f"{what} {job_id} not found")
        return job

    def list_jobs(self, kind: str, job_ids: list[str], status: str | None) -> list[LlamaJob]:
        now = self.emulator.now()
        if job_ids:
            found = (self.jobs.get(i) for i in dict.fromkeys(job_ids))
            jobs = [j for j in found if j is not None]
        else:
            jobs = list(reversed(self.jobs.values()))
        return [
            j
            for j in jobs
            if j.kind == kind and j.visible(now) and (status is None or j.status(now) == status)
        ]

    # -- billing -----------------------------------------------------------------------------

    def settle(self) -> None:
        """Bill every job that completed by now (``Emulator.stats`` calls this)."""
        now = self.emulator.now()
        billing = self.emulator.raw_stats.billing
        for batch in self.batches.values():
            if not batch.settled:
                billing.update(batch.bill(now))
