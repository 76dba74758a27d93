"""The LlamaCloud emulator's records (directories, files, v2 batches, jobs) and their views.

A batch's and a job's status are pure functions of the clock (see ``store`` for the rules):
nothing here schedules anything, so a ``ManualClock`` moved by ``advance`` drives a whole batch
in a test. The ``*_view`` functions render an object as the API shows it at time ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, final

from .wire import (
    Batch,
    BatchConfig,
    BatchResult,
    Directory,
    DirectoryCreateBody,
    DirectoryFile,
    ExtractJob,
    JobReference,
    ParseJob,
    ParseResult,
    rfc3339,
)

__all__ = [
    "DirectoryRecord",
    "FileRecord",
    "LlamaBatch",
    "LlamaJob",
    "Outcome",
    "batch_view",
    "directory_view",
    "extract_job_view",
    "file_view",
    "parse_job_view",
    "parse_result_view",
]

_TERMINAL: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


@final
@dataclass(eq=False, slots=True, kw_only=True)
class FileRecord:
    """One directory file: its ids and the first bytes of what was uploaded."""

    id: str
    directory_id: str
    file_id: str
    unique_id: str
    display_name: str
    size: int
    head: bytes
    created_at: float
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at


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


@final
@dataclass(eq=False, slots=True)
class Outcome:
    """What file ``i`` of a batch gets: a job, or a mapping ``error``."""

    job: LlamaJob | None = None
    error: str | None = None


@final
@dataclass(eq=False, slots=True, kw_only=True)
class LlamaBatch:
    """A batch's fixed timeline; status and mappings are derived from the time asked about."""

    id: str
    directory_id: str
    config: BatchConfig
    created_at: float
    pending: float
    throttled: float
    midrun_throttled: float
    run: float
    tail: float
    fail: bool
    files: list[FileRecord]
    outcomes: list[Outcome] = field(default_factory=list)
    cancel_at: float | None = None
    stop: float = math.inf
    settled: bool = False
    billed: set[int] = field(default_factory=set)

    @property
    def run_start(self) -> float:
        return self.created_at + self.pending + self.throttled

    @property
    def run_end(self) -> float:
        return self.run_start + self.run + self.midrun_throttled

    def mapped_at(self, i: int) -> float:
        """When file ``i`` gets its job (or its mapping error)."""
        return self.run_start + (self.run_end - self.run_start) * i / len(self.files)

    def job_end(self, i: int) -> float:
        n = len(self.files)
        return self.run_start + (self.run_end - self.run_start + self.tail) * (i + 1) / n

    def status(self, t: float) -> str:
        if self.cancel_at is not None and t >= self.stop and self.stop < self.run_end:
            return "CANCELLED"
        if t < self.created_at + self.pending:
            return "PENDING"
        if t < self.run_start:
            return "THROTTLED"
        middle = self.run_start + self.run / 2
        if middle <= t < middle + self.midrun_throttled:
            return "THROTTLED"
        if t < self.run_end:
            return "RUNNING"
        return "FAILED" if self.fail else "COMPLETED"

    def terminal(self, t: float) -> bool:
        return self.status(t) in _TERMINAL

    def updated_at(self, t: float) -> float:
        marks = (self.created_at, self.created_at + self.pending, self.run_start, self.run_end)
        last = max(m for m in marks if m <= t)
        return min(last, self.stop) if self.cancel_at is not None else last

    def mapped(self, i: int, t: float) -> bool:
        at = self.mapped_at(i)
        return at <= t and at < self.stop

    def results(self, t: float) -> Iterator[tuple[FileRecord, Outcome]]:
        """The mappings that exist at ``t`` (none before the batch runs)."""
        for i, file in enumerate(self.files):
            if self.mapped(i, t):
                yield file, self.outcomes[i]

    def bill(self, t: float) -> Iterator[str]:
        """``unique_id``s of jobs completed by ``t`` and not billed yet; settles when done."""
        pending = False
        for i, outcome in enumerate(self.outcomes):
            job = outcome.job
            if job is None or i in self.billed:
                continue
            if not job.visible(t):
                pending = pending or self.mapped_at(i) < self.stop  # mapped later
                continue
            status = job.status(t)
            if status == "COMPLETED":
                self.billed.add(i)
                yield self.files[i].unique_id
            elif status not in _TERMINAL:
                pending = True
        self.settled = self.terminal(t) and not pending


@final
@dataclass(eq=False, slots=True, kw_only=True)
class LlamaJob:
    """One file's parse_v2/extract_v2 job; ``error`` set means it ends ``FAILED``."""

    id: str
    batch: LlamaBatch
    index: int
    error: str | None = None

    @property
    def kind(self) -> str:
        return self.batch.config.job.type

    @property
    def file(self) -> FileRecord:
        return self.batch.files[self.index]

    @property
    def created_at(self) -> float:
        return self.batch.mapped_at(self.index)

    def visible(self, t: float) -> bool:
        return self.batch.mapped(self.index, t)

    def status(self, t: float) -> str:
        end = self.batch.job_end(self.index)
        if end > self.batch.stop and t >= self.batch.stop:
            return "CANCELLED"
        if t >= end:
            return "FAILED" if self.error is not None else "COMPLETED"
        return "RUNNING" if t >= (self.created_at + end) / 2 else "PENDING"

    def updated_at(self, t: float) -> float:
        end = min(self.batch.job_end(self.index), self.batch.stop)
        return end if t >= end else self.created_at


# -- wire views -----------------------------------------------------------------------------


def directory_view(project_id: str, d: DirectoryRecord) -> Directory:
    stamp = rfc3339(d.created_at)
    return Directory(
        id=d.id,
        project_id=project_id,
        name=d.name,
        description=d.description,
        type=d.type,
        expires_at=d.expires_at,
        created_at=stamp,
        updated_at=stamp,
    )


def file_view(project_id: str, f: FileRecord) -> DirectoryFile:
    return DirectoryFile(
        id=f.id,
        project_id=project_id,
        directory_id=f.directory_id,
        unique_id=f.unique_id,
        display_name=f.display_name,
        file_id=f.file_id,
        metadata={},
        created_at=rfc3339(f.created_at),
        updated_at=rfc3339(f.updated_at),
    )


def batch_view(project_id: str, b: LlamaBatch, t: float, *, expand: bool) -> Batch:
    results = None
    if expand and t >= b.run_start:
        results = [
            BatchResult(
                source_directory_file_id=f.id,
                job_reference=JobReference(type=b.config.job.type, id=o.job.id) if o.job else None,
                error_message=o.error,
            )
            for f, o in b.results(t)
        ]
    return Batch(
        id=b.id,
        project_id=project_id,
        source_directory_id=b.directory_id,
        config=b.config,
        status=b.status(t),
        created_at=rfc3339(b.created_at),
        updated_at=rfc3339(b.updated_at(t)),
        results=results,
    )


def parse_job_view(project_id: str, j: LlamaJob, t: float) -> ParseJob:
    status = j.status(t)
    return ParseJob(
        id=j.id,
        project_id=project_id,
        status=status,
        name=j.file.display_name,
        tier="agentic",
        error_message=j.error if status == "FAILED" else None,
        created_at=rfc3339(j.created_at),
        updated_at=rfc3339(j.updated_at(t)),
    )


def parse_result_view(project_id: str, j: LlamaJob, t: float, expand: set[str]) -> ParseResult:
    result = ParseResult(job=parse_job_view(project_id, j, t))
    if result.job.status != "COMPLETED":
        return result
    text = j.file.head.decode("utf-8", "replace").strip() or "(empty)"
    md = f"# {j.file.display_name}\n\n{text}"
    if "markdown" in expand:
        result.markdown = {"pages": [{"page_number": 1, "success": True, "markdown": md}]}
        result.markdown_full = md
    if "text" in expand:
        result.text = {"pages": [{"page_number": 1, "text": text}]}
        result.text_full = text
    if "items" in expand:
        item = {"type": "text", "md": md, "value": text}
        page = {"page_number": 1, "page_width": 612.0, "page_height": 792.0, "success": True}
        result.items = {"pages": [{**page, "items": [item]}]}
    if "job_metadata" in expand:
        result.job_metadata = {"pages": 1, "bytes": j.file.size}
    return result


def extract_job_view(project_id: str, j: LlamaJob, t: float) -> ExtractJob:
    status = j.status(t)
    data = None
    if status == "COMPLETED":
        first = j.file.head.decode("utf-8", "replace").strip().splitlines()
        data = {"document": j.file.display_name, "first_line": first[0] if first else ""}
    return ExtractJob(
        id=j.id,
        project_id=project_id,
        file_input=j.file.id,
        configuration_id=j.batch.config.job.configuration_id,
        status=status,
        error_message=j.error if status == "FAILED" else None,
        extract_result=data,
        created_at=rfc3339(j.created_at),
        updated_at=rfc3339(j.updated_at(t)),
    )
