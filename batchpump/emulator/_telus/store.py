"""The GT Studio emulator's state: projects, batches, jobs, and the rules the API enforces.

A job created now is picked up by an annotator ``validate_seconds`` later and finishes
``run_seconds`` x a seeded factor in [0.5, 1.5) after that: ``rejected`` with probability
``faults.line_fatal_rate``, else ``completed``. Nothing ticks: the records
(``records``) compute every status and counter from those times when read.

Every POST takes a token from one bucket of ``post_rate`` per second (the documented 20 POST/s,
burst ``post_burst``) on the emulator clock; beyond it the answer is 429. Shared stats count
batches per name in ``tags`` and paid jobs per ``reference_id`` in ``billing``: a job that will
end ``completed`` is paid work (counted when it is created, since its outcome is fixed then),
a ``rejected`` one is not (``Stats.billing`` counts lines that ran to success).
"""

from __future__ import annotations

import random
import uuid
from bisect import insort
from collections import defaultdict
from typing import Any, Final, Literal, final
from urllib.parse import urlsplit

import msgspec

from .._faults import RateLimit, TokenBucket
from .._routing import ApiError
from .._state import Emulator
from .._stats import note_tag
from .records import Batch, Job, Project
from .wire import BatchJobsPage, CreateBatchBody, CreateJobBody, JobDetails, ProjectDetails

__all__ = ["RESULTS_PATH", "TelusSettings", "TelusState"]

#: Where result files live (private: fetched through ``/v1/attachments`` and a signature).
RESULTS_PATH: Final = "/telus/_results"
_TYPES: Final = frozenset({"TEST", "NON_TEST"})


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _error(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, message, code=code)


class TelusSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Knobs of the GT Studio surface (timing comes from ``EmulatorConfig``).

    Attributes:
        post_rate: POSTs per emulator second before 429 (``None``: unlimited), default 20.
        post_burst: tokens the POST bucket holds, default 20 (one second's worth).
        auth_status: status of a bad key: 401 (legacy, the default) or 400 ``auth-failure``.
        api_keys: accepted keys; empty accepts any non-empty key.
        page_size: jobs per batch page, default 100.
    """

    post_rate: float | None = 20.0
    post_burst: int = 20
    auth_status: Literal[400, 401] = 401
    api_keys: tuple[str, ...] = ()
    page_size: int = 100


@final
class TelusState:
    """Projects (created on first use of a UUID project id), batches and jobs."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.settings = TelusSettings()
        self.projects: dict[str, Project] = {}
        self.scripted: defaultdict[str, list[str]] = defaultdict(list)
        self._rng = random.Random(emulator.config.seed + 7)
        self._bucket: TokenBucket | None = None

    # -- knobs ------------------------------------------------------------------------------

    def configure(self, settings: TelusSettings) -> None:
        """Replace the knobs (the POST bucket starts full again)."""
        self.settings = settings
        self._bucket = None

    def script_errors(self, reference_id: str, *codes: str) -> None:
        """Answer the next job creates of ``reference_id`` with these error codes, in order."""
        self.scripted[reference_id].extend(codes)

    def take_post(self) -> bool:
        """Take one POST token; ``False`` means answer 429."""
        rate = self.settings.post_rate
        if rate is None:
            return True
        if self._bucket is None:
            burst = self.settings.post_burst
            limit = RateLimit(requests=burst, per_seconds=burst / rate)
            self._bucket = TokenBucket(limit, self.emulator.emulated_clock.quota_clock)
        return self._bucket.try_acquire()

    # -- objects ----------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def project(self, project_id: str) -> Project:
        if not _is_uuid(project_id):
            raise _error("resource_error", f"project {project_id} not found")
        project = self.projects.get(project_id)
        if project is None:
            project = self.projects[project_id] = Project(project_id)
            default = Batch(self._uuid(), "Default", "", self.emulator.now(), is_default=True)
            project.batches[default.id] = default
            project.default = default.id
        return project

    def create_batch(self, project_id: str, body: CreateBatchBody) -> Batch:
        project = self.project(project_id)
        name = body.name
        if not isinstance(name, str) or not name.strip():
            raise _error("GE_0002", "name is missing")
        if name in project.names:
            raise _error("BATCH_CREATION", f"a batch named {name!r} already exists")
        description = body.description if isinstance(body.description, str) else ""
        batch = Batch(self._uuid(), name, description, self.emulator.now())
        project.batches[batch.id] = batch
        project.names.add(name)
        stats = self.emulator.raw_stats
        stats.batches_created += 1
        stats.tags[name] += 1
        return batch

    def create_job(self, project_id: str, body: CreateJobBody) -> Job:
        project = self.project(project_id)
        ref, flow = body.reference_id, body.work_flow_id or body.tag
        if not isinstance(ref, str) or not ref:
            raise _error("FS_0002", "reference_id is missing")
        if flow is None or flow == "":
            raise _error("FS_0005", "work_flow_id is missing")
        if not _is_uuid(flow):
            raise _error("GE_0001", "work_flow_id is not a valid UUID")
        batch = self._batch_for(project, body.batch_id)
        self._check_data(body)
        weight = body.priority_weight if body.priority_weight is not None else 5
        if type(weight) is not int or not 1 <= weight <= 9:
            raise _error("FS_00012", "priority_weight must be between 1 and 9")
        if body.type is not None and body.type not in _TYPES:
            raise _error("FS_00011", "job type must be TEST or NON_TEST")
        if self.scripted.get(ref):
            code = self.scripted[ref].pop(0)
            raise _error(code, f"scripted error {code} for reference_id {ref}")
        faults = self.emulator.faults
        if self.emulator.line_streams.draw("job_retryable", faults.line_retryable_rate):
            raise _error("FS_0008", "something went wrong, please try again later")
        if ref in project.refs:
            raise _error("FS_0001", f"reference_id {ref} is already in use")
        return self._add_job(project, batch, ref, flow, body.data, weight)

    def _batch_for(self, project: Project, batch_id: object) -> Batch:
        if batch_id is None or batch_id == "":
            return project.batches[project.default]
        if not _is_uuid(batch_id):
            raise _error("GE_0001", "batch_id is not a valid UUID")
        batch = project.batches.get(str(batch_id))
        if batch is None:
            raise _error("GE_0001", f"batch {batch_id} not found in this project")
        return batch

    @staticmethod
    def _check_data(body: CreateJobBody) -> None:
        data = body.data
        if not body.has_data or data is None or data == {}:
            raise _error("FS_0004", "data is empty")
        if not isinstance(data, dict):
            raise _error("FS_0003", "data is not a valid JSON object")
        url = data.get("image_url")
        if url is not None:
            host = urlsplit(url).hostname if isinstance(url, str) else None
            if host is None:
                raise _error("FS_0003", "image_url is not a URL")
            if host.endswith(".invalid"):  # RFC 6761: never resolves
                raise _error("FS_0007", f"attachment {url} could not be accessed")

    def _add_job(
        self, project: Project, batch: Batch, ref: str, flow: str, data: Any, weight: int
    ) -> Job:
        config = self.emulator.config
        now = self.emulator.now()
        project.last_seq = max(project.last_seq + 1, int(now * 1e9))
        picked = now + config.validate_seconds
        done = picked + config.run_seconds * (0.5 + self._rng.random())
        fatal = self.emulator.line_streams.draw("line_fatal", self.emulator.faults.line_fatal_rate)
        job = Job(
            id=self._uuid(),
            seq=project.last_seq,
            reference_id=ref,
            batch_id=batch.id,
            work_flow_id=flow,
            data=data,
            priority_weight=weight,
            picked_at=picked,
            done_at=done,
            outcome="rejected" if fatal else "completed",
        )
        project.jobs[job.id] = job
        project.refs[ref] = job
        note_tag(ref)  # the journal names the line (reference_id is its custom_id)
        batch.jobs.append(job)
        batch.seqs.append(job.seq)
        batch.picked.append(picked)
        batch.posted.append(now)
        insort(batch.done, done)
        if job.outcome == "completed":  # a rejected job is no paid work
            self.emulator.raw_stats.billing[ref] += 1
        return job

    # -- reads ------------------------------------------------------------------------------

    def job(self, project_id: str, job_id: str) -> Job:
        job = self.project(project_id).jobs.get(job_id)
        if job is None:
            code = "GE_0001" if not _is_uuid(job_id) else "FS_0006"
            raise _error(code, f"job {job_id} not found")
        return job

    def job_details(self, project_id: str, job: Job, origin: str) -> JobDetails:
        status = job.status(self.emulator.now())
        result = f"{origin}{RESULTS_PATH}/{job.id}.json" if status == "completed" else ""
        return JobDetails(
            project_id=project_id,
            job_id=job.id,
            batch_id=job.batch_id,
            reference_id=job.reference_id,
            status=status,
            work_flow_id=job.work_flow_id,
            tag=job.work_flow_id,
            priority_weight=job.priority_weight,
            result=result,
        )

    def batch_page(self, project_id: str, batch_id: str, token: str) -> BatchJobsPage:
        project = self.project(project_id)
        if not _is_uuid(batch_id):
            raise _error("GE_0001", "batch_id is not a valid UUID")
        batch = project.batches.get(batch_id)
        if batch is None:
            raise _error("GE_0001", f"batch {batch_id} not found")
        return batch.page(project.id, token, self.settings.page_size, self.emulator.now())

    def details(self, project_id: str) -> ProjectDetails:
        project = self.project(project_id)
        now = self.emulator.now()
        faults = self.emulator.faults
        cutoff = now - faults.list_lag_seconds
        batches = [
            b.wire(now, faults.counter_lag_seconds)
            for b in project.batches.values()
            if b.created_at <= cutoff
        ]
        return ProjectDetails(name="Emulated project", base="IMAGE", batches=batches)

    def result_file(self, job_id: str) -> dict[str, Any] | None:
        """The annotation JSON of a completed job, or ``None``."""
        now = self.emulator.now()
        for project in self.projects.values():
            job = project.jobs.get(job_id)
            if job is not None and job.status(now) == "completed":
                return {
                    "job_id": job.id,
                    "reference_id": job.reference_id,
                    "data": job.data,
                    "annotations": [{"label": "object", "shape": "rectangle", "id": job.seq}],
                }
        return None
