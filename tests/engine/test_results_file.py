"""The results file is the user's record of paid work: never padded, one run per file.

Rules: in-memory provider and journal (one ``MemoryJournal`` shared by successive pumps stands
for the state directory), fast polling, every test bounded by the pytest timeout.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from batchpump import MemoryJournal, Pump, Rejected, ResultsFileError, RunOptions, Succeeded

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests
from .test_engine import FAST


async def _run(
    journal: MemoryJournal,
    provider: FakeProvider,
    src: Path,
    tmp_path: Path,
    **kw: object,
) -> str:
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        kw.setdefault("options", FAST)
        run = await pump.submit(src, **kw)  # type: ignore[arg-type]
        await run.wait()
        return run.id


async def _finished(tmp_path: Path, lines: int = 300) -> tuple[MemoryJournal, list[str], str]:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, lines)
    journal = MemoryJournal()
    run_id = await _run(journal, FakeProvider(), src, tmp_path)
    return journal, ids, run_id


# -- never padded -------------------------------------------------------------------------------


async def test_deleted_results_file_is_refused_never_padded(tmp_path: Path) -> None:
    journal, _, run_id = await _finished(tmp_path)
    out = tmp_path / "in.results.jsonl"
    out.unlink()
    with pytest.raises(ResultsFileError, match=r"is missing.*results .* --rebuild") as caught:
        await _run(journal, FakeProvider(), tmp_path / "in.jsonl", tmp_path)
    assert run_id in str(caught.value)
    assert not out.exists()  # not recreated as a file of NUL bytes


async def test_cut_short_results_file_is_refused_and_left_as_is(tmp_path: Path) -> None:
    journal, _, _ = await _finished(tmp_path)
    out = tmp_path / "in.results.jsonl"
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 3])
    with pytest.raises(ResultsFileError, match="shorter than"):
        await _run(journal, FakeProvider(), tmp_path / "in.jsonl", tmp_path)
    assert out.read_bytes() == data[: len(data) // 3]
    assert b"\0" not in out.read_bytes()


async def test_rebuild_downloads_the_results_again(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    journal = MemoryJournal()
    provider = FakeProvider(flaky={"req-5": 1})  # one line settled on its second attempt
    run_id = await _run(journal, provider, src, tmp_path)
    out = tmp_path / "in.results.jsonl"
    before = {r.custom_id: r for r in read_results(out)}
    out.unlink()
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        report = await pump.rebuild_results(run_id)
    assert report.lost == 0
    assert report.recovered == 300
    after = read_results(out)
    assert_exactly_once(after, ids)
    assert {r.custom_id: r for r in after} == before
    assert isinstance({r.custom_id: r for r in after}["req-5"], Succeeded)
    # The run reads as whole again: the same command goes on without an error or a new batch.
    batches = len(provider.batches)
    await _run(journal, provider, src, tmp_path)
    assert len(provider.batches) == batches
    assert_exactly_once(read_results(out), ids)


async def test_rebuild_keeps_what_survives_and_reports_what_is_gone(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    journal = MemoryJournal()
    provider = FakeProvider()
    run_id = await _run(journal, provider, src, tmp_path)
    out = tmp_path / "in.results.jsonl"
    data = out.read_bytes()
    out.write_bytes(data[: data.index(b"\n", len(data) // 2) + 1 + 10])  # half, and a torn line
    survivors = {r.custom_id for r in read_results(_whole_lines(out))}
    lost_batch = next(b for b, f in provider.batches.items() if not survivors & set(f.ids))
    provider.gone.add(lost_batch)
    lost = set(provider.batches[lost_batch].ids)
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        assert "shorter than" in (await pump.check_results(run_id) or "")
        report = await pump.rebuild_results(run_id)
        assert await pump.check_results(run_id) is None
    assert report.kept == len(survivors) > 0
    missing = lost - survivors
    assert missing
    assert report.lost == len(missing)
    assert set(report.lost_ids) <= missing
    assert report.unavailable_batches == (lost_batch,)
    assert "could not be recovered" in report.describe()
    results = read_results(out)
    assert {r.custom_id for r in results} == set(ids) - missing
    assert len(results) == len({r.custom_id for r in results})


def _whole_lines(path: Path) -> Path:
    data = path.read_bytes()
    copy = path.with_name("whole.jsonl")
    copy.write_bytes(data[: data.rfind(b"\n") + 1])
    return copy


# -- one results file, one run ------------------------------------------------------------------


async def test_another_run_pointed_at_the_same_file_is_refused(tmp_path: Path) -> None:
    journal, _, first = await _finished(tmp_path)
    out = tmp_path / "in.results.jsonl"
    before = out.read_bytes()
    edited = tmp_path / "edited.jsonl"
    edited_ids = write_requests(edited, 50, prefix="new")
    provider = FakeProvider()
    with pytest.raises(ResultsFileError, match=f"results of run {first}.*--overwrite"):
        await _run(journal, provider, edited, tmp_path, out=out)
    assert out.read_bytes() == before
    assert not provider.calls["create"]

    second = await _run(journal, FakeProvider(), edited, tmp_path, out=out, overwrite=True)
    assert_exactly_once(read_results(out), edited_ids)
    record = await journal.get_run(first)
    assert record is not None
    assert record.out_taken_by == second
    async with Pump(FakeProvider(), journal=journal, state_dir=tmp_path / "state") as pump:
        with pytest.raises(ResultsFileError, match="no longer owns a results file"):
            await pump.resume(first)
    assert_exactly_once(read_results(out), edited_ids)


async def test_an_existing_file_no_run_wrote_is_not_truncated(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 20)
    out = tmp_path / "precious.jsonl"
    out.write_bytes(b"the user's own data\n")
    journal = MemoryJournal()
    with pytest.raises(ResultsFileError, match="no run in the journal"):
        await _run(journal, FakeProvider(), src, tmp_path, out=out)
    assert out.read_bytes() == b"the user's own data\n"
    await _run(journal, FakeProvider(), src, tmp_path, out=out, overwrite=True)
    assert_exactly_once(read_results(out), ids)


async def test_same_input_with_another_out_is_not_replayed_silently(tmp_path: Path) -> None:
    journal, ids, first = await _finished(tmp_path)
    other = tmp_path / "other.jsonl"
    with pytest.raises(ResultsFileError, match=f"run {first}.*--fresh"):
        await _run(journal, FakeProvider(), tmp_path / "in.jsonl", tmp_path, out=other)
    assert not other.exists()
    second = await _run(
        journal, FakeProvider(), tmp_path / "in.jsonl", tmp_path, out=other, fresh=True
    )
    assert second != first
    assert_exactly_once(read_results(other), ids)


async def test_provider_settings_are_part_of_the_run_identity(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 40)
    journal = MemoryJournal()
    first = await _run(journal, FakeProvider(settings={"work_flow_id": "a"}), src, tmp_path)
    changed = FakeProvider(settings={"work_flow_id": "b"})
    with pytest.raises(ResultsFileError, match=r"provider settings.*--fresh"):
        await _run(journal, changed, src, tmp_path)
    assert changed.calls["create"] == 0  # not replayed with the old workflow either
    second = await _run(journal, changed, src, tmp_path, fresh=True)
    assert second != first
    assert changed.calls["create"] > 0
    assert_exactly_once(read_results(tmp_path / "in.results.jsonl"), ids)


async def test_rerun_with_other_sending_options_continues_the_same_run(tmp_path: Path) -> None:
    journal, ids, first = await _finished(tmp_path)
    provider = FakeProvider()
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        opts = RunOptions(max_lines=FAST.max_lines, max_attempts=5, poll=FAST.poll)
        run = await pump.submit(tmp_path / "in.jsonl", options=opts)
        await run.wait()
    assert run.id == first
    assert not provider.calls["create"]
    assert_exactly_once(read_results(tmp_path / "in.results.jsonl"), ids)


async def test_rebuild_checks_the_input_again_for_rejected_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 120)
    with src.open("ab") as f:
        f.write(b'{"custom_id": "bad-1", "method": "POST"}\n')
    journal = MemoryJournal()
    provider = FakeProvider()
    options = msgspec.structs.replace(FAST, on_invalid="skip")
    run_id = await _run(journal, provider, src, tmp_path, options=options)
    out = tmp_path / "in.results.jsonl"
    before = sorted(out.read_bytes().splitlines())
    out.unlink()
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        report = await pump.rebuild_results(run_id)
    assert report.lost == 0
    results = read_results(out)
    assert_exactly_once(results, [*ids, "bad-1"])
    assert isinstance({r.custom_id: r for r in results}["bad-1"], Rejected)
    assert sorted(out.read_bytes().splitlines()) == before
