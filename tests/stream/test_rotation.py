"""``ResultParts``: where offsets are, when a part starts, which parts acks free, leftovers."""

from __future__ import annotations

from pathlib import Path

from batchpump._stream.rotation import ResultParts


def _append(path: Path, offset: int, data: bytes) -> int:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)
    return offset + len(data)


def test_parts_rotate_locate_and_go_once_acknowledged(tmp_path: Path) -> None:
    first = tmp_path / "results.jsonl"
    first.write_bytes(b"")
    parts = ResultParts(first, bound=10)
    parts.scan()
    end = _append(first, 0, b"aaaa\nbbbb\n")  # 10 bytes: the next commit goes to a new part
    assert parts.rotate(end) == tmp_path / "results.0000000000000010.jsonl"
    assert parts.rotate(end) is None  # the new part is empty
    second = parts.newest
    assert second.stat().st_size == 10  # sparse up to its start
    end = _append(second, end, b"cccc\ndddd\neeee\n")
    third = parts.rotate(end)
    assert third is not None
    end = _append(third, end, b"ffff\n")
    assert parts.count == 3
    assert parts.locate(0) == (first, 10)
    assert parts.locate(15) == (second, 25)
    assert parts.locate(25) == (third, None)
    assert parts.rotate(end) is None  # 5 bytes in the newest: under the bound

    # acked: the first result, and out of order everything in the second part
    ahead = {10: 15, 15: 20, 20: 25}
    assert parts.acknowledged(5, ahead) == [(10, 25)]  # the first part still holds "bbbb"
    assert parts.locate(5) == (first, 10)
    assert parts.acknowledged(10, ahead) == [(0, 10)]
    assert parts.acknowledged(30, {}) == []  # the newest part stays
    assert parts.count == 1
    assert parts.newest == third

    again = ResultParts(first, bound=10)  # after a restart: what is on disk
    first.unlink()
    second.unlink()
    again.scan()
    assert (again.count, again.newest) == (1, third)


def test_a_rotation_cut_short_by_a_crash_is_not_a_part(tmp_path: Path) -> None:
    first = tmp_path / "results.jsonl"
    first.write_bytes(b"aaaa\nbbbb\n")
    (tmp_path / "results.0000000000000010.jsonl").write_bytes(b"")  # created, never extended
    parts = ResultParts(first, bound=10)
    parts.scan()
    assert (parts.count, parts.newest) == (1, first)
    assert not (tmp_path / "results.0000000000000010.jsonl").exists()
