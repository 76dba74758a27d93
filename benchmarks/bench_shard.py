"""Benchmark: batchpump's validation + sharding against a stdlib validator and a plain copy.

Usage: ``python benchmarks/bench_shard.py [--size-mb 1024] [--quick]``

Generates (once, cached in a temp dir) a realistic chat-completions JSONL of the given size,
then runs each candidate in a fresh subprocess over the same warm file and reads that child's
peak RSS from ``os.wait4`` (the largest of the child and its worker processes; the child also
reports its own ``VmHWM`` and its workers' largest, and the CPU seconds include the workers'):

- ``batchpump``: ``shard_file`` with the OpenAI defaults (50k lines / 200 MB per shard): at
  this size its lines are checked in worker processes (``batchpump._input.parallel``);
- ``batchpump_1core``: the same with the workers off (``parallel.MIN_BYTES`` raised): the
  in-process pass small inputs take;
- ``stdlib``: ``json.loads`` per line, a ``set`` of custom_ids, writing the same shard files;
- ``stdlib_fsync``: the same, each shard file fsynced (batchpump fsyncs its shards: a crash
  must not leave a shard the journal trusts with lost lines), the like-for-like baseline;
- ``copy``: ``shutil.copyfile`` of the input (the I/O floor);
- ``copy_fsync``: the copy fsynced: the disk's floor for writing the input durably once.

Prints one summary line and writes ``benchmarks/results/bench_shard.json``. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchpump._input import hash_file, parallel, shard_file
from batchpump._models import Capabilities
from benchmarks._common import machine_info, write_record
from benchmarks._datagen import DEFAULT_NON_ASCII_SHARE, cached_dataset

MB: Final = 1024 * 1024
NAME: Final = "bench_shard"
ENDPOINT: Final = "/v1/chat/completions"
CANDIDATES: Final = ("batchpump", "batchpump_1core", "stdlib", "stdlib_fsync", "copy", "copy_fsync")
_CAPS: Final = Capabilities()


def _stdlib(path: Path, out: Path, *, durable: bool = False) -> int:
    """The baseline a user would write: json.loads per line, a set of ids, shard files."""
    seen: set[str] = set()
    index = lines = size = 0
    shard = (out / f"{index:05d}.jsonl").open("wb")
    with path.open("rb") as src:
        for raw in src:
            obj = json.loads(raw)
            cid = obj["custom_id"]
            if not isinstance(obj, dict) or not isinstance(cid, str) or cid in seen:
                raise ValueError(f"bad line {raw[:80]!r}")
            if not isinstance(obj.get("body"), dict):
                raise ValueError("bad body")
            seen.add(cid)
            if lines >= _CAPS.max_lines or size + len(raw) > _CAPS.max_bytes:
                _close(shard, durable)
                index += 1
                lines = size = 0
                shard = (out / f"{index:05d}.jsonl").open("wb")
            shard.write(raw)
            lines += 1
            size += len(raw)
    _close(shard, durable)
    return index + 1


def _close(file: Any, durable: bool) -> None:
    if durable:
        file.flush()
        os.fsync(file.fileno())
    file.close()


def _own_hwm_mb() -> float:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return 0.0


def _worker(name: str, path: Path, out: Path) -> None:
    if name == "batchpump_1core":
        parallel.MIN_BYTES = 1 << 62
    start = time.perf_counter()
    if name.startswith("batchpump"):
        outcome = shard_file(
            path, out_dir=out, run_id="bench", endpoint=ENDPOINT, capabilities=_CAPS
        )
        shards = len(outcome.shards)
    elif name in ("stdlib", "stdlib_fsync"):
        shards = _stdlib(path, out, durable=name == "stdlib_fsync")
    else:
        shutil.copyfile(path, out / "copy.jsonl")
        if name == "copy_fsync":
            with (out / "copy.jsonl").open("rb") as copied:
                os.fsync(copied.fileno())
        shards = 1
    seconds = time.perf_counter() - start
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {"seconds": seconds, "shards": shards, "own_peak_rss_mb": _own_hwm_mb()}
    print(json.dumps({**report, "workers_peak_rss_mb": workers_mb}))


def _measure(name: str, path: Path) -> dict[str, float]:
    """Run one candidate in a fresh interpreter; its wall time and its own peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as out:
        argv = [sys.executable, __file__, "--worker", name, "--input", str(path), "--out", out]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f"{name} failed with exit code {child.returncode}")
    report = json.loads(output)
    size = path.stat().st_size
    return {
        "seconds": round(report["seconds"], 3),
        "mb_per_s": round(size / MB / report["seconds"], 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB; with its workers
        "own_peak_rss_mb": round(report["own_peak_rss_mb"], 1),
        "workers_peak_rss_mb": round(report["workers_peak_rss_mb"], 1),  # the largest one
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # with its workers
        "shards": report["shards"],
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="input size (default 1024)")
    parser.add_argument("--quick", action="store_true", help="a ~20 MB input")
    parser.add_argument("--non-ascii-share", type=float, default=DEFAULT_NON_ASCII_SHARE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.input, args.out)
        return
    size_mb = 20 if args.quick else args.size_mb
    path = cached_dataset(size_mb * MB, seed=args.seed, non_ascii_share=args.non_ascii_share)
    hash_file(path)  # warm the page cache so every candidate reads from memory
    with path.open("rb") as file:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(8 * MB), b""))
    figures = {name: _measure(name, path) for name in CANDIDATES}
    ours, base, copy = figures["batchpump"], figures["stdlib"], figures["copy"]
    single = figures["batchpump_1core"]
    durable, floor = figures["stdlib_fsync"], figures["copy_fsync"]
    record: dict[str, Any] = {
        "benchmark": NAME,
        "machine": machine_info(),
        "input": {
            "bytes": path.stat().st_size,
            "lines": lines,
            "mean_line_bytes": round(path.stat().st_size / max(lines, 1)),
            "non_ascii_share": args.non_ascii_share,
            "seed": args.seed,
        },
        "batchpump": ours,
        "baselines": {
            "batchpump_1core": single,
            "stdlib": base,
            "stdlib_fsync": durable,
            "copy": copy,
            "copy_fsync": floor,
        },
        "ratios": {
            "speed_vs_stdlib": round(ours["mb_per_s"] / base["mb_per_s"], 2),
            "speed_vs_1core": round(ours["mb_per_s"] / single["mb_per_s"], 2),
            "speed_vs_stdlib_fsync": round(ours["mb_per_s"] / durable["mb_per_s"], 2),
            "speed_vs_copy": round(ours["mb_per_s"] / copy["mb_per_s"], 3),
            "speed_vs_copy_fsync": round(ours["mb_per_s"] / floor["mb_per_s"], 3),
            "rss_vs_stdlib": round(ours["peak_rss_mb"] / base["peak_rss_mb"], 2),
        },
        "targets": {"mb_per_s": 400, "speed_vs_stdlib": 4, "peak_rss_mb": 150},
    }
    path = write_record(NAME, record)
    print(
        f"bench_shard {record['input']['bytes'] / MB:.0f} MB, {lines:,} lines: "
        f"batchpump {ours['mb_per_s']:.0f} MB/s, peak RSS {ours['peak_rss_mb']:.0f} MB "
        f"(own {ours['own_peak_rss_mb']:.0f} MB, each worker <= "
        f"{ours['workers_peak_rss_mb']:.0f} MB), CPU {ours['cpu_s']:.1f} s | "
        f"in-process {single['mb_per_s']:.0f} MB/s, {single['peak_rss_mb']:.0f} MB, "
        f"CPU {single['cpu_s']:.1f} s | "
        f"stdlib {base['mb_per_s']:.0f} MB/s, {base['peak_rss_mb']:.0f} MB | "
        f"stdlib+fsync {durable['mb_per_s']:.0f} MB/s | copy {copy['mb_per_s']:.0f} MB/s | "
        f"copy+fsync {floor['mb_per_s']:.0f} MB/s | "
        f"{record['ratios']['speed_vs_1core']}x in-process, "
        f"{record['ratios']['speed_vs_stdlib']}x stdlib, "
        f"{record['ratios']['speed_vs_stdlib_fsync']}x stdlib+fsync, "
        f"{record['ratios']['speed_vs_copy_fsync']:.2f}x copy+fsync "
        f"[load {ours['load_avg_1min']:.2f}] -> {path}"
    )


if __name__ == "__main__":
    main()
