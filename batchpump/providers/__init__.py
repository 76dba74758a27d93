"""Provider adapters, one module each (``batchpump.providers.openai``...)."""

from __future__ import annotations

from ._base import Provider

__all__ = ["Provider"]
