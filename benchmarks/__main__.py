"""``python -m benchmarks [--quick]``: run every ``benchmarks/bench_*.py``, one after the other.

Each runs in its own interpreter (as ``.ci/run`` does), so one benchmark's memory and event
loop never colour another's figures. Exits non-zero if any benchmark broke; slow figures never
fail it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI smoke sizes (< 60 s each)")
    parser.add_argument("only", nargs="*", help="names to run (default: all), e.g. bench_polling")
    args = parser.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only or s.name in args.only]
        if not scripts:
            parser.error(f"no benchmark named {' '.join(args.only)}")
    broken: list[str] = []
    for script in scripts:
        argv_child = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"== {script.name}{' --quick' if args.quick else ''}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(argv_child, cwd=HERE.parent)
        took = time.perf_counter() - start
        print(f"== {script.name}: exit {code} in {took:.1f} s", flush=True)
        if code:
            broken.append(script.name)
    if broken:
        print(f"broken: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
