"""The GT Studio emulator's records: jobs, batches, projects, and how they read at a time.

Human work runs lazily on the emulator clock: a job is ``pending`` (ours) until ``picked_at``,
when an annotator picks it up, ``in_progress`` (ours, as the provider notes suggest) until
``done_at``, then its ``outcome``: ``completed`` (the documented word) or ``rejected`` (ours).
Nothing ticks: statuses and counters are computed when read. A batch keeps its jobs' pick and
finish times sorted, so project details count its finished jobs (completed or rejected) in
``completed_jobs`` by bisection; its status is ``Complete`` (documented) once all are
finished, else ``In Progress`` / ``Not Started`` (ours). Its jobs are paged in creation order,
the page token being the next job's sequence number.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._routing import ApiError
from .wire import BatchJobsPage, JobSummary, ProjectBatch

__all__ = ["Batch", "Job", "Project"]


@dataclass(eq=False)
class Job:
    id: str
    seq: int
    reference_id: str
    batch_id: str
    work_flow_id: str
    data: Any
    priority_weight: int
    picked_at: float
    done_at: float
    outcome: str

    def status(self, now: float) -> str:
        if now >= self.done_at:
            return self.outcome
        return "in_progress" if now >= self.picked_at else "pending"


@dataclass(eq=False)
class Batch:
    id: str
    name: str
    description: str
    created_at: float
    is_default: bool = False
    jobs: list[Job] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    picked: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    posted: list[float] = field(default_factory=list)

    def wire(self, now: float, lag: float = 0.0) -> ProjectBatch:
        """The batch as project details show it; counters see a job ``lag`` s after its POST."""
        if lag > 0.0:
            counted = bisect_right(self.posted, now - lag)
            jobs = self.jobs[:counted]
            total = counted
            finished = sum(1 for job in jobs if job.done_at <= now)
            started = sum(1 for job in jobs if job.picked_at <= now)
        else:
            total = len(self.jobs)
            finished = bisect_right(self.done, now)
            started = bisect_right(self.picked, now)
        status = "Complete" if total and finished == total else "Not Started"
        if status != "Complete" and started:
            status = "In Progress"
        stamp = datetime.fromtimestamp(self.created_at, UTC).isoformat()
        return ProjectBatch(
            id=self.id,
            name=self.name,
            description=self.description,
            is_default=self.is_default,
            total_jobs=total,
            completed_jobs=finished,
            total_frames=total,
            completed_frames=finished,
            annotations=finished,
            created_at=stamp,
            status=status,
        )

    def page(self, project_id: str, token: str, size: int, now: float) -> BatchJobsPage:
        """Up to ``size`` jobs from the one whose sequence number is ``token`` (``""``: first)."""
        start = 0
        if token:
            start = bisect_left(self.seqs, int(token)) if token.isdigit() else -1
            if start < 0 or start >= len(self.seqs) or str(self.seqs[start]) != token:
                raise ApiError(400, "Invalid pageToken", code="invalid_request_error")
        end = start + size
        jobs = [
            JobSummary(
                id=j.id,
                reference_id=j.reference_id,
                status=(status := j.status(now)),
                frames=1,
                annotations=int(status == "completed"),
            )
            for j in self.jobs[start:end]
        ]
        following = str(self.seqs[end]) if end < len(self.seqs) else ""
        return BatchJobsPage(
            id=self.id,
            project_id=project_id,
            name=self.name,
            jobs=jobs,
            next_page_token=following,
        )


@dataclass(eq=False)
class Project:
    id: str
    batches: dict[str, Batch] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    refs: dict[str, Job] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    default: str = ""
    last_seq: int = 0
