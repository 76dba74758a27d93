"""The CLI in-process via ``main(argv)``, against ``batchpump emulate`` in its own process.

Rules: the emulator subprocess listens on 127.0.0.1 port 0 (its URL is read from its first
line), on a fast clock, and is terminated at the end of the module; the CLI runs in-process;
keys are fake; every test is bounded by the pytest timeout.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from batchpump.cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main

from .helpers import assert_exactly_once, read_results, write_requests

KEY = "sk-test-cli-not-a-real-key-0123456789"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchpump", "emulate", "--port", "0", "--time-scale", "2000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("batchpump emulator listening on "), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def openai_env(emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{emulator_url}/v1")


def test_demo_runs_100k_lines_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--dir", str(tmp_path), "--progress", "none"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == EXIT_OK, err
    assert "every line came back exactly once" in err
    assert f"kept in {tmp_path}" in err
    assert "retry 1/" not in err  # injected 429s and 5xx are counted, not printed one by one
    assert "batchpump run" in captured.out  # the summary on stdout
    results = read_results(tmp_path / "demo-requests.results.jsonl")
    assert_exactly_once(results, [f"demo-{i}" for i in range(100_000)])


@pytest.mark.usefixtures("openai_env")
def test_run_status_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "requests.jsonl"
    ids = write_requests(src, 300)
    out = tmp_path / "out.jsonl"
    argv = ["run", str(src), "--out", str(out), "--max-lines", "100", "--progress", "json"]
    assert main(argv) == EXIT_OK
    captured = capsys.readouterr()
    assert_exactly_once(read_results(out), ids)
    assert '"state":"done"' in captured.err  # JSON progress lines off a terminal
    assert KEY not in captured.err + captured.out

    journal = tmp_path / ".batchpump"
    assert main(["status", "--journal", str(journal)]) == EXIT_OK
    status = capsys.readouterr().out  # what a command reports goes to stdout
    assert "done" in status
    assert "300/300" in status

    # Running the same command again resumes the finished run: no new batches, same results.
    assert main(argv) == EXIT_OK
    assert_exactly_once(read_results(out), ids)


@pytest.mark.usefixtures("openai_env")
def test_bad_input_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "requests.jsonl"
    write_requests(src, 3)
    with src.open("ab") as f:
        f.write(b'{"custom_id": "req-1", "body": {}}\n')
    assert main(["run", str(src), "--progress", "none"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "line 4" in err
    assert "duplicate" in err
    assert "line 2" in err


@pytest.mark.usefixtures("openai_env")
def test_skipped_lines_make_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "requests.jsonl"
    write_requests(src, 5)
    with src.open("ab") as f:
        f.write(b"[1, 2]\n")
    code = main(["run", str(src), "--on-invalid", "skip", "--progress", "none"])
    assert code == EXIT_SOME_FAILED, capsys.readouterr().err


def test_missing_key_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    src = tmp_path / "requests.jsonl"
    write_requests(src, 1)
    assert main(["run", str(src), "--progress", "none"]) == EXIT_USAGE
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_missing_input_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "/nonexistent/requests.jsonl", "--progress", "none"]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err


def test_openai_sdk_works_against_batchpump_emulate(emulator_url: str, tmp_path: Path) -> None:
    """The official SDK, unchanged, against the emulator the CLI serves."""
    import openai

    src = tmp_path / "requests.jsonl"
    write_requests(src, 3)
    client = openai.OpenAI(api_key=KEY, base_url=f"{emulator_url}/v1", max_retries=0)
    with client, src.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"who": "sdk"},
        )
        assert client.batches.retrieve(batch.id).id == batch.id
        assert batch.id in [b.id for b in client.batches.list(limit=2)]
        for _ in range(10_000):  # the emulator's clock runs 2000x: done in a few reads
            batch = client.batches.retrieve(batch.id)
            if batch.status == "completed":
                break
        assert batch.status == "completed"
        assert batch.output_file_id is not None
        lines = client.files.content(batch.output_file_id).text.splitlines()
        assert sorted(msgspec.json.decode(line)["custom_id"] for line in lines) == [
            "req-0",
            "req-1",
            "req-2",
        ]
        other = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert client.batches.cancel(other.id).status in ("cancelling", "cancelled")


@pytest.mark.parametrize(
    ("provider", "env"),
    [
        ("anthropic", {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "{url}"}),
        ("together", {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": "{url}/together/v1"}),
        (
            "azure",
            {
                "AZURE_OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_ENDPOINT": "{url}",
                "OPENAI_API_VERSION": "2024-10-21",
            },
        ),
    ],
)
def test_run_other_providers_from_their_usual_variables(
    provider: str,
    env: dict[str, str],
    emulator_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(url=emulator_url))
    src = tmp_path / "requests.jsonl"
    ids = write_requests(src, 120, model="claude-3-5-haiku" if provider == "anthropic" else "m")
    out = tmp_path / "out.jsonl"
    argv = ["run", str(src), "--provider", provider, "--out", str(out), "--max-lines", "50"]
    code = main([*argv, "--progress", "none"])
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert_exactly_once(read_results(out), ids)
    assert KEY not in err


def test_run_item_providers_from_their_usual_variables(
    emulator_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """LlamaCloud documents and TELUS jobs through the same command."""
    monkeypatch.setenv("LLAMA_CLOUD_API_KEY", KEY)
    monkeypatch.setenv("LLAMA_CLOUD_BASE_URL", emulator_url)
    monkeypatch.setenv("TELUS_GTSTUDIO_API_KEY", KEY)
    monkeypatch.setenv("TELUS_GTSTUDIO_PROJECT_ID", "5b1e0c8e-7f6a-4a8e-9d1c-3f2b9a6c4e10")
    monkeypatch.setenv("TELUS_GTSTUDIO_BASE_URL", f"{emulator_url}/telus")
    docs = tmp_path / "docs.jsonl"
    jobs = tmp_path / "jobs.jsonl"
    with docs.open("wb") as d, jobs.open("wb") as j:
        for i in range(30):
            (tmp_path / f"doc-{i}.txt").write_text(f"document {i}")
            d.write(
                msgspec.json.encode(
                    {"custom_id": f"doc-{i}", "file": str(tmp_path / f"doc-{i}.txt")}
                )
            )
            d.write(b"\n")
            job = {"custom_id": f"job-{i}", "data": {"image_url": f"https://img.example/{i}.png"}}
            j.write(msgspec.json.encode(job) + b"\n")
    flow = "0c0a7c4e-2d3b-4f5a-8e9d-1a2b3c4d5e6f"
    for provider, src, extra in (
        ("llamacloud", docs, []),
        ("telus", jobs, ["--work-flow-id", flow]),
    ):
        out = tmp_path / f"{provider}.results.jsonl"
        argv = ["run", str(src), "--provider", provider, "--out", str(out), *extra]
        code = main([*argv, "--max-lines", "10", "--progress", "none"])
        err = capsys.readouterr().err
        assert code == EXIT_OK, err
        prefix = "doc" if provider == "llamacloud" else "job"
        assert_exactly_once(read_results(out), [f"{prefix}-{i}" for i in range(30)])
