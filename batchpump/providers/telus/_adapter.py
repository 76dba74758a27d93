"""The TELUS International GT Studio (formerly Playment) adapter: items become annotation jobs.

A shard attempt is one GT Studio *batch* (a named folder; the name carries the shard-attempt
tag) plus one ``POST /jobs`` per item, paced by the ``item`` endpoint class at ``job_rate``
(the documented 20 POST/s) with ``reference_id = custom_id``. The API has no idempotency key,
but refuses a reused ``reference_id`` with ``FS_0001``, so every job POST may be retried and
``FS_0001`` means "already created" (counted as reconciled).

Per item, the error codes decide (``_wire.classify``): ``FS_0001`` created; ``FS_0000``,
``FS_0008``, ``api_error`` retried with backoff, then recorded as a retryable ``Errored`` (the
next attempt sends the item again); auth codes raise; any other code is a permanent ``Errored``
for that item only. Those records live in memory per batch and are yielded by ``results()``.
After a crash they are re-derived, not lost: an item that never became a job is simply not in
the batch, the collector sends it again in the next attempt, and creating it again gives the
same permanent error (while created items answer ``FS_0001``).

Polling reads ``GET /details`` once for every batch of the project (counters + status), so
``list_batches()`` is a sweep. Human work takes hours: poll with ``TELUS_POLL``. There is no
cancel. Environment: ``TELUS_GTSTUDIO_API_KEY`` (else ``PLAYMENT_API_KEY``),
``TELUS_GTSTUDIO_PROJECT_ID`` (else ``PLAYMENT_PROJECT_ID``), ``TELUS_GTSTUDIO_BASE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import ClassVar, Final, TypeVar, final

import msgspec

from ..._clock import Clock, SystemClock
from ..._config import Limits, PollPolicy, RetryPolicy
from ..._errors import NotFoundError, ProtocolError, UsageError
from ..._http import HttpClient, HttpStatistics
from ..._input import ItemLineChecker
from ..._models import BatchInfo, Capabilities, Errored, Result, ShardRecord
from .._adapter import check_base_url, from_env
from ._jobs import JobCreator, JobStatistics, iter_results
from ._wire import (
    BATCH_CREATED_DECODER,
    DETAILS_DECODER,
    ENCODER,
    Envelope,
    WireCreateBatch,
    WireProjectBatch,
    batch_name,
    check_item,
    is_uuid,
    to_batch_info,
)

__all__ = ["CAPABILITIES", "DEFAULT_BASE_URL", "TELUS_POLL", "Telus", "TelusStatistics"]

_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://api.playment.io"
API_KEY_ENVS: Final = ("TELUS_GTSTUDIO_API_KEY", "PLAYMENT_API_KEY")
PROJECT_ENVS: Final = ("TELUS_GTSTUDIO_PROJECT_ID", "PLAYMENT_PROJECT_ID")
BASE_URL_ENV: Final = "TELUS_GTSTUDIO_BASE_URL"
#: The documented POST budget: 20 requests per second.
DEFAULT_JOB_RATE: Final = 20.0
#: Recommended polling for human work: every minute at first, every 15 minutes at most.
TELUS_POLL: Final = PollPolicy(interval_min=60.0, interval_max=900.0)

#: 1,000 items per batch: 50 s of job creation at 20/s, and a resumed create pages at most
#: 10 job pages to skip what exists. Items are small JSON (URLs), 1 MiB each at most.
CAPABILITIES: Final = Capabilities(
    cancel=False,
    metadata_tag=False,
    inline_input=True,
    list_batches=True,
    max_lines=1_000,
    max_bytes=64 * 1024 * 1024,
    max_line_bytes=1024 * 1024,
    custom_id_max_len=None,
    one_model_per_shard=True,  # one work_flow_id per shard (lines may name their own)
)


@final
class TelusStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The HTTP client's snapshot plus the job counters (see ``JobStatistics``)."""

    http: HttpStatistics
    jobs: JobStatistics


@final
class Telus:
    """TELUS GT Studio batches and annotation jobs.

    Args:
        api_key: defaults to ``$TELUS_GTSTUDIO_API_KEY``, then ``$PLAYMENT_API_KEY``.
        project_id: defaults to ``$TELUS_GTSTUDIO_PROJECT_ID``, then ``$PLAYMENT_PROJECT_ID``.
        base_url: defaults to ``$TELUS_GTSTUDIO_BASE_URL``, else ``https://api.playment.io``.
        work_flow_id: the workflow of every job whose line has no ``work_flow_id``.
        limits: rate and concurrency per endpoint class; ``item_rate`` is set from ``job_rate``
            and ``item_concurrency`` bounds job POSTs in flight (default 16).
        retry: how each HTTP call is retried (default ``RetryPolicy()``).
        clock: every wait goes through it (default ``SystemClock()``).
        job_rate: job POSTs per second (default 20, the documented limit).

    Raises:
        UsageError: no key or no project id.
    """

    name: ClassVar[str] = "telus"
    capabilities: ClassVar[Capabilities] = CAPABILITIES
    #: Items naming different workflows go to different shards (batches).
    item_group_field: ClassVar[str] = "work_flow_id"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        project_id: str | None = None,
        base_url: str | None = None,
        work_flow_id: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        job_rate: float = DEFAULT_JOB_RATE,
    ) -> None:
        key = from_env(api_key, API_KEY_ENVS, what="GT Studio API key")
        project = from_env(project_id, PROJECT_ENVS, what="GT Studio project id")
        if job_rate <= 0:
            raise UsageError(f"job_rate must be positive, got {job_rate!r}")
        root = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        check_base_url(root, what="GT Studio", variable=BASE_URL_ENV, not_ending="/v1")
        if not is_uuid(project):
            raise UsageError(
                f"GT Studio project id {project!r} is not a UUID; set {PROJECT_ENVS[0]} (or "
                "project_id=) to the project's id from the GT Studio dashboard. Nothing was sent"
            )
        if work_flow_id is not None and not is_uuid(work_flow_id):
            raise UsageError(
                f"--work-flow-id {work_flow_id!r} is not a UUID (work_flow_id=); copy the "
                "workflow's id from the GT Studio dashboard. Nothing was sent"
            )
        self._project = project
        self._work_flow_id = work_flow_id
        self._clock = clock or SystemClock()
        limits = msgspec.structs.replace(limits or Limits(), item_rate=job_rate)
        self._retry = retry or RetryPolicy()
        self._http = HttpClient(
            provider=self.name,
            base_url=root,
            headers={"x-api-key": key},
            secrets=(key,),
            limits=limits,
            retry=self._retry,
            clock=self._clock,
        )
        self._jobs = JobCreator(
            self._http,
            project=project,
            work_flow_id=work_flow_id,
            concurrency=limits.item_concurrency,
            retry=self._retry,
            clock=self._clock,
        )
        self._rejected: dict[str, list[Errored]] = {}
        #: Jobs this client knows each batch holds (posted or found), by batch id.
        self._posted: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        """The project's API root: runs of different projects never resume one another."""
        return f"{self._http.base_url}/v1/projects/{self._project}"

    @property
    def settings(self) -> dict[str, str]:
        """Settings that shape what is sent, beyond the base URL (part of a run's identity)."""
        return {"work_flow_id": self._work_flow_id} if self._work_flow_id else {}

    def __repr__(self) -> str:
        return f"Telus(base_url={self._http.redact(self.base_url)!r})"

    async def __aenter__(self) -> Telus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._http.aclose()

    def statistics(self) -> TelusStatistics:
        """HTTP traffic and job counters (created, reconciled by FS_0001, rejected, retried)."""
        return TelusStatistics(http=self._http.statistics(), jobs=self._jobs.statistics())

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> ItemLineChecker:
        """Item lines, checked by :meth:`check_line` and grouped by ``item_group_field``."""
        return ItemLineChecker.for_items(
            self.check_line,
            group_field=self.item_group_field,
            endpoint=endpoint,
            max_line_bytes=max_line_bytes,
            custom_id_max_len=self.capabilities.custom_id_max_len,
        )

    def check_line(self, raw: bytes) -> tuple[str, str] | None:
        """``(message, hint)`` for an input item the API would refuse, else ``None``."""
        return check_item(raw, self._work_flow_id)

    # -- submit -----------------------------------------------------------------------------

    async def prepare(self, shard: ShardRecord) -> str:
        """Nothing to upload: the items travel one per job POST; return the shard path."""
        return shard.path

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """Create the batch named after ``tag``, then one job per item (``endpoint`` unused).

        On ``BATCH_CREATION`` (the name exists: a resumed create) the existing batch is used.
        Raises ``BadRequestError`` for other refusals of the batch, and what the HTTP layer
        raises for a job POST that could not get an answer (the engine then reconciles).
        """
        del endpoint  # items carry their own job data; there is one job endpoint
        body = ENCODER.encode(WireCreateBatch(name=batch_name(tag), description=tag))
        resp = await self._http.request(
            "POST",
            self._path("/batch"),
            cls="create",
            json=body,
            idempotent=False,
            passthrough=(400,),
        )
        if resp.status == 400:
            error = self._jobs.refusal(resp, what="batch create")
            batch_id = await self._find(batch_name(tag)) if error.code == "BATCH_CREATION" else None
            if batch_id is None:
                raise error
            return await self._fill(shard, batch_id, tag, existing=True)
        created = self._decode(BATCH_CREATED_DECODER, resp.body, "batch")
        return await self._fill(shard, created.batch_id, tag, existing=False)

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """Find the batch by its exact name and finish creating its jobs (skips existing ones).

        ``since`` is not needed: one project-details call lists every batch.
        """
        del since
        if shard.tag is None:
            return None
        batch_id = await self._find(batch_name(shard.tag))
        if batch_id is None:
            return None
        return await self._fill(shard, batch_id, shard.tag, existing=True)

    async def _fill(
        self, shard: ShardRecord, batch_id: str, tag: str, *, existing: bool
    ) -> BatchInfo:
        """Create the batch's missing jobs; the batch as the project details show it.

        ``created_at`` is the server's (the client's clock is not the provider's: ``retrieve``
        and ``list_batches`` must report the same batch the same way). The state stays
        ``pending`` while any job exists (the engine polls it from here), ``completed`` when
        every item was refused at creation.
        """
        outcome = await self._jobs.create_all(shard.path, batch_id, existing=existing)
        self._rejected[batch_id] = outcome.errored
        self._posted[batch_id] = outcome.jobs
        wire = next((w for w in await self._details() if w.id == batch_id), None)
        if wire is None:
            raise ProtocolError(f"telus: batch {batch_id} is missing from the project details")
        return BatchInfo(
            id=batch_id,
            state="pending" if outcome.jobs else "completed",
            raw_status="created",
            created_at=to_batch_info(wire).created_at,
            tag=tag,
            output_ref=batch_id,
            total=outcome.jobs,
            failed=len(outcome.errored),
        )

    # -- poll -------------------------------------------------------------------------------

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """One batch, read from the project details (the API has no single-batch GET)."""
        for wire in await self._details():
            if wire.id == batch_id:
                return self._info(wire)
        raise NotFoundError(
            f"telus: no batch {batch_id} in project details", provider=self.name, status=404
        )

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        """Every batch of the project, newest first, from one ``GET /details`` call."""
        batches = [self._info(w) for w in await self._details() if not w.is_default]
        batches.sort(key=lambda b: b.created_at, reverse=True)
        for batch in batches:
            yield batch

    def _info(self, wire: WireProjectBatch) -> BatchInfo:
        """The batch, done only once its counted jobs reach the jobs this client posted to it.

        The project counters may lag the job POSTs: a new batch can show ``0 >= 0`` or
        ``Complete`` over the jobs counted so far. (After a restart the count posted is not
        known, and the counters decide alone.)
        """
        info = to_batch_info(wire)
        posted = self._posted.get(wire.id, 0)
        if info.state != "completed" or wire.completed_jobs >= posted:
            return info
        return msgspec.structs.replace(
            info,
            state="running" if wire.completed_jobs else "pending",
            total=max(wire.total_jobs, posted),
        )

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Always raises: GT Studio has no cancel (``capabilities.cancel`` is ``False``)."""
        raise UsageError(
            f"telus: GT Studio has no cancel endpoint; batch {batch_id} runs until annotators "
            "finish it (stop it in the GT Studio dashboard)"
        )

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        """Batches never fail as a whole here."""
        return False

    # -- collect ----------------------------------------------------------------------------

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        """Finished jobs (attachment JSON, raw), failed jobs, then the items refused at create."""
        async for result in iter_results(self._http, self._project, batch.id, attempt=attempt):
            yield result
        for errored in self._rejected.get(batch.id, ()):
            yield msgspec.structs.replace(errored, batch_id=batch.id, attempt=attempt)

    # -- helpers ----------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        return f"/v1/projects/{self._project}{path}"

    async def _details(self) -> list[WireProjectBatch]:
        resp = await self._http.request("GET", self._path("/details"), cls="poll")
        details = self._decode(DETAILS_DECODER, resp.body, "project details")
        return details.batches

    async def _find(self, name: str) -> str | None:
        return next((w.id for w in await self._details() if w.name == name), None)

    @staticmethod
    def _decode(decoder: msgspec.json.Decoder[Envelope[_T]], body: bytes, what: str) -> _T:
        try:
            envelope = decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"telus: unexpected {what} answer: {exc}") from exc
        if not envelope.success or envelope.data is None:
            raise ProtocolError(f"telus: {what} answer has no data")
        return envelope.data
