"""Shared fixtures. Every test runs offline: loopback only, port 0, hard timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The steering repo's shared/ folder (specs, provider notes), or skip."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a user's clone has no ../shared; CI always has it)")
    return SHARED
