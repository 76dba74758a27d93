"""The LlamaCloud v2 Batches adapter: parse_v2 / extract_v2 over one source directory per shard."""

from __future__ import annotations

from ._adapter import DEFAULT_BASE_URL, LlamaCloud

__all__ = ["DEFAULT_BASE_URL", "LlamaCloud"]
