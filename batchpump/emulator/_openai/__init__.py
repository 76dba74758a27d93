"""PKGDOC"""

from __future__ import annotations

from .batch import LINE_FATAL, LINE_OK, BatchRecord, InputLine
from .bodies import response_body
from .store import _draw_codes
from .wire import BatchErrorObject

__all__ = [
    "LINE_FATAL",
    "LINE_OK",
    "BatchErrorObject",
    "BatchRecord",
    "InputLine",
    "_draw_codes",
    "response_body",
]
