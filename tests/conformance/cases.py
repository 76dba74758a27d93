"""The provider cases the conformance suite runs: one ``ProviderCase`` per adapter.

Adding a provider is one entry in ``CASES``: say which emulator surfaces to mount, how to build
the adapter against the emulator, and how to count batches per shard attempt on the emulator's
side. Everything else (cancel, tags, inline input, listing) is read from the adapter's own
``capabilities``; the tests never branch on a case's name.

The entries below (OpenAI, Together, Anthropic, Azure) show the shape. The item providers
(LlamaCloud, TELUS GT Studio, whose ``line_checker`` checks items) add two things: a
``write_requests`` hook writing their item lines (LlamaCloud's name real files, written beside
the input), and a ``setup`` hook that lifts their provider-specific emulator limits (LlamaCloud's
50 uploads / 5 s window, GT Studio's 20 POST/s bucket) that the suite's unscaled ``REALTIME``
runs would otherwise turn into tens of seconds of waiting; the suite's own ``RateLimit`` buckets
still apply to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import msgspec

from batchpump import Limits, Provider, RetryPolicy
from batchpump.emulator import RunningEmulator, Stats
from batchpump.emulator._llamacloud import LlamaCloudConfig, llamacloud_state
from batchpump.emulator._telus import TelusSettings, TelusState
from batchpump.providers.anthropic import Anthropic
from batchpump.providers.azure import AzureOpenAI
from batchpump.providers.llamacloud import LlamaCloud
from batchpump.providers.openai import OpenAI
from batchpump.providers.telus import Telus
from batchpump.providers.together import Together

from ..helpers import write_requests as write_chat_requests

__all__ = [
    "ANTHROPIC",
    "AZURE",
    "CASES",
    "KEY",
    "LLAMACLOUD",
    "OPENAI",
    "TELUS",
    "TOGETHER",
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

    ids must start with ``prefix`` so two inputs in one test never share an id. ``path`` is in
    the test's scratch directory: a hook whose lines name files (LlamaCloud documents) writes
    them beside it, under a name derived from ``path`` (so two inputs never collide), and names
    them by absolute path.
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
        setup: adjusts the freshly started emulator before the test uses it (provider-only
            knobs, such as a provider's own rate limits); ``None``: nothing to adjust.
    """

    name: str
    providers: tuple[str, ...]
    make: MakeProvider
    count_batches: Callable[[Stats], Counter[str]]
    write_requests: WriteRequests = write_chat_requests
    endpoint: str = "/v1/chat/completions"
    cancel_routes: tuple[str, ...] = ()
    max_lines: int = 50
    setup: Callable[[RunningEmulator], None] | None = None

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


# -- item providers ----------------------------------------------------------------------------

#: The GT Studio project and workflow the TELUS case uses (any UUIDs: the emulator makes a
#: project on first use).
TELUS_PROJECT: Final = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"
TELUS_WORK_FLOW: Final = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"
#: Job POSTs per second the TELUS client may send: far above anything the suite needs, so only
#: the emulator's answers (429s from the suite's buckets and storms) pace it.
TELUS_JOB_RATE: Final = 100_000.0


def write_llamacloud_items(path: Path, count: int, *, prefix: str) -> list[str]:
    """``count`` LlamaCloud item lines ``{custom_id, file}``, each naming a tiny text document
    written into ``<path>.docs/`` (absolute paths: the adapter's ``root`` does not matter)."""
    docs = path.with_name(f"{path.name}.docs").resolve()
    docs.mkdir(parents=True, exist_ok=True)
    ids = [f"{prefix}-{i}" for i in range(count)]
    with path.open("wb") as f:
        for custom_id in ids:
            doc = docs / f"{custom_id}.txt"
            doc.write_text(f"document {custom_id}\n")
            f.write(msgspec.json.encode({"custom_id": custom_id, "file": str(doc)}) + b"\n")
    return ids


def write_telus_items(path: Path, count: int, *, prefix: str) -> list[str]:
    """``count`` GT Studio item lines ``{custom_id, data, work_flow_id}``."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    with path.open("wb") as f:
        for custom_id in ids:
            line = {
                "custom_id": custom_id,
                "data": {"image_url": f"https://img.example/{custom_id}.png"},
                "work_flow_id": TELUS_WORK_FLOW,
            }
            f.write(msgspec.json.encode(line) + b"\n")
    return ids


def _llamacloud(emu: RunningEmulator, *, retry: RetryPolicy) -> Provider:
    # No client-side upload rate (the adapter's default paces uploads at 10/s in real time).
    return LlamaCloud(api_key=KEY, base_url=emu.llamacloud_base_url, retry=retry, limits=Limits())


def _llamacloud_setup(emu: RunningEmulator) -> None:
    llamacloud_state(emu.emulator).configure(LlamaCloudConfig(upload_limit=None))


def _telus(emu: RunningEmulator, *, retry: RetryPolicy) -> Provider:
    return Telus(
        api_key=KEY,
        project_id=TELUS_PROJECT,
        base_url=emu.telus_base_url,
        retry=retry,
        job_rate=TELUS_JOB_RATE,
    )


def _telus_setup(emu: RunningEmulator) -> None:
    emu.emulator.provider_state("telus", TelusState).configure(TelusSettings(post_rate=None))


LLAMACLOUD: Final = ProviderCase(
    name="llamacloud",
    providers=("llamacloud",),
    make=_llamacloud,
    count_batches=by_emulator_tag,  # per source directory name: one directory per attempt
    write_requests=write_llamacloud_items,
    cancel_routes=("llamacloud.batches.cancel",),
    setup=_llamacloud_setup,
)
TELUS: Final = ProviderCase(
    name="telus",
    providers=("telus",),
    make=_telus,
    count_batches=by_emulator_tag,  # per batch name: the name carries the shard-attempt tag
    write_requests=write_telus_items,
    setup=_telus_setup,
)

#: Every provider the suite runs against. Add a case here; nothing else changes.
CASES: Final[tuple[ProviderCase, ...]] = (OPENAI, TOGETHER, ANTHROPIC, AZURE, LLAMACLOUD, TELUS)
