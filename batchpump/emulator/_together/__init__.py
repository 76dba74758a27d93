"""The emulated Together Batch API: files (direct and signed-URL uploads) and batch jobs."""

from __future__ import annotations

from .store import TogetherState

__all__ = ["TogetherState"]
