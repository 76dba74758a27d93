"""The CLI as a new user meets it: status and cancel beside a running run, resume with what the
run was made with, whole hints, help, streams, --json, --format openai, clean, stdin, and
failed runs that leave nothing behind.

Rules: ``batchpump emulate`` runs in its own process on 127.0.0.1 port 0 (two of them: a fast
clock, and a real-time one whose batches take ~14 s so a run is still active while a second
process looks at it); the CLI runs in-process through ``main`` or as ``python -m batchpump``;
keys are fake; no sleeps to make a race pass: the tests wait on the subprocess's output lines.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from batchpump import Errored, Rejected, Succeeded
from batchpump.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, _parser, main

from .helpers import assert_exactly_once, read_results, write_requests

KEY = "sk-test-cli-flows-not-a-real-key-0123456789"
#: This checkout: subprocesses started in a temporary directory import it, not another copy.
ROOT = Path(__file__).resolve().parent.parent


def start_emulator(time_scale: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchpump",
            "emulate",
            "--port",
            "0",
            "--time-scale",
            str(time_scale),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on " in line, line
    url = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert url is not None, line
    return proc, url.group(0)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="module")
def fast_url() -> Iterator[str]:
    proc, url = start_emulator(2000)
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    proc, url = start_emulator(1)
    try:
        yield url
    finally:
        stop(proc)


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TELUS_"))}
    env.update(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=f"{url}/v1", COLUMNS="80")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def fast_env(fast_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fast_url}/v1")
    return fast_url


def cli(
    *args: str, cwd: Path, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchpump", *args],
        cwd=cwd,
        env=env,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=100,
    )


def background_run(
    args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``batchpump run`` in its own process; return it, the run id and the status hint."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchpump", "run", *args, "--progress", "none"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    found = re.match(r"run ([0-9a-f]{24}): results go to ", first)
    assert found is not None, first + proc.stderr.read()
    hint = proc.stderr.readline()
    assert "batchpump status" in hint, hint
    return proc, found.group(1), hint.split(": ", 1)[1].strip()


# ---------------------------------------------------------------------------------------------
# 1. status and cancel while a run is active; 2. hints and resume with what the run was made with


def test_status_and_cancel_from_another_process_while_a_run_is_active(
    slow_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(slow_url)
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 200)
    state = tmp_path / "state"
    proc, run_id, status_hint = background_run(
        [str(src), "--max-lines", "50", "--journal", str(state)], tmp_path, env
    )
    try:
        # The printed status command, pasted as is, from a second process, mid-run.
        assert shlex.split(status_hint) == ["batchpump", "status", run_id, "--journal", "state"]
        shown = cli(*shlex.split(status_hint)[1:], cwd=tmp_path, env=env)
        assert shown.returncode == EXIT_OK, shown.stderr
        assert f"run        {run_id}" in shown.stdout
        assert f"openai at {slow_url}/v1" in shown.stdout
        assert "being run by pid" in shown.stdout
        assert "results to " + str(tmp_path / "in.results.jsonl") in shown.stdout
        assert re.search(r"created +\d{4}-\d\d-\d\dT", shown.stdout)
        # A unique prefix is enough; --json is machine-readable.
        code = main(["status", run_id[:6], "--journal", str(state), "--json"])
        assert code == EXIT_OK
        data = msgspec.json.decode(capsys.readouterr().out)
        assert data["run_id"] == run_id
        assert data["provider"] == "openai"
        assert data["active"].startswith("pid ")
        assert len(data["batches"]) == 4
        # Cancel from a third process: the running one is asked, and cancels.
        asked = cli("cancel", run_id[:8], "--journal", "state", cwd=tmp_path, env=env)
        assert asked.returncode == EXIT_OK, asked.stderr
        assert f"asked the batchpump running run {run_id}" in asked.stderr
        assert proc.wait(timeout=60) == EXIT_SOME_FAILED
        assert proc.stderr is not None
        tail = proc.stderr.read()
        assert "cancel requested from another terminal" in tail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    results = read_results(tmp_path / "in.results.jsonl")
    assert_exactly_once(results, ids)
    assert main(["status", run_id, "--journal", str(state), "--json"]) == EXIT_OK
    assert msgspec.json.decode(capsys.readouterr().out)["state"] == "cancelled"


def test_ctrl_c_prints_a_whole_resume_command_that_works_pasted(
    slow_url: str, tmp_path: Path
) -> None:
    env = env_for(slow_url)
    data = tmp_path / "data"
    data.mkdir()
    src = data / "in.jsonl"
    ids = write_requests(src, 120)
    proc, run_id, _ = background_run([str(src), "--max-lines", "60"], tmp_path, env)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    found = re.search(r"continue with: (batchpump resume .*?)(?: \(Ctrl-C|$)", err, re.M)
    assert found is not None, err
    command = found.group(1)
    # The real id, and --journal because the journal is beside the results, not in the cwd.
    assert shlex.split(command) == ["batchpump", "resume", run_id, "--journal", "data/.batchpump"]
    resumed = cli(*shlex.split(command)[1:], cwd=tmp_path, env=env)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert_exactly_once(read_results(data / "in.results.jsonl"), ids)
    assert "succeeded" in resumed.stdout  # the summary on stdout


def test_resume_and_cancel_use_the_runs_provider_and_address(
    fast_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("TELUS_GTSTUDIO_API_KEY", KEY)
    monkeypatch.setenv("TELUS_GTSTUDIO_PROJECT_ID", "5b1e0c8e-7f6a-4a8e-9d1c-3f2b9a6c4e10")
    monkeypatch.delenv("TELUS_GTSTUDIO_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    jobs = tmp_path / "jobs.jsonl"
    with jobs.open("wb") as f:
        for i in range(20):
            job = {"custom_id": f"job-{i}", "data": {"image_url": f"https://img.example/{i}.png"}}
            f.write(msgspec.json.encode(job) + b"\n")
    flow = "0c0a7c4e-2d3b-4f5a-8e9d-1a2b3c4d5e6f"
    argv = ["run", "jobs.jsonl", "--provider", "telus", "--base-url", f"{fast_url}/telus"]
    assert main([*argv, "--work-flow-id", flow, "--progress", "none"]) == EXIT_OK
    run_id = re.search(r"run ([0-9a-f]{24})", capsys.readouterr().err)
    assert run_id is not None
    # No provider, address or workflow flag: resume takes them from the run (the key from env).
    assert main(["resume", run_id.group(1)[:10], "--progress", "none"]) == EXIT_OK
    captured = capsys.readouterr()
    assert "OPENAI" not in captured.err
    assert_exactly_once(
        read_results(tmp_path / "jobs.results.jsonl"), [f"job-{i}" for i in range(20)]
    )
    assert main(["cancel", run_id.group(1)]) == EXIT_OK
    assert "already done" in capsys.readouterr().err


def test_unknown_or_ambiguous_run_id_exits_2_with_a_message(
    fast_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    write_requests(src, 5)
    assert main(["run", str(src), "--progress", "none"]) == EXIT_OK
    capsys.readouterr()
    state = str(tmp_path / ".batchpump")
    for command in ("status", "resume", "cancel", "clean"):
        assert main([command, "feedfacefeedface", "--journal", state]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "no run 'feedfacefeedface'" in err, (command, err)
    assert main(["status", "--journal", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert "no journal at" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 4. help, streams, flags named as flags


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


def test_help_gives_every_default_the_provider_variables_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    options = text[text.index("\noptions:") :]
    for option in ("--endpoint", "--max-attempts", "--on-invalid", "--provider", "--journal"):
        block = options[options.index(f"  {option}") :].split("\n  -", 1)[0]
        assert "(default:" in " ".join(block.split()), option
    # Every argument of every subcommand has help; every one that takes a value names its
    # default (flags and the required arguments have none to name).
    for name, sub in subcommands().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or name == "emulate":
                continue
            assert action.help, (name, action.dest)
            takes_value = action.nargs != 0 and action.option_strings
            if (takes_value or action.nargs == "?") and not action.required:
                assert "default" in action.help, (name, action.dest)
    assert "INPUT" in text
    assert "- reads stdin" in text
    for variable in ("OPENAI_API_KEY", "TELUS_GTSTUDIO_PROJECT_ID", "LLAMA_CLOUD_API_KEY"):
        assert variable in text
    assert "130  interrupted" in text
    assert "stdout" in text
    assert "stderr" in text
    with pytest.raises(SystemExit):
        main(["cancel", "--help"])
    cancel = capsys.readouterr().out
    assert "--progress" not in cancel
    assert "--job-type" not in cancel
    assert "RUN_ID" in cancel
    assert "unique prefix" in " ".join(cancel.split())  # wherever the help wraps


def test_missing_key_names_the_flag_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    src = tmp_path / "in.jsonl"
    write_requests(src, 3)
    assert main(["run", str(src), "--progress", "none"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "pass --api-key or set OPENAI_API_KEY" in err
    assert "as an argument" not in err
    assert not (tmp_path / ".batchpump").exists()
    assert not (tmp_path / "in.results.jsonl").exists()


def test_input_error_leaves_no_run_and_no_results_file(
    fast_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    write_requests(src, 3)
    with src.open("ab") as f:
        f.write(b"[1, 2]\n")
    assert main(["run", str(src), "--progress", "none"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "pass --on-invalid skip" in err
    assert 'on_invalid="skip"' not in err
    assert not (tmp_path / "in.results.jsonl").exists()
    assert main(["status", "--journal", str(tmp_path / ".batchpump"), "--json"]) == EXIT_OK
    assert msgspec.json.decode(capsys.readouterr().out)["runs"] == []
    assert not list((tmp_path / ".batchpump" / "runs").glob("*"))


def test_endpoint_typo_is_one_message_about_the_flag(
    fast_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    write_requests(src, 3_000)
    code = main(["run", str(src), "--endpoint", "/v1/chat/completion", "--progress", "none"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "pass --endpoint /v1/chat/completions" in err
    assert "more" not in err
    assert "Python" not in err


def test_api_key_flag_works_and_is_never_echoed(
    fast_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 10)
    argv = ["run", str(src), "--api-key", KEY, "--base-url", f"{fast_url}/v1"]
    assert main([*argv, "--progress", "json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert_exactly_once(read_results(tmp_path / "in.results.jsonl"), ids)


def test_json_summary_on_stdout_with_tokens_and_cost(fast_url: str, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    write_requests(src, 40)
    prices = tmp_path / "prices.json"
    prices.write_text('{"gpt-4o-mini": {"input": 1000000, "output": 0}}')
    done = cli(
        "run", "in.jsonl", "--json", "--prices", "prices.json", cwd=tmp_path, env=env_for(fast_url)
    )
    assert done.returncode == EXIT_OK, done.stderr
    summary = msgspec.json.decode(done.stdout)  # stdout holds the JSON summary only
    assert summary["state"] == "done"
    assert summary["results"]["succeeded"] == 40
    tokens = summary["usage"]["gpt-4o-mini"]
    assert tokens["input_tokens"] > 0
    assert summary["cost"]["gpt-4o-mini"] == pytest.approx(tokens["input_tokens"])
    assert "run " in done.stderr  # diagnostics on stderr


def test_output_into_a_pipe_is_not_wrapped(fast_url: str, tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-directory-name-" * 4) / "more"
    deep.mkdir(parents=True)
    write_requests(deep / "requests.jsonl", 5)
    env = env_for(fast_url)
    done = cli("run", str(deep / "requests.jsonl"), "--progress", "none", cwd=tmp_path, env=env)
    assert done.returncode == EXIT_OK, done.stderr
    results = str(deep / "requests.results.jsonl")
    assert len(results) > 80
    assert results in done.stdout  # the summary's path, whole on one line
    shown = cli("status", "--journal", str(deep / ".batchpump"), cwd=tmp_path, env=env)
    assert shown.returncode == EXIT_OK, shown.stderr
    assert results in shown.stdout


# ---------------------------------------------------------------------------------------------
# 7. clean, 8. --format openai, 9. stdin


def test_shards_are_removed_when_done_and_clean_frees_what_was_kept(
    fast_url: str, tmp_path: Path
) -> None:
    env = env_for(fast_url)
    write_requests(tmp_path / "a.jsonl", 30)
    write_requests(tmp_path / "b.jsonl", 30, prefix="b")
    assert cli("run", "a.jsonl", "--progress", "none", cwd=tmp_path, env=env).returncode == 0
    runs = tmp_path / ".batchpump" / "runs"
    assert not list(runs.glob("*/shards/*"))  # removed once every result was committed
    kept = cli("run", "b.jsonl", "--keep-shards", "--progress", "none", cwd=tmp_path, env=env)
    assert kept.returncode == EXIT_OK
    assert list(runs.glob("*/shards/*.jsonl"))
    size = sum(p.stat().st_size for p in runs.glob("*/shards/*"))
    cleaned = cli("clean", cwd=tmp_path, env=env)
    assert cleaned.returncode == EXIT_OK, cleaned.stderr
    assert "freed " in cleaned.stdout
    assert "2 finished runs" in cleaned.stdout
    assert f"{size:,} bytes" in cleaned.stdout or "KB" in cleaned.stdout
    assert not list(runs.glob("*/shards/*"))
    assert (tmp_path / "b.results.jsonl").exists()  # results are the user's: kept
    again = cli("clean", "--json", cwd=tmp_path, env=env)
    assert msgspec.json.decode(again.stdout)["freed_bytes"] == 0


def test_format_openai_writes_openais_batch_output_shape(
    fast_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 20)
    with src.open("ab") as f:
        f.write(b'{"custom_id": "bad", "body": 3}\n')
    argv = ["run", str(src), "--format", "openai", "--on-invalid", "skip", "--progress", "none"]
    assert main(argv) == EXIT_SOME_FAILED
    capsys.readouterr()
    native = read_results(tmp_path / "in.results.batchpump.jsonl")
    assert_exactly_once(native, [*ids, "bad"])
    lines = [
        msgspec.json.decode(x) for x in (tmp_path / "in.results.jsonl").read_bytes().splitlines()
    ]
    assert len(lines) == 21
    for line in lines:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_")
    ok = next(x for x in lines if x["custom_id"] == "req-0")
    assert ok["error"] is None
    assert ok["response"]["status_code"] == 200
    assert "request_id" in ok["response"]
    assert ok["response"]["body"]["object"] == "chat.completion"
    bad = next(x for x in lines if x["custom_id"] == "bad")
    assert bad["response"] is None
    assert bad["error"]["code"] == "invalid_request"
    assert all(isinstance(r, Succeeded | Rejected | Errored) for r in native)


def test_run_dash_reads_stdin(fast_url: str, tmp_path: Path) -> None:
    ids = write_requests(tmp_path / "src.jsonl", 50)
    data = (tmp_path / "src.jsonl").read_bytes()
    done = cli(
        "run",
        "-",
        "--out",
        "out.jsonl",
        "--progress",
        "none",
        cwd=tmp_path,
        env=env_for(fast_url),
        stdin=data,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert_exactly_once(read_results(tmp_path / "out.jsonl"), ids)
    assert not list((tmp_path / ".batchpump" / "spool").glob("*"))  # the spool went with the run


def test_library_hints_become_whole_commands() -> None:
    from rich.console import Console

    from batchpump.cli import _Ui

    text = io.StringIO()
    ui = _Ui(out=Console(file=io.StringIO()), err=Console(file=text, width=300))
    ui.resume_hint = "batchpump resume 0123456789abcdef01234567 --journal data/.batchpump"
    ui.error(
        "journal", "disk is full while committing; free space and run `batchpump resume RUN_ID`"
    )
    assert f"`{ui.resume_hint}`" in text.getvalue()
    assert "RUN_ID" not in text.getvalue()


@pytest.mark.parametrize(
    ("library", "cli_words"),
    [
        (
            "no OpenAI API key: pass it as an argument or set OPENAI_API_KEY",
            "pass --api-key or set",
        ),
        ("extract_v2 needs configuration_id= (a saved Extract configuration)", "needs --config-id"),
        ('add "work_flow_id" to the line or pass work_flow_id=', "or pass --work-flow-id"),
        ("max_lines=0 must be between 1 and the provider's limit of 50000", "--max-lines 0"),
    ],
)
def test_messages_name_the_cli_flags(library: str, cli_words: str) -> None:
    from batchpump.cli import _cli_words

    assert cli_words in _cli_words(library)


def test_demo_in_its_own_process_looks_happy(tmp_path: Path) -> None:
    env = env_for("http://127.0.0.1:9")  # the demo serves its own emulator
    done = cli("demo", "--lines", "3000", "--progress", "none", cwd=tmp_path, env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert "every line came back exactly once" in done.stderr
    assert "`batchpump demo --dir DIR` keeps" in done.stderr
    assert "retry 1/" not in done.stderr
    assert "3,000" in done.stdout  # the summary table on stdout
