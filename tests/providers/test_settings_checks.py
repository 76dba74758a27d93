"""Settings that are plainly wrong are refused by the adapters' constructors, before any call.

Rules: nothing is sent (the URLs point at a closed port), keys are fake.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from batchpump import UsageError
from batchpump.providers.anthropic import Anthropic
from batchpump.providers.azure import AzureOpenAI
from batchpump.providers.llamacloud import LlamaCloud
from batchpump.providers.openai import OpenAI
from batchpump.providers.telus import Telus
from batchpump.providers.together import Together

KEY = "sk-test-settings-not-a-real-key"
PID = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: OpenAI(api_key=KEY, base_url="http://127.0.0.1:9"), ("/v1", "OPENAI_BASE_URL")),
        (lambda: OpenAI(api_key=KEY, base_url="127.0.0.1:9/v1"), ("http", "--base-url")),
        (
            lambda: Together(api_key=KEY, base_url="http://127.0.0.1:9/"),
            ("/v1", "TOGETHER_BASE_URL"),
        ),
        (
            lambda: Anthropic(api_key=KEY, base_url="http://127.0.0.1:9/v1"),
            ("/v1", "ANTHROPIC_BASE_URL"),
        ),
        (
            lambda: AzureOpenAI(api_key=KEY, azure_endpoint="https://x.example/openai"),
            ("/openai", "AZURE_OPENAI_ENDPOINT"),
        ),
        (
            lambda: LlamaCloud(api_key=KEY, base_url="http://127.0.0.1:9/api/v1"),
            ("/api/v1", "LLAMA_CLOUD_BASE_URL"),
        ),
        (
            lambda: Telus(api_key=KEY, project_id="my-project", base_url="http://127.0.0.1:9"),
            ("not a UUID", "TELUS_GTSTUDIO_PROJECT_ID"),
        ),
        (
            lambda: Telus(
                api_key=KEY, project_id=PID, work_flow_id="flow-1", base_url="http://127.0.0.1:9"
            ),
            ("not a UUID", "--work-flow-id"),
        ),
    ],
)
def test_plainly_wrong_settings_are_refused_naming_the_setting(
    make: Callable[[], object], names: tuple[str, ...]
) -> None:
    with pytest.raises(UsageError) as caught:
        make()
    for name in names:
        assert name in str(caught.value)
    assert KEY not in str(caught.value)


def test_right_settings_are_accepted() -> None:
    assert OpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1").base_url.endswith("/v1")
    assert OpenAI(api_key=KEY, base_url="http://127.0.0.1:9/compat/v1/").base_url.endswith("/v1")
    assert Anthropic(api_key=KEY, base_url="http://127.0.0.1:9").base_url == "http://127.0.0.1:9"
    flow = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"
    telus = Telus(api_key=KEY, project_id=PID, work_flow_id=flow, base_url="http://127.0.0.1:9")
    assert telus.settings == {"work_flow_id": flow}
