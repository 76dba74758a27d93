"""The OpenAI Batch API adapter (also OpenAI-compatible base URLs)."""

from __future__ import annotations

from ._adapter import DEFAULT_BASE_URL, OpenAI

__all__ = ["DEFAULT_BASE_URL", "OpenAI"]
