"""The LlamaCloud emulator's state: v2 batches and their per-file jobs, over its directories.

Nothing runs in the background: a batch fixes its timeline and one outcome per file at create,
and every status is computed from the clock on read. A batch is ``PENDING`` for
``EmulatorConfig.validate_seconds``, ``THROTTLED`` for ``LlamaCloudConfig.throttled_seconds``
(and again for ``midrun_throttled_seconds`` halfway through the run), ``RUNNING`` for
``run_seconds + line_seconds * files``, then ``COMPLETED`` (``FAILED`` with ``fail_batches``).
While it runs, file ``i`` is mapped to its job at an even pace; the job ends at its slot's end
plus a share of ``job_tail_seconds``, so the last jobs may still run after the batch is
``COMPLETED`` (as the real API allows). A cancel stops the batch ``cancel_seconds`` later: files
not yet mapped stay unmapped, unfinished jobs become ``CANCELLED``.

``Stats.tags`` counts created batches per source directory *name* (``llamacloud:<name>``):
batchpump names a directory after its shard attempt, so a count above one is a duplicate
create. ``Stats.billing`` counts each ``unique_id`` whose job completed. Directories, uploads
and the knobs are ``_llamacloud_store_files``.
"""

from __future__ import annotations

from typing import Final, final

from .._routing import ApiError
from .._state import Emulator
from .files import HEAD_BYTES, DirectoryRecord, DirectoryStore, LlamaCloudConfig
from .jobs import LlamaBatch, LlamaJob, Outcome
from .wire import BatchCreateBody

__all__ = ["HEAD_BYTES", "DirectoryRecord", "LlamaCloudConfig", "LlamaCloudState"]

_TRANSIENT_ERROR: Final = "Internal error while processing the document; please retry."
_PERMANENT_ERROR: Final = "The document could not be parsed: the file is corrupted or encrypted."


@final
class LlamaCloudState(DirectoryStore):
    """Every LlamaCloud object of one emulator (directories and uploads via ``DirectoryStore``)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self.batches: dict[str, LlamaBatch] = {}
        self.jobs: dict[str, LlamaJob] = {}

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
        picked = [
            b
            for b in self.batches.values()
            if (status is None or b.status(now) == status)
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
