"""The ``Provider`` protocol: the same verbs for every batch API.

The engine (submit, poll, collect) and the sharder see providers only through this protocol,
so benchmarks and tests can drive it with in-memory fakes, and every adapter is checked by one
conformance suite.

Verbs, in the order a shard attempt meets them:

``prepare(shard)``
    Make the shard's input available to the provider and return a reference to it (OpenAI:
    upload the file, return the file id; inline providers: return the local path).
``create(shard, endpoint=, tag=)``
    Create the batch from ``shard.input_ref``, attaching ``tag`` where the provider can carry
    one. Never retried blindly: the engine reconciles an interrupted create first.
``reconcile(shard, since=)``
    After a crash between "create sent" and "create recorded", or a create whose answer never
    came: find the batch that create made, if it reached the provider, or return ``None``.
    ``since`` is in the provider's time (see ``find_by_tag``).
``retrieve(batch_id)`` / ``list_batches()``
    Read one batch / walk all batches newest first (one sweep refreshes many).
``cancel(batch_id)``
    Ask the provider to stop a batch (only if ``capabilities.cancel``).
``results(batch, attempt=)``
    Stream the final result of every line the batch finished, in any order. Lines the batch
    never finished may be missing or reported as ``Expired``/``Canceled``; the collector joins
    by ``custom_id`` and resubmits what is unfinished.
``failure_is_transient(batch)``
    Whether a ``failed`` batch failed for a reason that goes away (queue or token limits), so
    its lines are requeued with backoff instead of failing.

What differs between providers' input is asked before any of these, while sharding:

``line_checker(endpoint=, max_line_bytes=)``
    The checker of the provider's line format (a ``LineChecker``): it validates each input
    line, returns the line as the shard file holds it (OpenAI-format lines as they are,
    Anthropic's converted to ``{custom_id, params}``, items as they are) and the group that
    splits shards when ``capabilities.one_model_per_shard`` (a request's model, an item's
    grouping field). OpenAI-compatible adapters return the standard ``RequestLineChecker``,
    which also offers the fast whole-block path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Final, Protocol, runtime_checkable

import msgspec

from ._input import LineChecker
from ._models import BatchInfo, Capabilities, Result, ShardRecord

__all__ = [
    "TAG_METADATA_KEY",
    "Provider",
    "RateLimitWait",
    "RateLimitedProvider",
    "find_by_tag",
    "parse_tag",
    "run_tag_prefix",
    "shard_tag",
]

#: The metadata key that carries our shard-attempt tag on providers that have metadata.
TAG_METADATA_KEY: Final = "batchpump_shard"


def shard_tag(run_id: str, index: int, attempt: int) -> str:
    """The tag that names one shard attempt: stable across resumes, unique per attempt."""
    return f"{run_tag_prefix(run_id)}{index}:{attempt}"


def run_tag_prefix(run_id: str) -> str:
    """What every tag of one run starts with."""
    return f"bp1:{run_id[:24]}:"


def parse_tag(tag: str) -> tuple[int, int] | None:
    """``(index, attempt)`` of a shard-attempt tag, ``None`` if ``tag`` is not one."""
    parts = tag.split(":")
    if len(parts) != 4 or parts[0] != "bp1":
        return None
    try:
        return int(parts[2]), int(parts[3])
    except ValueError:
        return None


@runtime_checkable
class Provider(Protocol):
    """One batch API, normalized. See the module docstring for the verbs."""

    @property
    def name(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def prepare(self, shard: ShardRecord) -> str: ...

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo: ...

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None: ...

    async def retrieve(self, batch_id: str) -> BatchInfo: ...

    def list_batches(self) -> AsyncGenerator[BatchInfo, None]: ...

    async def cancel(self, batch_id: str) -> BatchInfo: ...

    def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]: ...

    def failure_is_transient(self, batch: BatchInfo) -> bool: ...

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> LineChecker: ...

    async def aclose(self) -> None: ...


class RateLimitWait(msgspec.Struct, frozen=True, kw_only=True):
    """How long a provider's calls have been held by rate limits, against the bound.

    Attributes:
        seconds: the longest current streak of 429s with no success since, over the
            provider's endpoint classes.
        timeout: ``RetryPolicy.rate_limit_timeout``: one call gives up past it (``None``:
            never).
    """

    seconds: float
    timeout: float | None


@runtime_checkable
class RateLimitedProvider(Protocol):
    """A provider that can say whether rate limits are holding it (HTTP adapters can)."""

    def rate_limit_wait(self) -> RateLimitWait | None:
        """The current rate-limit wait, ``None`` when no class is being rate-limited."""
        ...


async def find_by_tag(provider: Provider, tag: str, *, since: float) -> BatchInfo | None:
    """Walk the provider's batches newest first and return the one carrying ``tag``.

    Stops once batches are older than ``since``, an instant in the *provider's* time (its
    ``created_at`` values) a little before the create was sent: the engine converts its
    intent with the offset it learned from the provider's own timestamps, so a client clock
    that runs ahead never stops the walk before the batch. A reconcile costs a page or two,
    not the account's whole history.
    """
    async with aclosing(provider.list_batches()) as batches:
        async for batch in batches:
            if batch.tag == tag:
                return batch
            if batch.created_at < since:
                return None
    return None
