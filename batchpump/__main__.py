"""``python -m batchpump``: the same as the ``batchpump`` command."""

from __future__ import annotations

from .cli import entry

entry()
