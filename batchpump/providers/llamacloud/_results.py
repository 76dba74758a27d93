"""LlamaCloud results: a batch's file-to-job mapping, the jobs polled in bulk, their content.

``JobResults.collect`` reads the ``?expand=results`` mapping of a batch: a file with a mapping
``error_message`` is ``Errored`` at once; the other files' jobs are polled in bulk
(``?job_ids=``, ``JOB_IDS_PER_CALL`` at a time) until terminal (only while the batch is
``COMPLETED``: otherwise one look), and each completed job's JSON (``GET /api/v2/parse/{id}``
with the ``expand`` fields, or ``GET /api/v2/extract/{id}``) becomes a ``Succeeded`` response,
byte for byte, ``CONTENT_CHUNK`` fetched together. ``FAILED`` jobs are ``Errored`` (retryable
unless the message says the document itself is bad); ``CANCELLED`` ones are ``Canceled``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Final, final
from urllib.parse import urlencode

import anyio
import msgspec

from ..._clock import Clock
from ..._models import Canceled, Result, Succeeded
from ._api import LlamaCloudApi
from ._wire import (
    JOB_PAGE_DECODER,
    TERMINAL_JOB_STATUSES,
    JobType,
    WireBatch,
    WireJob,
    errored,
)

__all__ = ["CONTENT_CHUNK", "JOB_IDS_PER_CALL", "JOB_POLL_MAX", "JOB_POLL_MIN", "JobResults"]

#: Job ids per bulk status call (keeps the query string short).
JOB_IDS_PER_CALL: Final = 100
#: Job contents fetched together before they are yielded (the download gate bounds calls).
CONTENT_CHUNK: Final = 16
JOB_POLL_MIN: Final = 1.0
JOB_POLL_MAX: Final = 10.0


@final
class JobResults:
    """The results of one job type's batches (``expand``: parse_v2 content per document)."""

    def __init__(
        self, api: LlamaCloudApi, *, job_type: JobType, expand: tuple[str, ...], clock: Clock
    ) -> None:
        self._api = api
        self._job_type = job_type
        self._expand = expand
        self._clock = clock
        self._path = "/api/v2/parse" if job_type == "parse_v2" else "/api/v2/extract"

    async def collect(
        self, wire: WireBatch, names: Mapping[str, str], *, batch_id: str, attempt: int
    ) -> AsyncGenerator[Result, None]:
        """One result per mapped file of ``wire`` (``names``: directory file id -> custom_id)."""
        jobs: dict[str, str] = {}
        for entry in wire.results or ():
            custom_id = names.get(entry.source_directory_file_id)
            if custom_id is None:
                continue
            if entry.job_reference is not None:
                jobs[entry.job_reference.id] = custom_id
            elif entry.error_message is not None:
                yield errored(custom_id, batch_id, attempt, "mapping_error", entry.error_message)
        delay, wait = JOB_POLL_MIN, wire.status == "COMPLETED"
        while jobs:
            statuses = await self._statuses(list(jobs))
            ended = [j for j in statuses if j.status in TERMINAL_JOB_STATUSES and j.id in jobs]
            for start in range(0, len(ended), CONTENT_CHUNK):
                chunk = ended[start : start + CONTENT_CHUNK]
                for result in await self._settle(chunk, jobs, batch_id, attempt):
                    yield result
            for job in ended:
                jobs.pop(job.id, None)
            if not jobs or not wait:
                break
            await self._clock.sleep(delay)
            delay = min(delay * 1.5, JOB_POLL_MAX)

    async def _statuses(self, job_ids: list[str]) -> list[WireJob]:
        out: list[WireJob] = []
        for start in range(0, len(job_ids), JOB_IDS_PER_CALL):
            ids = job_ids[start : start + JOB_IDS_PER_CALL]
            query = urlencode([("job_ids", i) for i in ids] + [("page_size", str(len(ids)))])
            resp = await self._api.call("GET", f"{self._path}?{query}", "poll")
            out.extend(self._api.decode(JOB_PAGE_DECODER, resp.body, "job list").items)
        return out

    async def _settle(
        self, ended: list[WireJob], jobs: dict[str, str], batch_id: str, attempt: int
    ) -> list[Result]:
        """The results of terminal jobs; completed ones' content fetched concurrently."""
        out: list[Result] = []

        async def fetch(job_id: str, custom_id: str) -> None:
            expand = urlencode([("expand", e) for e in self._expand])
            path = f"{self._path}/{job_id}"
            if self._job_type == "parse_v2" and expand:
                path = f"{path}?{expand}"
            resp = await self._api.call("GET", path, "download")
            out.append(
                Succeeded(
                    custom_id=custom_id,
                    batch_id=batch_id,
                    attempt=attempt,
                    response=msgspec.Raw(resp.body),
                )
            )

        async with anyio.create_task_group() as tg:
            for job in ended:
                custom_id = jobs[job.id]
                if job.status == "COMPLETED":
                    tg.start_soon(fetch, job.id, custom_id)
                elif job.status == "CANCELLED":
                    out.append(Canceled(custom_id=custom_id, batch_id=batch_id, attempt=attempt))
                else:
                    message = job.error_message or f"job {job.id} failed"
                    out.append(errored(custom_id, batch_id, attempt, "job_failed", message))
        return out
