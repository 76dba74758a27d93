"""The emulated OpenAI Batch API (files, uploads, batches), also served on Azure's routes."""

from __future__ import annotations

from .batch import BatchRecord, InputLine, script_codes
from .bodies import response_body
from .store import OpenAIState
from .wire import BatchErrorObject

__all__ = [
    "BatchErrorObject",
    "BatchRecord",
    "InputLine",
    "OpenAIState",
    "response_body",
    "script_codes",
]
