"""msgspec against orjson on batchpump's own JSON paths: is orjson worth a dependency?

Three paths, each on the same generated lines, best of ``--repeat`` runs:

1. validating an input line: read ``custom_id``, ``method``, ``url`` and ``body.model``
   (msgspec: a typed ``Struct`` whose body stays ``msgspec.Raw``, then a peek at the model;
   orjson: ``loads`` the whole line into dicts);
2. decoding a provider result line (OpenAI output file: msgspec ``Struct`` with ``Raw`` bodies;
   orjson: ``loads``);
3. encoding a final result line (msgspec ``encode_into`` a reused buffer with the body passed
   through as ``Raw``; orjson: ``dumps`` of the equivalent dict, the body re-encoded).

Usage: ``python benchmarks/bench_json.py [--lines N] [--quick]``. Prints lines per second for
each library and the ratio, and writes ``benchmarks/results/bench_json.json``. Skips orjson
(says so) when it is not installed: it is not a batchpump dependency.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchpump import Succeeded
from benchmarks._common import machine_info, machine_line, write_record
from benchmarks._datagen import generate_lines

try:
    import orjson

    HAVE_ORJSON = True
except ModuleNotFoundError:  # not a batchpump dependency; compared only where installed
    HAVE_ORJSON = False


class _Head(msgspec.Struct):
    custom_id: Any = None
    method: Any = None
    url: Any = None
    body: msgspec.Raw = msgspec.Raw(b"null")


class _Model(msgspec.Struct):
    model: Any = None


class _Response(msgspec.Struct):
    status_code: int
    request_id: str
    body: msgspec.Raw


class _OutputLine(msgspec.Struct):
    id: str
    custom_id: str
    response: _Response | None
    error: msgspec.Raw | None = None


def _best(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 lines (CI smoke run)")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.lines
    lines = [line.rstrip(b"\n") for line in generate_lines(count=n, seed=7)]
    outputs = [
        msgspec.json.encode(
            {
                "id": f"batch_req_{i}",
                "custom_id": f"req-{i}",
                "response": {
                    "status_code": 200,
                    "request_id": f"req_{i}",
                    "body": {
                        "id": f"chatcmpl-{i}",
                        "object": "chat.completion",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "hi"}}
                        ],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
                    },
                },
                "error": None,
            }
        )
        for i in range(n)
    ]
    head, model = msgspec.json.Decoder(_Head), msgspec.json.Decoder(_Model)
    out_dec, enc = msgspec.json.Decoder(_OutputLine), msgspec.json.Encoder()
    decoded = [out_dec.decode(o) for o in outputs]

    def ms_validate() -> None:
        for line in lines:
            h = head.decode(line)
            model.decode(h.body)

    def ms_results() -> None:
        for o in outputs:
            out_dec.decode(o)

    def ms_encode() -> None:
        buf = bytearray()
        for d in decoded:
            assert d.response is not None
            result = Succeeded(custom_id=d.custom_id, response=d.response.body, batch_id="b")
            enc.encode_into(result, buf, -1)
            buf.extend(b"\n")

    figures: dict[str, dict[str, float | None]] = {}
    contenders: dict[str, tuple[Callable[[], None], Callable[[], None] | None]] = {
        "validate input line": (ms_validate, None),
        "decode result line": (ms_results, None),
        "encode result line": (ms_encode, None),
    }
    if HAVE_ORJSON:
        loads, dumps = orjson.loads, orjson.dumps
        parsed = [loads(o) for o in outputs]

        def oj_validate() -> None:
            for line in lines:
                obj = loads(line)
                obj.get("custom_id"), obj.get("method"), obj.get("url")
                obj["body"].get("model")

        def oj_results() -> None:
            for o in outputs:
                loads(o)

        def oj_encode() -> None:
            buf = bytearray()
            for p in parsed:
                row = {
                    "status": "succeeded",
                    "custom_id": p["custom_id"],
                    "batch_id": "b",
                    "attempt": 1,
                    "response": p["response"]["body"],
                    "status_code": 200,
                    "usage": None,
                }
                buf += dumps(row)
                buf += b"\n"

        contenders = {
            "validate input line": (ms_validate, oj_validate),
            "decode result line": (ms_results, oj_results),
            "encode result line": (ms_encode, oj_encode),
        }
    for path, (ms, oj) in contenders.items():
        ms_rate = n / _best(ms, args.repeat)
        oj_rate = n / _best(oj, args.repeat) if oj is not None else None
        figures[path] = {
            "msgspec_lines_per_s": round(ms_rate),
            "orjson_lines_per_s": round(oj_rate) if oj_rate else None,
            "msgspec_over_orjson": round(ms_rate / oj_rate, 2) if oj_rate else None,
        }
    machine = machine_info(
        msgspec=msgspec.__version__, orjson=orjson.__version__ if HAVE_ORJSON else None
    )
    record = {"benchmark": "bench_json", "machine": machine, "lines": n, "figures": figures}
    where = write_record("bench_json", record)
    parts = []
    for path, f in figures.items():
        shown = f"orjson {f['orjson_lines_per_s']:,}/s, ratio {f['msgspec_over_orjson']}x"
        other = shown if f["orjson_lines_per_s"] else "orjson not installed"
        parts.append(f"{path}: msgspec {f['msgspec_lines_per_s']:,}/s | {other}")
    print(f"bench_json {n:,} lines [{machine_line(machine)}]: " + "; ".join(parts) + f" -> {where}")


if __name__ == "__main__":
    main()
