"""The emulated Anthropic Message Batches API: batches of inline requests and their results."""

from __future__ import annotations

from .routes import anthropic_state
from .store import AnthropicState

__all__ = ["AnthropicState", "anthropic_state"]
