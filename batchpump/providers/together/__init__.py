"""The Together AI Batch API adapter."""

from __future__ import annotations

from ._adapter import DEFAULT_BASE_URL, Together

__all__ = ["DEFAULT_BASE_URL", "Together"]
