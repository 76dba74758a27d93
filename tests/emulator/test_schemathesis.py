"""A bounded schemathesis run against the emulator, from the providers' own OpenAPI specs.

For each operation of the OpenAI spec (files, uploads, batches) and of the Together spec
(files, batches) the emulator serves, schemathesis generates valid cases (positive) and
malformed ones (negative), each with random ids and, where a path names an object, with the id
of a real one. Checks: no 5xx ever, and every answer the spec describes matches its schema,
except the deviations listed in ``DEVIATIONS`` (one place, with the reason for each).

The specs live in ``shared/specs`` beside the project (``BATCHPUMP_SHARED`` overrides where);
without them the tests skip. The emulator is served on its own thread (schemathesis calls
through ``requests``, which blocks); loopback only. The run is bounded by a fixed number of
examples per operation and derandomized, so it takes the same cases every time.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev extra")

import hypothesis  # noqa: E402 - after the importorskip above
import requests  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode, openapi  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from batchpump._clock import ManualClock  # noqa: E402
from batchpump.emulator import RunningEmulator, emulator_thread  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SHARED = Path(os.environ.get("BATCHPUMP_SHARED", Path(__file__).resolve().parents[3] / "shared"))
KEY = "sk-schemathesis-not-a-real-key"
#: Examples per operation and generation mode (valid / malformed).
EXAMPLES: Final = 12

_UNSET_IS_NULL: Final = (
    "the live API sends null for a field not set yet (the official SDK types it Optional);"
    " the spec marks it optional but not nullable"
)
_BATCH: Final = "/components/schemas/Batch/properties"
#: Where the emulator's answer departs from the spec on purpose, by (schema location, what was
#: found): the reason for each. Anything else the checks find fails the test.
DEVIATIONS: Final[dict[tuple[str, str], str]] = {
    **{
        (f"{_BATCH}/{name}", "null"): _UNSET_IS_NULL
        for name in (
            "cancelled_at",
            "cancelling_at",
            "completed_at",
            "error_file_id",
            "errors",
            "expired_at",
            "failed_at",
            "finalizing_at",
            "in_progress_at",
            "output_file_id",
        )
    },
    ("/components/schemas/OpenAIFile/properties/status_details", "null"): (
        "deprecated field; the live API sends null (SDK: Optional[str])"
    ),
    ("/properties/status_details", "null"): (
        "POST /files: the same deprecated OpenAIFile.status_details, inlined by the spec"
    ),
    ("/properties/expires_at", "null"): (
        "POST /files without expires_after: the file does not expire and the live API sends null"
        " (SDK: Optional[int])"
    ),
    ("/components/schemas/ListFilesResponse/properties/first_id", "null"): (
        "an empty page has no first id; the live API sends null (cursor page: Optional[str])"
    ),
    ("/components/schemas/ListFilesResponse/properties/last_id", "null"): (
        "an empty page has no last id; the live API sends null (cursor page: Optional[str])"
    ),
    (
        "/properties/purpose",
        '"evals" is not one of "assistants", "assistants_output" or 6 other candidates',
    ): (
        "the spec's upload request accepts purpose 'evals' but its OpenAIFile.purpose enum lacks"
        " it; the file is shown with the purpose it was uploaded with, as the live API does"
    ),
}


@dataclass
class Tally:
    """What one spec's run found."""

    operations: int = 0
    cases: int = 0
    failures: list[tuple[str, ...]] = field(default_factory=list)
    deviations: int = 0
    #: Answers by status class ("2xx", "4xx"...).
    statuses: dict[str, int] = field(default_factory=dict)


def spec(name: str) -> Path:
    path = SHARED / "specs" / name
    if not path.is_file():
        pytest.skip(
            f"the providers' API specs are not in this checkout ({path} is absent; they live in"
            " shared/specs beside the project, or set BATCHPUMP_SHARED)"
        )
    return path


@pytest.fixture(scope="module")
def running() -> Iterator[RunningEmulator]:
    # A clock that stands still: every run sees the same states, so the same figures.
    with emulator_thread(clock=ManualClock(), providers=("openai", "together")) as served:
        yield served


def _openai_objects(running: RunningEmulator) -> dict[str, str]:
    base, auth = running.openai_base_url, {"Authorization": f"Bearer {KEY}"}
    line = (
        b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",'
        b' "body": {"model": "m", "messages": []}}\n'
    )
    files = {"file": ("in.jsonl", io.BytesIO(line))}
    file = requests.post(f"{base}/files", data={"purpose": "batch"}, files=files, headers=auth)
    file_id = file.json()["id"]
    batch = requests.post(
        f"{base}/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        headers=auth,
    ).json()
    upload = requests.post(
        f"{base}/uploads",
        json={"purpose": "batch", "filename": "u.jsonl", "bytes": 10, "mime_type": "text/jsonl"},
        headers=auth,
    ).json()
    return {"file_id": file_id, "batch_id": batch["id"], "upload_id": upload["id"]}


def _together_objects(running: RunningEmulator) -> dict[str, str]:
    base, auth = running.together_base_url, {"Authorization": f"Bearer {KEY}"}
    line = b'{"custom_id": "a", "body": {"model": "m", "messages": []}}\n'
    file = requests.post(
        f"{base}/files/upload",
        data={"purpose": "batch-api", "file_name": "in.jsonl"},
        files={"file": ("in.jsonl", io.BytesIO(line))},
        headers=auth,
    ).json()
    job = requests.post(
        f"{base}/batches",
        json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"},
        headers=auth,
    ).json()
    return {"id": file["id"], "batch": job["job"]["id"]}


def run_spec(schema: Any, base_url: str, ids: dict[str, str], *, id_for: Any) -> Tally:
    """Generate and check every operation of ``schema``; return the tally."""
    tally = Tally()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {KEY}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        tally.operations += 1
        names = [p.name for p in operation.path_parameters]
        variants: list[dict[str, Any]] = [{}]
        if names:
            variants.append({name: id_for(operation.path, name, ids) for name in names})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in variants:
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=fixed or None
                )

                _examine(strategy, operation.label, base_url, session, headers, tally)
    return tally


def _examine(
    strategy: Any,
    label: str,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    tally: Tally,
) -> None:
    """Run ``EXAMPLES`` cases of ``strategy`` and tally what the checks find."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        tally.cases += 1
        response = case.call(base_url=base_url, session=session, headers=headers)
        kind = f"{response.status_code // 100}xx"
        tally.statuses[kind] = tally.statuses.get(kind, 0) + 1
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except (AssertionError, FailureGroup) as exc:
            for failure in getattr(exc, "exceptions", [exc]):
                found = _finding(failure)
                if found in DEVIATIONS:
                    tally.deviations += 1
                else:
                    tally.failures.append((label, *found))

    check()


def _finding(failure: BaseException) -> tuple[str, str]:
    """``(schema location, what was found)`` of a schema violation, else ``(title, message)``."""
    message = str(getattr(failure, "message", "") or failure)
    where = re.search(r"Schema at (\S+):", message)
    if where is None:
        return str(getattr(failure, "title", type(failure).__name__)), message[:300]
    instance = getattr(failure, "instance", ...)
    found = "null" if instance is None else str(getattr(failure, "_raw_message", message))[:200]
    return where.group(1), found


def _report(name: str, tally: Tally) -> None:
    sys.stdout.write(  # the figures the report quotes (run with -s to see them)
        f"\nschemathesis {name}: {tally.operations} operations, {tally.cases} cases,"
        f" {len(tally.failures)} failures, {tally.deviations} listed deviations,"
        f" answers {dict(sorted(tally.statuses.items()))}\n"
    )


def test_openai_spec(running: RunningEmulator) -> None:
    schema = openapi.from_path(spec("openai-openapi.yaml")).include(
        path_regex=r"^/(files|uploads|batches)"
    )
    ids = _openai_objects(running)

    def id_for(path: str, name: str, ids: dict[str, str]) -> str:
        return ids[name]

    hypothesis.seed(0)
    tally = run_spec(schema, running.openai_base_url, ids, id_for=id_for)
    _report("openai", tally)
    assert tally.operations >= 13
    assert sorted(set(tally.failures)) == []
    assert "5xx" not in tally.statuses


def test_together_spec(running: RunningEmulator) -> None:
    schema = openapi.from_path(spec("together-openapi.yaml")).include(
        path_regex=r"^/(files|batches)"
    )
    ids = _together_objects(running)

    def id_for(path: str, name: str, ids: dict[str, str]) -> str:
        return ids["batch"] if path.startswith("/batches") else ids["id"]

    tally = run_spec(schema, running.together_base_url, ids, id_for=id_for)
    _report("together", tally)
    assert tally.operations >= 9
    assert sorted(set(tally.failures)) == []
    assert "5xx" not in tally.statuses
