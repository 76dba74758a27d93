"""The README's "Test your pipeline" example, kept runnable: a plain sync test with the
official SDK against the ``batchpump_emulator`` fixture, a scripted 503 and a day of emulated
time in one call."""

from __future__ import annotations

import json

import openai

from batchpump.emulator import RunningEmulator

LINES = "".join(
    json.dumps(
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
    )
    + "\n"
    for i in range(3)
).encode()


# --- the README example, from here --------------------------------------------------------------
def test_my_pipeline_survives_a_503(batchpump_emulator: RunningEmulator) -> None:
    emu = batchpump_emulator.emulator
    emu.script(
        [
            {
                "match": {"method": "POST", "path": "/v1/batches"},
                "times": 1,
                "respond": {"status": 503, "body": {"error": {"message": "overloaded"}}},
            }
        ]
    )
    client = openai.OpenAI(base_url=batchpump_emulator.openai_base_url, api_key="sk-test")
    file = client.files.create(file=("requests.jsonl", LINES), purpose="batch")
    batch = client.batches.create(  # the first try gets the 503, the SDK retries
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    emu.advance(24 * 3600)  # a day of emulated time, at once
    assert client.batches.retrieve(batch.id).status == "completed"
    verdict = emu.verdict()
    assert verdict["requests_per_route"]["openai.batches.create"] == 2
    assert verdict["ok"]  # no tag created twice, no line billed twice
    client.close()
