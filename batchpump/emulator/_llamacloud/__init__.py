"""The emulated LlamaCloud API: directories and uploads, v2 batches and parse/extract jobs."""

from __future__ import annotations

from .http import llamacloud_state
from .store import LlamaCloudConfig, LlamaCloudState

__all__ = ["LlamaCloudConfig", "LlamaCloudState", "llamacloud_state"]
