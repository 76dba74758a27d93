"""Sharding: limits, per-model routing, byte-for-byte copies, stability, retry shards.

Rules: files in ``tmp_path`` only; hypothesis covers the invariant that every valid line lands
in exactly one shard exactly once, within the limits.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchpump import Rejected, UsageError
from batchpump._input import (
    HASH_DIGEST_SIZE,
    ShardingOutcome,
    envelope_bytes,
    hash_file,
    iter_blocks,
    iter_shard_ids,
    shard_file,
    write_retry_shard,
)
from batchpump._input import shard as _shard
from batchpump._models import Capabilities

ENDPOINT = "/v1/chat/completions"
_ENC = msgspec.json.Encoder()


def line(cid: str, model: str = "m", pad: int = 0, *, full: bool = True) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "x" * pad}]}
    if full:
        return _ENC.encode({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body})
    return _ENC.encode({"custom_id": cid, "body": body})


def run(
    path: Path, out: Path, caps: Capabilities | None = None, **options: object
) -> ShardingOutcome:
    return shard_file(
        path,
        out_dir=out,
        run_id="run-1",
        endpoint=ENDPOINT,
        capabilities=caps or Capabilities(),
        **options,  # type: ignore[arg-type]
    )


def shard_lines(outcome: ShardingOutcome) -> list[list[bytes]]:
    return [Path(s.path).read_bytes().split(b"\n")[:-1] for s in outcome.shards]


def test_line_and_byte_limits(tmp_path: Path) -> None:
    lines = [line(f"id-{i}", pad=i % 7 * 10) for i in range(100)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    by_lines = run(path, tmp_path / "a", max_lines=7)
    assert [s.lines for s in by_lines.shards] == [7] * 14 + [2]
    by_bytes = run(path, tmp_path / "b", max_bytes=1000)
    assert all(s.bytes <= 1000 for s in by_bytes.shards)
    for outcome in (by_lines, by_bytes):
        assert [x for shard in shard_lines(outcome) for x in shard] == lines
        for record in outcome.shards:
            data = Path(record.path).read_bytes()
            assert (record.bytes, record.lines) == (len(data), data.count(b"\n"))
            assert record.path.endswith(f"{record.index:05d}.a1.jsonl")
            assert (record.attempt, record.state, record.run_id) == (1, "ready", "run-1")
        assert [s.index for s in outcome.shards] == list(range(len(outcome.shards)))
        assert sorted(p.name for p in (tmp_path / "a").iterdir())[-1].endswith(".a1.jsonl")


def test_limits_may_only_be_lowered(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(line("a") + b"\n")
    caps = Capabilities(max_lines=10, max_bytes=10_000)
    with pytest.raises(UsageError, match="max_lines=11"):
        run(path, tmp_path / "s", caps, max_lines=11)
    with pytest.raises(UsageError, match="max_bytes=0"):
        run(path, tmp_path / "s", caps, max_bytes=0)


def test_per_model_shards_in_order_of_first_appearance(tmp_path: Path) -> None:
    models = ["b", "a", "b", "c", "a", "b", "b", "a"]
    lines = [line(f"id-{i}", model) for i, model in enumerate(models)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    outcome = run(path, tmp_path / "s", max_lines=2)
    assert [(s.index, s.model, s.lines) for s in outcome.shards] == [
        (0, "b", 2),
        (1, "a", 2),
        (2, "c", 1),
        (3, "b", 2),
        (4, "a", 1),
    ]
    assert shard_lines(outcome)[3] == [lines[5], lines[6]]
    anything = Capabilities(one_model_per_shard=False)
    mixed = run(path, tmp_path / "m", anything, max_lines=3)
    assert [s.model for s in mixed.shards] == [None, None, None]
    assert [list(shard) for shard in shard_lines(mixed)] == [
        lines[:3],
        lines[3:6],
        lines[6:],
    ]
    single = run(path, tmp_path / "one", anything, max_lines=1)
    assert [s.model for s in single.shards] == models


def test_copies_bytes_and_fills_in_method_and_url(tmp_path: Path) -> None:
    spaced = b'{ "custom_id" : "a" , "method": "POST", "url": "%s", "body": {"model": "m"} }'
    short = line("b", full=False)
    path = tmp_path / "in.jsonl"
    path.write_bytes(spaced % ENDPOINT.encode() + b"\n" + short + b"\n")
    outcome = run(path, tmp_path / "s")
    first, second = shard_lines(outcome)[0]
    assert first == spaced % ENDPOINT.encode()
    assert msgspec.json.decode(second) == {
        "custom_id": "b",
        "method": "POST",
        "url": ENDPOINT,
        "body": msgspec.json.decode(short)["body"],
    }
    # tokens estimate the bodies as line bytes minus custom_id and envelope: exact for the
    # compact line, an over-estimate (never under) for the spaced one
    body_bytes = len(b'{"model": "m"}') + len(_ENC.encode(msgspec.json.decode(short)["body"]))
    envelope = envelope_bytes(ENDPOINT)
    estimate = sum(len(data) - len(cid) - envelope for data, cid in ((first, "a"), (second, "b")))
    assert estimate > body_bytes
    assert len(second) - len("b") - envelope == len(_ENC.encode(msgspec.json.decode(short)["body"]))
    assert outcome.shards[0].tokens == estimate // 4


def test_stable_across_runs_and_hash(tmp_path: Path) -> None:
    lines = [line(f"id-{i}", "ab"[i % 3 == 0], pad=i) for i in range(60)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = run(path, tmp_path / "one", max_lines=9)
    two = run(path, tmp_path / "two", max_lines=9)
    assert [(s.index, s.model, s.lines, s.bytes, s.tokens) for s in one.shards] == [
        (s.index, s.model, s.lines, s.bytes, s.tokens) for s in two.shards
    ]
    for a, b in zip(one.shards, two.shards, strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    expected = hashlib.blake2b(path.read_bytes(), digest_size=HASH_DIGEST_SIZE).hexdigest()
    assert one.input_hash == two.input_hash == hash_file(path) == expected


def test_skip_turns_bad_lines_into_rejected(tmp_path: Path) -> None:
    raw = [line("a"), b"not json", line("b"), line("a"), b'{"custom_id": "c"}', line("d")]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    outcome = run(path, tmp_path / "s", on_invalid="skip")
    # One result per custom_id: "a" is on two lines, so neither is sent; a line with no
    # usable id is rejected with custom_id "" (no line can have it) and its line number.
    assert shard_lines(outcome) == [[line("b"), line("d")]]
    assert [(r.line, r.custom_id) for r in outcome.rejected] == [(1, "a"), (2, ""), (5, "c")]
    assert all(isinstance(r, Rejected) for r in outcome.rejected)
    assert outcome.rejected[0].message == "custom_id 'a' is on lines 1, 4; none of them was sent"
    assert outcome.total_lines == 5 == len(outcome.rejected) + outcome.shards[0].lines
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["00000.a1.jsonl"]


def test_stale_tmp_files_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "00007.a1.jsonl.tmp").write_bytes(b"half a shard")
    path = tmp_path / "in.jsonl"
    path.write_bytes(line("a") + b"\n")
    run(path, out)
    assert sorted(p.name for p in out.iterdir()) == ["00000.a1.jsonl"]


def test_retry_shard_round_trip(tmp_path: Path) -> None:
    lines = [line(f"id-{i}", pad=i) for i in range(50)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    (shard,) = run(path, tmp_path / "s").shards
    assert list(iter_shard_ids(Path(shard.path))) == [f"id-{i}" for i in range(50)]
    wanted = {"id-3", "id-40", "id-7", "missing"}
    dest = tmp_path / "s" / "00000.a2.jsonl"
    count, size = write_retry_shard(Path(shard.path), dest, wanted)
    expected = lines[3] + b"\n" + lines[7] + b"\n" + lines[40] + b"\n"
    assert dest.read_bytes() == expected
    assert (count, size) == (3, len(expected))
    assert list(iter_shard_ids(dest)) == ["id-3", "id-7", "id-40"]
    assert not dest.with_name(dest.name + ".tmp").exists()
    assert write_retry_shard(Path(shard.path), tmp_path / "empty.jsonl", []) == (0, 0)


_ids = st.one_of(
    st.sampled_from(["a", "b", "c"]),  # repeats: duplicates must be rejected
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(_ids, st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 300), st.booleans()),
        min_size=1,
        max_size=80,
    ),
    max_lines=st.integers(1, 20),
    max_bytes=st.integers(450, 3000),
    per_model=st.booleans(),
)
def test_every_valid_line_in_exactly_one_shard(
    rows: list[tuple[str, str, int, bool]], max_lines: int, max_bytes: int, per_model: bool
) -> None:
    lines = [line(cid, model, pad, full=full) for cid, model, pad, full in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        caps = Capabilities(one_model_per_shard=per_model)
        outcome = run(
            path, Path(tmp) / "s", caps, max_lines=max_lines, max_bytes=max_bytes, on_invalid="skip"
        )
        written = shard_lines(outcome)
        for record, shard in zip(outcome.shards, written, strict=True):
            assert 1 <= record.lines == len(shard) <= max_lines
            assert record.bytes == sum(len(x) + 1 for x in shard) <= max_bytes
            if per_model:
                models = {msgspec.json.decode(x)["body"]["model"] for x in shard}
                assert models == {record.model}
    # What should have been accepted: each id on one line only, when it fits, filled in (an
    # id on several lines is sent for none of them: one result per custom_id).
    repeated = {cid for cid in {r[0] for r in rows} if sum(r[0] == cid for r in rows) > 1}
    accepted: dict[str, bytes] = {}
    for cid, model, pad, _ in rows:
        filled = line(cid, model, pad)
        if cid not in repeated and len(filled) + 1 <= max_bytes:
            accepted[cid] = filled
    everything = [x for shard in written for x in shard]
    assert sorted(everything) == sorted(accepted.values())  # each exactly once
    for model in ("m1", "m2", "m3"):  # input order kept within a model
        mine = [x for x in accepted.values() if b'"model":"%s"' % model.encode() in x]
        assert [x for x in everything if x in mine] == mine
    assert outcome.total_lines == len(outcome.rejected) + len(everything)
    assert len(outcome.rejected) == len({r[0] for r in rows if r[0] not in accepted})


_ODD_LINES = (
    b"",
    b"   ",
    b"not json",
    b'{"custom_id": 7, "body": {}}',
    b'{"custom_id": "", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
    b'{"custom_id": "n", "method": "GET", "url": "/v1/chat/completions", "body": {}}',
    b'{"custom_id": "u", "method": "POST", "url": "/v1/embeddings", "body": {}}',
    b'{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": []}',
    b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": 1}}',
    b'{"custom_id": "z", "method": "POST", "url": "/v1/chat/completions", "body": {"s": "\xff"}}',
    b'{"custom_id": "0", "method": "POST", "url": "/v1/chat/completions", "body": {}}\x00',
    b'{"custom_id": "two"}{"custom_id": "objects"}',
    '{"custom_id": "é", "method": "POST", "url": "/v1/chat/completions", "body": {}}'.encode(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.one_of(
            st.tuples(_ids, st.sampled_from(["m1", "m2"]), st.integers(0, 200), st.booleans()),
            st.sampled_from(_ODD_LINES),
        ),
        min_size=1,
        max_size=60,
    ),
    chunk_bytes=st.integers(64, 2048),
    max_lines=st.integers(1, 12),
    max_bytes=st.integers(450, 3000),
    per_model=st.booleans(),
)
def test_block_and_line_paths_shard_alike(
    rows: list[tuple[str, str, int, bool] | bytes],
    chunk_bytes: int,
    max_lines: int,
    max_bytes: int,
    per_model: bool,
) -> None:
    """Blocks of standard lines take the fast path (``_block``); whatever it accepts, the
    line-by-line checker accepts the same way: same shard files, records, problems."""
    lines = [row if isinstance(row, bytes) else line(*row[:3], full=row[3]) for row in rows]
    caps = Capabilities(one_model_per_shard=per_model, custom_id_max_len=40)
    small_blocks = functools.partial(iter_blocks, chunk_bytes=chunk_bytes)
    outcomes: list[object] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        for fast in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(_shard, "FAST_BLOCKS", fast)
                patch.setattr(_shard, "iter_blocks", small_blocks)
                out = Path(tmp) / str(fast)
                try:
                    outcome = run(
                        path, out, caps, max_lines=max_lines, max_bytes=max_bytes, on_invalid="skip"
                    )
                except UsageError as exc:  # nothing valid, or the endpoint flag blamed: the same
                    # message on both paths
                    outcomes.append(str(exc))
                    continue
            files = [Path(s.path).read_bytes() for s in outcome.shards]
            records = [msgspec.structs.replace(s, path=Path(s.path).name) for s in outcome.shards]
            outcomes.append((files, records, outcome.rejected, outcome.total_lines))
    assert outcomes[0] == outcomes[1]


def test_duplicates_beside_a_whitespace_line(tmp_path: Path) -> None:
    """The second pass that confirms duplicate ids skips blank lines like the first does."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(line("a") + b"\n   \n" + line("a") + b"\n" + line("b") + b"\n")
    outcome = run(path, tmp_path / "s", on_invalid="skip")
    assert [(r.line, r.custom_id) for r in outcome.rejected] == [(1, "a")]
    assert "custom_id 'a' is on lines 1, 3" in outcome.rejected[0].message
    assert [x for shard in shard_lines(outcome) for x in shard] == [line("b")]


def test_shard_files_are_private(tmp_path: Path) -> None:
    """Small shards (written whole) and large ones (streamed by the writer thread): 0600."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"".join(line(f"id-{i}", pad=400_000 if i == 0 else 0) + b"\n" for i in range(3))
    )
    outcome = run(path, tmp_path / "s", max_lines=1)
    assert [s.bytes > 256 * 1024 for s in outcome.shards] == [True, False, False]
    assert {Path(s.path).stat().st_mode & 0o777 for s in outcome.shards} == {0o600}
