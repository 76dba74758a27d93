"""PKGDOC"""

from __future__ import annotations

from .collect import Collector
from .engine import Engine
from .poll import Poller, deadline_cap
from .results import PartWriter, ResultSink, decode_results
from .runstate import RunContext, RunOptions, RunStatistics, TokenBudget
from .submit import RECONCILE_SLACK, Submitter

__all__ = [
    "RECONCILE_SLACK",
    "Collector",
    "Engine",
    "PartWriter",
    "Poller",
    "ResultSink",
    "RunContext",
    "RunOptions",
    "RunStatistics",
    "Submitter",
    "TokenBudget",
    "deadline_cap",
    "decode_results",
]
