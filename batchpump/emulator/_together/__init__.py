"""PKGDOC"""

from __future__ import annotations

from .store import TogetherState

__all__ = ["TogetherState"]
