"""The provider cases the conformance suite runs: one ``ProviderCase`` per adapter.

Adding a provider is one entry in ``CASES``: say which emulator surfaces to mount, how to build
the adapter against the emulator, and how to count batches per shard attempt on the emulator's
side. Everything else (cancel, tags, inline input, listing) is read from the adapter's own
``capabilities``; the tests never branch on a case's name.

The entries below (OpenAI, Together, Anthropic, Azure) show the shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from batchpump import Provider, RetryPolicy
from batchpump.emulator import RunningEmulator, Stats
from batchpump.providers.anthropic import Anthropic
from batchpump.providers.azure import AzureOpenAI
from batchpump.providers.openai import OpenAI
from batchpump.providers.together import Together

from ..helpers import write_requests as write_chat_requests

__all__ = [
    "CASES",
    "KEY",
    "OPENAI",
    "MakeProvider",
    "ProviderCase",
    "WriteRequests",
    "by_emulator_tag",
]

#: A key the emulator accepts (any non-empty bearer token); never a real one.
KEY: Final = "sk-test-conformance-not-a-real-key"


class MakeProvider(Protocol):
    """Build the adapter against a running emulator, with the suite's retry policy.

    The suite passes a zero-wait policy without an overall deadline (the test's own timeout is
    the deadline), so retries cost no time.
    """

    def __call__(self, emu: RunningEmulator, *, retry: RetryPolicy) -> Provider: ...


class WriteRequests(Protocol):
    """Write ``count`` provider-appropriate request lines to ``path``; return their custom_ids.

    ids must start with ``prefix`` so two inputs in one test never share an id.
    """

    def __call__(self, path: Path, count: int, *, prefix: str) -> list[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderCase:
    """One adapter under the conformance suite.

    Attributes:
        name: the pytest id.
        providers: emulator surfaces to mount (``open_emulator(providers=...)``).
        make: builds the adapter (see ``MakeProvider``).
        count_batches: batches created per shard attempt, read from the emulator's counters.
            A value above 1 means a shard attempt was created twice; the values must add up to
            ``stats.batches_created`` (every batch belongs to exactly one attempt).
        write_requests: writes the input lines (default: OpenAI chat-completion lines).
        endpoint: the endpoint every line targets.
        cancel_routes: emulator route names of the provider's cancel call; the suite checks the
            emulator answered them when the adapter says ``capabilities.cancel``.
        max_lines: lines per shard in the suite's runs (small: several shards per run).
    """

    name: str
    providers: tuple[str, ...]
    make: MakeProvider
    count_batches: Callable[[Stats], Counter[str]]
    write_requests: WriteRequests = write_chat_requests
    endpoint: str = "/v1/chat/completions"
    cancel_routes: tuple[str, ...] = ()
    max_lines: int = 50

    def __str__(self) -> str:
        return self.name


def _openai(emu: RunningEmulator, *, retry: RetryPolicy) -> Provider:
    return OpenAI(api_key=KEY, base_url=emu.openai_base_url, retry=retry)


def by_emulator_tag(stats: Stats) -> Counter[str]:
    """``Stats.tags``: the emulator's count of created batches per shard-attempt key (OpenAI
    and Azure: the ``metadata`` tag; Together: the input file's name; Anthropic: a digest of
    the batch's custom_ids, which cannot tell two attempts with the same ids apart)."""
    return Counter(stats.tags)


OPENAI: Final = ProviderCase(
    name="openai",
    providers=("openai",),
    make=_openai,
    count_batches=by_emulator_tag,
    cancel_routes=("openai.batches.cancel",),
)


def _together(emu: RunningEmulator, *, retry: RetryPolicy) -> Provider:
    return Together(api_key=KEY, base_url=emu.together_base_url, retry=retry)


def _anthropic(emu: RunningEmulator, *, retry: RetryPolicy) -> Provider:
    return Anthropic(api_key=KEY, base_url=emu.anthropic_base_url, retry=retry)


def _azure(emu: RunningEmulator, *, retry: RetryPolicy) -> Provider:
    return AzureOpenAI(api_key=KEY, azure_endpoint=emu.azure_endpoint, retry=retry)


TOGETHER: Final = ProviderCase(
    name="together",
    providers=("together",),
    make=_together,
    count_batches=by_emulator_tag,
    cancel_routes=("together.batches.cancel",),
)
ANTHROPIC: Final = ProviderCase(
    name="anthropic",
    providers=("anthropic",),
    make=_anthropic,
    count_batches=by_emulator_tag,
    cancel_routes=("anthropic.batches.cancel",),
)
AZURE: Final = ProviderCase(
    name="azure",
    providers=("azure",),
    make=_azure,
    count_batches=by_emulator_tag,
    cancel_routes=("azure.batches.cancel",),
)

#: Every provider the suite runs against. Add a case here; nothing else changes.
CASES: Final[tuple[ProviderCase, ...]] = (OPENAI, TOGETHER, ANTHROPIC, AZURE)
