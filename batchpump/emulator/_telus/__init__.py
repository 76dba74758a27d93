"""The emulated TELUS GT Studio batch API: projects, batches, jobs and their signed results."""

from __future__ import annotations

from .store import TelusSettings, TelusState
from .wire import CreateBatchBody

__all__ = ["CreateBatchBody", "TelusSettings", "TelusState"]
