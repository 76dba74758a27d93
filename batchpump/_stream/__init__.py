"""Streams: requests put one by one as they come, cut into batches, results out, exactly once."""

from __future__ import annotations

from .command import continue_command, pipe_stream
from .stream import Stream, StreamStatistics

__all__ = ["Stream", "StreamStatistics", "continue_command", "pipe_stream"]
