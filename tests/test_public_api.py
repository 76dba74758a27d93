"""The public surface is pinned: ``__all__`` is exactly what the package exposes."""

from __future__ import annotations

import batchpump


def test_all_is_the_public_namespace() -> None:
    public = {name for name in vars(batchpump) if not name.startswith(("_", "@"))}
    public -= {"annotations"}  # from __future__ import annotations
    public -= {"cli", "emulator", "providers"}  # modules imported by role, not re-exported
    assert set(batchpump.__all__) - {"__version__"} == public


def test_all_is_sorted_and_unique() -> None:
    names = [n for n in batchpump.__all__ if not n.startswith("__")]
    assert names == sorted(names)
    assert len(set(batchpump.__all__)) == len(batchpump.__all__)


def test_public_classes_say_batchpump_in_their_repr() -> None:
    assert batchpump.Pump.__module__ == "batchpump"
    assert repr(batchpump.RetryPolicy.no_wait(1)).startswith("RetryPolicy(")
    assert batchpump.RunOptions.__module__ == "batchpump._config"  # msgspec resolves it there
    assert batchpump.InputError.__module__ == "batchpump"


def test_version() -> None:
    assert batchpump.__version__.count(".") >= 2
