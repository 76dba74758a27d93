"""The shared data generator for every benchmark: realistic chat-completion JSONL.

Lines look like what users send to the OpenAI Batch API: a ``custom_id``, ``method``, ``url``
and a ``/v1/chat/completions`` body with a system and a user message (prose with some
non-ASCII words), ``max_tokens`` and ``temperature``. Line sizes vary around a mean. Output is
deterministic for a given seed and options, and is written streaming (bounded memory), so a
1 GB file costs no more RAM than a 1 MB one.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_MODELS",
    "ChatBody",
    "ChatLine",
    "Message",
    "cached_dataset",
    "generate_lines",
    "write_jsonl",
]

DEFAULT_ENDPOINT: Final = "/v1/chat/completions"
DEFAULT_MODELS: Final = ("gpt-4o-mini",)
#: Mean size of a generated line in bytes; sizes are spread from about 1/4 to 2x of it.
DEFAULT_MEAN_LINE_BYTES: Final = 1200
#: Share of lines whose text has non-ASCII words (accents, CJK, emoji). The rest is ASCII, as
#: most English prompts and every ``json.dumps`` output with its default ``ensure_ascii``.
DEFAULT_NON_ASCII_SHARE: Final = 0.1
_WRITE_BUFFER_BYTES: Final = 4 * 1024 * 1024

_ASCII_TEXT: Final = (
    "the of and to in is was for on that with as by at from it this be are an or which "
    "batch request model token limit queue window result shard input output file upload "
    "summarize translate classify extract answer question document invoice customer order "
    "product review sentiment positive negative neutral please respond concisely in json"
)
_OTHER_TEXT: Final = "café naïve résumé straße façade jalapeño smörgåsbord 東京 日本語 данные 🙂 ✓"
_ASCII_WORDS: Final = tuple(_ASCII_TEXT.split())
_WORDS: Final = _ASCII_WORDS + tuple(_OTHER_TEXT.split())
_SYSTEM_PROMPTS: Final = (
    "You are a helpful assistant.",
    "You are a careful data-extraction engine. Answer only with JSON.",
    "You classify customer reviews as positive, negative or neutral.",
    'You translate the user\'s text into French and keep "quoted" terms verbatim.',
)


class Message(msgspec.Struct, frozen=True):
    """One chat message."""

    role: str
    content: str


class ChatBody(msgspec.Struct, frozen=True):
    """A ``/v1/chat/completions`` request body."""

    model: str
    messages: list[Message]
    max_tokens: int
    temperature: float


class ChatLine(msgspec.Struct, frozen=True):
    """One OpenAI Batch input line."""

    custom_id: str
    method: str
    url: str
    body: ChatBody


def generate_lines(
    *,
    count: int | None = None,
    target_bytes: int | None = None,
    seed: int = 0,
    models: Sequence[str] = DEFAULT_MODELS,
    mean_line_bytes: int = DEFAULT_MEAN_LINE_BYTES,
    non_ascii_share: float = DEFAULT_NON_ASCII_SHARE,
    endpoint: str = DEFAULT_ENDPOINT,
) -> Iterator[bytes]:
    """Yield encoded JSONL lines (each ending in ``b"\\n"``), deterministic by ``seed``.

    Args:
        count: stop after this many lines.
        target_bytes: stop once this many bytes were yielded (the last line may cross it).
        seed: the random seed; the same options and seed give the same bytes.
        models: ``body.model`` is drawn from these (uniformly).
        mean_line_bytes: the average line size to aim for.
        non_ascii_share: the share of lines (0 to 1) with non-ASCII words.
        endpoint: the ``url`` of every line.
    """
    if count is None and target_bytes is None:
        raise ValueError("give count or target_bytes")
    rng = random.Random(seed)
    encoder = msgspec.json.Encoder()
    mean_words = max(1, (mean_line_bytes - 260) // 6)
    produced = 0
    index = 0
    while (count is None or index < count) and (target_bytes is None or produced < target_bytes):
        words = max(1, int(mean_words * rng.uniform(0.25, 1.75)))
        pool = _WORDS if rng.random() < non_ascii_share else _ASCII_WORDS
        text = " ".join(rng.choices(pool, k=words))
        line = ChatLine(
            custom_id=f"req-{seed}-{index:09d}",
            method="POST",
            url=endpoint,
            body=ChatBody(
                model=models[rng.randrange(len(models))],
                messages=[
                    Message("system", _SYSTEM_PROMPTS[rng.randrange(len(_SYSTEM_PROMPTS))]),
                    Message("user", text),
                ],
                max_tokens=rng.choice((64, 128, 256, 512)),
                temperature=round(rng.random(), 2),
            ),
        )
        data = encoder.encode(line) + b"\n"
        produced += len(data)
        index += 1
        yield data


def write_jsonl(path: Path, **options: object) -> tuple[int, int]:
    """Write :func:`generate_lines` output to ``path`` streaming; returns ``(lines, bytes)``.

    The file appears under its name only once complete (temporary file, then rename).
    """
    lines = size = 0
    tmp = path.with_name(path.name + ".tmp")
    pending: list[bytes] = []
    pending_bytes = 0
    with tmp.open("wb") as out:
        for data in generate_lines(**options):  # type: ignore[arg-type]  # forwarded kwargs
            pending.append(data)
            pending_bytes += len(data)
            lines += 1
            if pending_bytes >= _WRITE_BUFFER_BYTES:
                out.write(b"".join(pending))
                size += pending_bytes
                pending.clear()
                pending_bytes = 0
        out.write(b"".join(pending))
        size += pending_bytes
    os.replace(tmp, path)
    return lines, size


def cached_dataset(
    target_bytes: int,
    *,
    seed: int = 0,
    models: Sequence[str] = DEFAULT_MODELS,
    non_ascii_share: float = DEFAULT_NON_ASCII_SHARE,
    cache_dir: Path | None = None,
) -> Path:
    """Return the path of a generated file of about ``target_bytes``, generating it once.

    Files are cached in ``cache_dir`` (default: ``$TMPDIR/batchpump-bench``) under a name
    derived from the options, so repeated benchmark runs skip generation.
    """
    directory = cache_dir or Path(tempfile.gettempdir()) / "batchpump-bench"
    directory.mkdir(parents=True, exist_ok=True)
    options = repr((target_bytes, seed, tuple(models), non_ascii_share, DEFAULT_MEAN_LINE_BYTES))
    key = hashlib.blake2b(options.encode(), digest_size=6).hexdigest()
    path = directory / f"chat-{target_bytes // (1024 * 1024)}MB-{key}.jsonl"
    if not path.exists():
        write_jsonl(
            path,
            target_bytes=target_bytes,
            seed=seed,
            models=models,
            non_ascii_share=non_ascii_share,
        )
    return path
