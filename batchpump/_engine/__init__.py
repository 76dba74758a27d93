"""The engine: drives one run's shard attempts from ready files to final results.

``Engine`` (``engine``) runs the stages of one run in a task group: submitters turn shard
attempts into provider batches exactly once each (``submit``), the poller refreshes in-flight
batches with list sweeps timed by their progress (``poll``, ``predict``), collectors join each
finished batch's results by ``custom_id`` and decide every line: a final result or the next
attempt (``collect``), and the ``ResultSink`` appends final results to the results file and
commits its length in the journal (``results``). What the stages share is a ``RunContext``
(``runstate``). The engine sees the outside only through protocols (``Provider``, ``Journal``,
``Clock``): it imports no adapter, no aiohttp and no sqlite3.

``rebuild`` remakes a results file that was deleted or cut short.
"""

from __future__ import annotations

from .collect import Collector
from .engine import AttemptClaims, Engine
from .poll import Poller, deadline_cap
from .predict import PREDICTION_MARGIN, Progress, RunHistory, plan
from .rebuild import RebuildReport, rebuild_results
from .reconcile import RECONCILE_SLACK, ProviderClock, Reconciler
from .results import PartWriter, ResultSink, decode_results, results_file_error
from .runstate import RunContext, RunStatistics, TokenBudget
from .submit import Submitter

__all__ = [
    "PREDICTION_MARGIN",
    "RECONCILE_SLACK",
    "AttemptClaims",
    "Collector",
    "Engine",
    "PartWriter",
    "Poller",
    "Progress",
    "ProviderClock",
    "RebuildReport",
    "Reconciler",
    "ResultSink",
    "RunContext",
    "RunHistory",
    "RunStatistics",
    "Submitter",
    "TokenBudget",
    "deadline_cap",
    "decode_results",
    "plan",
    "rebuild_results",
    "results_file_error",
]
