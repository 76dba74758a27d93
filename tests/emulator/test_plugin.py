"""The pytest plugin from an outside project: a tiny project written into ``tmp_path`` with a
test using the official sync ``openai.OpenAI`` client and one using ``AsyncOpenAI``, run by
``python -m pytest`` in a subprocess under pytest-asyncio auto mode, strict mode, and without
pytest-asyncio (the anyio plugin).

The subprocess imports this checkout's ``batchpump`` (``PYTHONPATH``), whose ``pytest11`` entry
point registers the fixtures; its emulator listens on 127.0.0.1 port 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

COMMON = """
import msgspec

LINES = b"".join(
    msgspec.json.encode(
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
    ) + b"\\n"
    for i in range(3)
)
"""

SYNC_TEST = """
import openai
from common import LINES


def test_sync_client(batchpump_emulator):
    client = openai.OpenAI(base_url=batchpump_emulator.openai_base_url, api_key="sk-test")
    batchpump_emulator.emulator.script(
        [{"match": {"method": "POST", "path": "/v1/batches"}, "respond": {"status": 503}}]
    )
    file = client.files.create(file=("in.jsonl", LINES), purpose="batch")
    batch = client.with_options(max_retries=1).batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )  # the scripted 503 first, then the SDK's retry succeeds
    batchpump_emulator.emulator.advance(3600)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts.completed == 3
    assert batchpump_emulator.emulator.verdict()["ok"]
    client.close()
"""

ASYNC_TEST = """
import openai
import pytest
from common import LINES

{marker}
async def test_async_client(batchpump_emulator):
    async with openai.AsyncOpenAI(
        base_url=batchpump_emulator.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        file = await client.files.create(file=("in.jsonl", LINES), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batchpump_emulator.emulator.advance(3600)
        done = await client.batches.retrieve(batch.id)
        assert done.status == "completed"
{extra}
"""

ANYIO_BACKEND = """

@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def write_project(path: Path, marker: str, extra: str = "") -> None:
    path.mkdir()
    (path / "common.py").write_text(COMMON)
    (path / "test_sync.py").write_text(SYNC_TEST)
    (path / "test_async.py").write_text(ASYNC_TEST.format(marker=marker, extra=extra))


@pytest.mark.parametrize(
    ("mode", "marker", "extra", "options"),
    [
        ("auto", "", "", ["-o", "asyncio_mode=auto"]),
        ("strict", "@pytest.mark.asyncio", "", ["-o", "asyncio_mode=strict"]),
        ("anyio-without-pytest-asyncio", "@pytest.mark.anyio", ANYIO_BACKEND, ["-p", "no:asyncio"]),
    ],
)
def test_outside_project_passes(
    tmp_path: Path, mode: str, marker: str, extra: str, options: list[str]
) -> None:
    project = tmp_path / mode
    write_project(project, textwrap.dedent(marker), extra)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(project)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, "-W", "error"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "2 passed" in report, report
