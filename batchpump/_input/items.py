"""Checking item lines (documents, annotation jobs) for providers that take items.

Some providers take items, not model requests: a line is ``{"custom_id": ..., ...fields}``.
The common checks (JSON object, ``custom_id``) are the same as for request lines; what an item
needs beyond that is the adapter's business, passed in as an :data:`ItemCheck`. Lines are
copied byte for byte and grouped into shards by ``group_field`` when the adapter names one,
through the same "one model per shard" machinery request lines use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, final

import msgspec
from msgspec import UNSET

from .block import BlockChecker
from .check import Checked, Problem, RequestLineChecker

__all__ = ["ItemCheck", "ItemLineChecker"]

#: An adapter's item check: ``(message, hint)`` for a bad item line, ``None`` for a good one.
ItemCheck = Callable[[bytes], "tuple[str, str] | None"]

_ANY: Final = msgspec.json.Decoder(dict[str, Any])


@final
class ItemLineChecker:
    """Checks item lines (a ``LineChecker``); the group field's value is a line's group.

    Args:
        base: the run's ``RequestLineChecker`` (its limits and JSON diagnostics).
        check_item: the adapter's check of one item, or ``None`` to accept any object.
        group_field: the field whose value splits shards (``None``: no grouping).
        max_line_bytes: the longest line accepted.
    """

    __slots__ = ("_base", "_check_item", "_group_field", "_id_max", "_max_line_bytes")

    def __init__(
        self,
        base: RequestLineChecker,
        check_item: ItemCheck | None,
        *,
        group_field: str | None,
        max_line_bytes: int,
        custom_id_max_len: int | None,
    ) -> None:
        self._base = base
        self._check_item = check_item
        self._group_field = group_field
        self._max_line_bytes = max_line_bytes
        self._id_max = custom_id_max_len or 1 << 30

    @classmethod
    def for_items(
        cls,
        check_item: ItemCheck | None,
        *,
        group_field: str | None,
        endpoint: str,
        max_line_bytes: int,
        custom_id_max_len: int | None,
    ) -> ItemLineChecker:
        """The checker an item provider's ``line_checker`` returns: its ``check_item`` and
        ``group_field`` over a standard ``RequestLineChecker`` with the same limits."""
        base = RequestLineChecker(
            endpoint=endpoint, max_line_bytes=max_line_bytes, custom_id_max_len=custom_id_max_len
        )
        return cls(
            base,
            check_item,
            group_field=group_field,
            max_line_bytes=max_line_bytes,
            custom_id_max_len=custom_id_max_len,
        )

    def oversized(self, size: int) -> Problem:
        """The problem of a line of ``size`` bytes above the line limit."""
        return self._base.oversized(size)

    def block_checker(self) -> BlockChecker | None:
        """``None``: item lines are not request lines; each goes through :meth:`check`."""
        return None

    def check(self, line: bytes, first: bool = False) -> Checked | Problem:
        """Check one item line; return ``(custom_id, group, size, line)`` or a problem."""
        if len(line) > self._max_line_bytes:
            return self.oversized(len(line))
        try:
            item = _ANY.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._base.check(line, first)  # not a JSON object: its diagnostics
        cid = item.get("custom_id", UNSET)
        if type(cid) is not str or not cid or len(cid) > self._id_max:
            problem = self._base.check(line, first)  # the custom_id diagnostics
            if isinstance(problem, Problem):
                return problem
            return Problem(f"custom_id {cid!r} is not valid", "use a non-empty string id")
        if self._check_item is not None:
            bad = self._check_item(line)
            if bad is not None:
                return Problem(bad[0], bad[1], cid)
        group = item.get(self._group_field) if self._group_field else None
        if group is not None and type(group) is not str:
            return Problem(
                f"{self._group_field} must be a string, got {type(group).__name__}",
                f'write "{self._group_field}" as a string',
                cid,
            )
        return (cid, group, len(line), line)
