"""Shared fixtures. Every test runs offline: loopback only, port 0, hard timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The steering repo's shared/ folder (specs, provider notes), or skip."""
    if not SHARED.is_dir():
        pytest.skip(
            "the providers' API specs are not in this checkout "
            f"(they live in {SHARED}, beside the project in CI)"
        )
    return SHARED
