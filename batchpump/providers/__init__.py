"""Provider adapters, one module each (``batchpump.providers.openai``...)."""

from __future__ import annotations

from .._provider import Provider

__all__ = ["Provider"]
