"""The TELUS International GT Studio (formerly Playment) adapter: items become annotation jobs."""

from __future__ import annotations

from ._adapter import CAPABILITIES, DEFAULT_BASE_URL, TELUS_POLL, Telus, TelusStatistics

__all__ = ["CAPABILITIES", "DEFAULT_BASE_URL", "TELUS_POLL", "Telus", "TelusStatistics"]
