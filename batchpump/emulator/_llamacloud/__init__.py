"""PKGDOC"""

from __future__ import annotations

from .routes import llamacloud_state
from .store import LlamaCloudConfig, LlamaCloudState

__all__ = ["LlamaCloudConfig", "LlamaCloudState", "llamacloud_state"]
