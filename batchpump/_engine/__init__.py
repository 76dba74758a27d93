"""The engine: drives one run's shard attempts from ready files to final results.

``Engine`` (``engine``) runs the stages of one run in a task group: submitters turn shard
attempts into provider batches exactly once each (``submit``), the poller refreshes in-flight
batches with list sweeps (``poll``), collectors join each finished batch's results by
``custom_id`` and decide every line: a final result or the next attempt (``collect``), and the
``ResultSink`` appends final results to the results file and commits its length in the journal
(``results``). What the stages share is a ``RunContext`` (``runstate``). The engine sees the
outside only through protocols (``Provider``, ``Journal``, ``Clock``): it imports no adapter,
no aiohttp and no sqlite3.
"""

from __future__ import annotations

from .collect import Collector
from .engine import Engine
from .poll import Poller, deadline_cap
from .results import PartWriter, ResultSink
from .runstate import RunContext, RunStatistics, TokenBudget
from .submit import RECONCILE_SLACK

__all__ = [
    "RECONCILE_SLACK",
    "Collector",
    "Engine",
    "PartWriter",
    "Poller",
    "ResultSink",
    "RunContext",
    "RunStatistics",
    "TokenBudget",
    "deadline_cap",
]
