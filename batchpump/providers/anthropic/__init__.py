"""The Anthropic Message Batches adapter."""

from __future__ import annotations

from ._adapter import CAPABILITIES, DEFAULT_BASE_URL, DEFAULT_VERSION, Anthropic

__all__ = ["CAPABILITIES", "DEFAULT_BASE_URL", "DEFAULT_VERSION", "Anthropic"]
