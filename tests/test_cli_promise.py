"""The CLI side of issue 13 items 5, 6 and 9: exit codes and messages a user meets.

Rules: as ``test_cli``: the emulator runs as ``batchpump emulate`` in its own process on
127.0.0.1 port 0 with a fast clock; the CLI runs in-process through ``main``; keys are fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchpump.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main

from .helpers import assert_exactly_once, emulator_process, read_results, write_requests

KEY = "sk-test-cli-promise-not-a-real-key"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with emulator_process() as url:
        yield url


@pytest.fixture
def openai_env(emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{emulator_url}/v1")
    return emulator_url


def _run_id(err: str) -> str:
    return err.split("run ", 1)[1].split(":", 1)[0]


def _flat(text: str) -> str:
    """The console wraps lines (at 80 columns off a terminal): join them back."""
    return " ".join(text.split())


def test_deleted_results_are_refused_then_rebuilt(
    openai_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "requests.jsonl"
    ids = write_requests(src, 200)
    out = tmp_path / "out.jsonl"
    argv = ["run", str(src), "--out", str(out), "--max-lines", "50", "--progress", "none"]
    assert main(argv) == EXIT_OK
    run_id = _run_id(capsys.readouterr().err)
    before = read_results(out)
    out.unlink()

    assert main(argv) == EXIT_USAGE
    err = _flat(capsys.readouterr().err)
    assert "is missing" in err
    assert f"batchpump results {run_id} --rebuild" in err
    assert not out.exists()

    journal = str(tmp_path / ".batchpump")
    assert main(["results", run_id, "--journal", journal]) == 1
    assert "is missing" in capsys.readouterr().err
    assert main(["results", run_id, "--rebuild", "--journal", journal]) == EXIT_OK
    assert "every line has its result" in _flat(
        capsys.readouterr().out
    )  # the report is the summary: stdout
    assert sorted(read_results(out), key=lambda r: r.custom_id) == sorted(
        before, key=lambda r: r.custom_id
    )
    assert main(argv) == EXIT_OK  # the same command reads as whole again
    assert_exactly_once(read_results(out), ids)


def test_another_run_on_the_same_out_exits_2_unless_overwrite(
    openai_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    first = tmp_path / "first.jsonl"
    write_requests(first, 50)
    assert main(["run", str(first), "--out", str(out), "--progress", "none"]) == EXIT_OK
    kept = out.read_bytes()
    capsys.readouterr()

    edited = tmp_path / "edited.jsonl"
    edited_ids = write_requests(edited, 30, prefix="edited")
    argv = ["run", str(edited), "--out", str(out), "--progress", "none"]
    assert main(argv) == EXIT_USAGE
    err = _flat(capsys.readouterr().err)
    assert "holds the results of run" in err
    assert "--overwrite" in err
    assert out.read_bytes() == kept

    assert main([*argv, "--overwrite"]) == EXIT_OK
    assert_exactly_once(read_results(out), edited_ids)


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_that_is_a_directory_is_refused_with_a_file_to_give(
    openai_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], overwrite: bool
) -> None:
    src = tmp_path / "requests.jsonl"
    write_requests(src, 5)
    out = tmp_path / "outdir"
    out.mkdir()
    argv = ["run", str(src), "--out", str(out), "--progress", "none"]
    assert main([*argv, "--overwrite"] if overwrite else argv) == EXIT_USAGE
    err = _flat(capsys.readouterr().err)
    assert f"{out} is a directory" in err
    assert str(out / "results.jsonl") in err
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_base_url_without_v1_is_refused_before_sending(
    openai_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_env)
    src = tmp_path / "requests.jsonl"
    write_requests(src, 5)
    assert main(["run", str(src), "--progress", "none"]) == EXIT_USAGE
    err = _flat(capsys.readouterr().err)
    assert "/v1" in err
    assert "OPENAI_BASE_URL" in err


def test_a_route_that_404s_exits_3_and_the_fixed_command_continues(
    openai_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_env}/api/v1")
    src = tmp_path / "requests.jsonl"
    ids = write_requests(src, 40)
    argv = ["run", str(src), "--progress", "none"]
    assert main(argv) == EXIT_REFUSED
    err = _flat(capsys.readouterr().err)
    # The run's first call (the sweep for batches tagged with this run) names the URL.
    assert f"GET {openai_env}/api/v1/batches" in err
    assert "--base-url" in err
    assert read_results(tmp_path / "requests.results.jsonl") == []

    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_env}/v1")
    assert main(argv) == EXIT_OK
    assert_exactly_once(read_results(tmp_path / "requests.results.jsonl"), ids)


def test_demo_twice_in_one_dir_replaces_its_own_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--dir", str(tmp_path), "--lines", "500", "--progress", "none"]
    assert main(argv) == EXIT_OK
    assert main(argv) == EXIT_OK  # a new emulator, so a new run, on the same results file
    assert "every line came back exactly once" in capsys.readouterr().err
    results = read_results(tmp_path / "demo-requests.results.jsonl")
    assert_exactly_once(results, [f"demo-{i}" for i in range(500)])
