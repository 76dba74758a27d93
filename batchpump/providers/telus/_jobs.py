"""GT Studio jobs: one POST per item (paced, idempotent through FS_0001) and result collection.

``JobCreator.create_all`` sends the items of one shard file to one batch. Job POSTs pass the
``item`` gate (rate ``job_rate``, ``item_concurrency`` in flight) and are retried by the HTTP
layer on 429/5xx/connection errors: safe, because a job that did reach the API answers the
retry with ``FS_0001``. ``iter_results`` pages a batch's jobs and fetches each finished job's
annotation JSON (job -> ``result`` URL -> ``/v1/attachments?url=`` -> redirect -> JSON).
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, TypeVar, final

import anyio
import msgspec

from ..._clock import Clock
from ..._config import RetryPolicy
from ..._errors import (
    AuthenticationError,
    BadRequestError,
    BatchpumpInternalError,
    ProtocolError,
    ProviderError,
    unwrap_group,
)
from ..._fileio import run_io
from ..._http import HttpClient, Response
from ..._models import Errored, Result, Succeeded
from ..._retry import backoff
from ._wire import (
    ANY_DECODER,
    BATCH_JOBS_DECODER,
    ENCODER,
    JOB_DECODER,
    JOB_DONE,
    JOB_FAILED,
    SHARD_ITEM_DECODER,
    Envelope,
    WireBatchJob,
    WireCreateJob,
    classify,
)

__all__ = ["JobCreator", "JobStatistics", "Outcome", "iter_results"]

_T = TypeVar("_T")
_A = TypeVar("_A")

#: Characters of an error body kept on an ``Errored`` result.
_BODY_CHARS: Final = 2000


@final
class JobStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Job counters of one adapter.

    Attributes:
        created: jobs the API created for our POSTs.
        reconciled: POSTs answered ``FS_0001`` (the job already existed: not created twice).
        skipped: items of a resumed batch found already created while paging its jobs.
        rejected: items refused for good (a permanent error code).
        retried: POSTs sent again after a retryable error code (``FS_0000``/``FS_0008``...).
    """

    created: int
    reconciled: int
    skipped: int
    rejected: int
    retried: int


@dataclass(eq=False)
class Outcome:
    """What creating one batch's jobs gave: jobs in the batch, items errored at create."""

    jobs: int = 0
    errored: list[Errored] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Item:
    custom_id: str
    body: bytes


def _load(path: str, batch_id: str, work_flow_id: str | None) -> list[_Item]:
    """Read a shard file into ready job bodies (a thread: the file is at most ``max_bytes``)."""
    items: list[_Item] = []
    try:
        lines = SHARD_ITEM_DECODER.decode_lines(Path(path).read_bytes())
    except msgspec.MsgspecError as exc:
        raise BatchpumpInternalError(f"telus: shard {path} has a line that is no item") from exc
    for line in lines:
        data, weight = line.data, line.priority_weight
        flow = line.work_flow_id or work_flow_id
        if isinstance(data, msgspec.UnsetType) or flow is None:
            raise BatchpumpInternalError(
                f"telus: shard line {line.custom_id!r} has no data or no work_flow_id"
            )
        job = WireCreateJob(
            reference_id=line.custom_id,
            work_flow_id=flow,
            batch_id=batch_id,
            data=data,
            priority_weight=weight,
        )
        items.append(_Item(line.custom_id, ENCODER.encode(job)))
    return items


async def _gather(calls: Sequence[Callable[[], Awaitable[_A]]]) -> list[_A]:
    """Run ``calls`` in one task group; the first failure cancels the rest and is raised alone."""
    out: list[_A] = []

    async def run(call: Callable[[], Awaitable[_A]]) -> None:
        out.append(await call())

    try:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(run, call)
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    return out


@final
class JobCreator:
    """Creates the jobs of shard files, at most ``concurrency`` POSTs in flight."""

    def __init__(
        self,
        http: HttpClient,
        *,
        project: str,
        work_flow_id: str | None,
        concurrency: int,
        retry: RetryPolicy,
        clock: Clock,
    ) -> None:
        self._http = http
        self._project = project
        self._work_flow_id = work_flow_id
        self._concurrency = concurrency
        self._retry = retry
        self._clock = clock
        self._rng = random.Random()
        self._created = self._reconciled = self._skipped = self._rejected = self._retried = 0

    def statistics(self) -> JobStatistics:
        return JobStatistics(
            created=self._created,
            reconciled=self._reconciled,
            skipped=self._skipped,
            rejected=self._rejected,
            retried=self._retried,
        )

    async def create_all(self, path: str, batch_id: str, *, existing: bool) -> Outcome:
        """One job per item of shard file ``path`` in ``batch_id``.

        With ``existing``, the batch's jobs are paged first and items already there skipped.
        """
        items = await run_io(_load, path, batch_id, self._work_flow_id)
        done = await self._existing(batch_id) if existing else set()
        missing = [item for item in items if item.custom_id not in done]
        outcome = Outcome(jobs=len(items) - len(missing))
        self._skipped += outcome.jobs
        todo = iter(missing)

        async def worker() -> None:
            for item in todo:  # one shared iterator: each item is taken by one worker
                await self._create_one(item, batch_id, outcome)

        await _gather([worker] * min(self._concurrency, max(1, len(missing))))
        return outcome

    async def _existing(self, batch_id: str) -> set[str]:
        refs: set[str] = set()
        async for page in _pages(self._http, self._project, batch_id):
            refs.update(job.reference_id for job in page)
        return refs

    async def _create_one(self, item: _Item, batch_id: str, outcome: Outcome) -> None:
        tries = 0
        while True:
            tries += 1
            resp = await self._http.request(
                "POST",
                f"/v1/projects/{self._project}/jobs",
                cls="item",
                json=item.body,
                passthrough=(400,),  # error codes are decided here, per item
            )
            if resp.status != 400:
                self._created += 1
                outcome.jobs += 1
                return
            code, message = self.error_of(resp)
            verdict = classify(code)
            if verdict == "exists":
                self._reconciled += 1
                outcome.jobs += 1
                return
            if verdict == "auth":
                raise self.refusal(resp, what="job create")
            if verdict == "retry" and tries < self._retry.attempts:
                self._retried += 1
                await self._clock.sleep(backoff(tries - 1, self._retry, self._rng))
                continue
            self._rejected += verdict == "permanent"
            body = resp.body if len(resp.body) <= _BODY_CHARS else None  # whole JSON or none
            outcome.errored.append(
                Errored(
                    custom_id=item.custom_id,
                    batch_id=batch_id,
                    code=code or "http_400",
                    message=self._http.redact(message or "job refused"),
                    status_code=400,
                    body=msgspec.Raw(body) if body is not None else msgspec.UNSET,
                    retryable=verdict == "retry",
                )
            )
            return

    def error_of(self, resp: Response) -> tuple[str | None, str | None]:
        """``(code, message)`` of an error envelope (``(None, None)`` if it is not one)."""
        try:
            error = ANY_DECODER.decode(resp.body).error
        except msgspec.DecodeError:
            return None, None
        return (error.code, error.message) if error is not None else (None, None)

    def refusal(self, resp: Response, *, what: str) -> ProviderError:
        """The exception for a refused call: ``AuthenticationError`` or ``BadRequestError``."""
        code, message = self.error_of(resp)
        kind = AuthenticationError if classify(code) == "auth" else BadRequestError
        text = self._http.redact(message or "refused")
        return kind(
            f"{what} refused ({code}): {text}",
            provider="telus",
            status=resp.status,
            request_id=resp.request_id,
            body=self._http.redact(resp.body[:_BODY_CHARS].decode("utf-8", "replace")),
            code=code,
        )


def _decode(decoder: msgspec.json.Decoder[Envelope[_T]], body: bytes, what: str) -> _T:
    try:
        envelope = decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"telus: unexpected {what} answer: {exc}") from exc
    if envelope.data is None:
        raise ProtocolError(f"telus: {what} answer has no data")
    return envelope.data


async def _pages(
    http: HttpClient, project: str, batch_id: str
) -> AsyncGenerator[list[WireBatchJob], None]:
    """The batch's job pages; stops on an empty/absent token, an empty page or a repeat."""
    token = ""
    seen: set[str] = set()
    while True:
        params = {"page_token": token} if token else None
        resp = await http.request(
            "GET", f"/v1/projects/{project}/batch/{batch_id}", cls="poll", params=params
        )
        page = _decode(BATCH_JOBS_DECODER, resp.body, "batch jobs")
        yield page.jobs
        seen.add(token)
        token = page.next_page_token or ""
        if not token or not page.jobs or token in seen:
            return


async def iter_results(
    http: HttpClient, project: str, batch_id: str, *, attempt: int
) -> AsyncGenerator[Result, None]:
    """One result per finished job of the batch; jobs still in work are not reported.

    Failed jobs are ``Errored`` and not retryable: sending the item again would only get
    ``FS_0001`` (its ``reference_id`` is taken).
    """

    async def fetch(job: WireBatchJob) -> Result:
        resp = await http.request("GET", f"/v1/projects/{project}/jobs/{job.id}", cls="download")
        url = _decode(JOB_DECODER, resp.body, "job").result
        if not url:
            return Errored(
                custom_id=job.reference_id,
                batch_id=batch_id,
                attempt=attempt,
                code="no_result",
                message=f"job {job.id} is completed but has no result URL",
            )
        # The API redirects to a signed URL; the HTTP layer follows it.
        content = await http.request("GET", "/v1/attachments", cls="download", params={"url": url})
        return Succeeded(
            custom_id=job.reference_id,
            batch_id=batch_id,
            attempt=attempt,
            response=msgspec.Raw(content.body),
        )

    async for page in _pages(http, project, batch_id):
        failed: list[Result] = [
            Errored(
                custom_id=job.reference_id,
                batch_id=batch_id,
                attempt=attempt,
                code=f"job_{job.status}",
                message=f"job {job.id} ended {job.status!r} without a result",
            )
            for job in page
            if (job.status or "").lower() in JOB_FAILED
        ]
        done = [job for job in page if (job.status or "").lower() == JOB_DONE]
        calls = [partial(fetch, job) for job in done]
        for result in [*failed, *await _gather(calls)]:
            yield result
