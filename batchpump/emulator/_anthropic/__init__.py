"""PKGDOC"""

from __future__ import annotations

from .routes import anthropic_state
from .store import AnthropicState

__all__ = ["AnthropicState", "anthropic_state"]
