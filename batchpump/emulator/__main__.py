"""``python -m batchpump.emulator``: the same command as ``batchpump emulate``.

Prints ``batchpump emulator listening on http://HOST:PORT`` first (flushed), so another process
can start it with ``--port 0`` and parse the URL, then the lines to paste into a shell.
"""

from __future__ import annotations

from ._command import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
