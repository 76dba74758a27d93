"""Scripted faults: an ordered list of rules served before any random fault rate applies.

A rule matches requests (``method``, ``path`` — exact, or a shell-style pattern such as
``/v1/batches/*`` — ``provider``, ``route`` name) and carries one action:

- ``respond``: answer with this status, headers and JSON body instead of the handler;
- ``delay``: answer normally, ``delay`` emulated seconds late;
- ``reset``: abort the connection before handling;
- ``truncate``: handle, then cut the answer's body short;
- ``late_create``: take the request, wait ``late_create`` seconds, then handle and answer
  (the batch exists from then on, even if the client gave up);
- ``outcome``: not a request action: lines with these ``custom_id``s in the next batch
  created (any file-based or Anthropic batch) fail with ``error`` (HTTP ``status``).

``times`` is how often the rule fires (default 1; ``null``: forever). Rules are tried in
order; the first that matches fires and uses one of its times; a spent rule is dropped.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, final

import msgspec

__all__ = ["LineOutcome", "Match", "Respond", "Rule", "Script", "load_rules"]


class Match(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which requests a rule applies to; an unset field matches anything."""

    method: str | None = None
    path: str | None = None
    provider: str | None = None
    route: str | None = None

    def matches(self, *, method: str, path: str, provider: str, route: str) -> bool:
        """Whether a request with these attributes matches."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.provider is not None and self.provider != provider:
            return False
        if self.route is not None and self.route != route:
            return False
        if self.path is None or self.path == path:
            return True
        return any(c in self.path for c in "*?[") and fnmatch.fnmatchcase(path, self.path)


class Respond(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A canned answer."""

    status: int
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: Any = None


class LineOutcome(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-line results: these ``custom_ids`` fail with ``error`` (the provider's error
    object, e.g. ``{"message": ..., "type": ..., "code": ...}``) and HTTP ``status``."""

    custom_ids: list[str]
    error: dict[str, Any] = msgspec.field(
        default_factory=lambda: {
            "message": "Scripted line failure.",
            "type": "invalid_request_error",
            "code": "scripted",
        }
    )
    status: int = 400


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One scripted rule: ``match`` plus exactly one action."""

    match: Match = msgspec.field(default_factory=Match)
    times: int | None = 1
    respond: Respond | None = None
    delay: float | None = None
    reset: bool = False
    truncate: bool = False
    late_create: float | None = None
    outcome: LineOutcome | None = None

    def __post_init__(self) -> None:
        actions = [
            self.respond is not None,
            self.delay is not None,
            self.reset,
            self.truncate,
            self.late_create is not None,
            self.outcome is not None,
        ]
        if sum(actions) != 1:
            raise ValueError(
                "a rule needs exactly one action: respond, delay, reset, truncate,"
                " late_create or outcome"
            )
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or null: forever)")
        for seconds in (self.delay, self.late_create):
            if seconds is not None and seconds < 0:
                raise ValueError("delay and late_create are seconds >= 0")


_rules_decoder = msgspec.json.Decoder(list[Rule])


def load_rules(data: bytes | str) -> list[Rule]:
    """Rules from JSON (a list of rule objects).

    Raises:
        ValueError: not a JSON list of valid rules.
    """
    try:
        return _rules_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"bad script: {exc}") from None


def _as_rule(rule: Rule | Mapping[str, Any]) -> Rule:
    if isinstance(rule, Rule):
        return rule
    try:
        return msgspec.convert(rule, Rule)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad rule: {exc}") from None


@final
class Script:
    """The live rule list of one emulator."""

    __slots__ = ("_left",)

    def __init__(self) -> None:
        #: ``[rule, times left (None: forever)]`` in order.
        self._left: list[list[Any]] = []

    def extend(self, rules: Iterable[Rule | Mapping[str, Any]]) -> None:
        """Append rules (``Rule`` objects or their JSON-like dicts).

        Raises:
            ValueError: a dict that is not a valid rule (nothing is appended then).
        """
        parsed = [_as_rule(r) for r in rules]
        self._left += [[rule, rule.times] for rule in parsed]

    def clear(self) -> None:
        """Drop every rule."""
        self._left.clear()

    def take(self, *, method: str, path: str, provider: str, route: str) -> Rule | None:
        """The first request rule that matches (using one of its times), or ``None``."""
        for entry in self._left:
            rule: Rule = entry[0]
            if rule.outcome is None and rule.match.matches(
                method=method, path=path, provider=provider, route=route
            ):
                self._use(entry)
                return rule
        return None

    def outcomes(self, custom_ids: Sequence[str], *, provider: str) -> dict[str, LineOutcome]:
        """Scripted failures for a new batch's lines, by ``custom_id`` (each rule used once)."""
        if not self._left:
            return {}
        present = set(custom_ids)
        found: dict[str, LineOutcome] = {}
        for entry in list(self._left):
            rule: Rule = entry[0]
            outcome = rule.outcome
            if outcome is None or rule.match.provider not in (None, provider):
                continue
            hit = [cid for cid in outcome.custom_ids if cid in present and cid not in found]
            if hit:
                found.update(dict.fromkeys(hit, outcome))
                self._use(entry)
        return found

    def _use(self, entry: list[Any]) -> None:
        if entry[1] is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self._left.remove(entry)

    def pending(self) -> list[dict[str, Any]]:
        """What is left: each rule as JSON-ready data with its remaining ``times``."""
        left = []
        for rule, times in self._left:
            data = msgspec.to_builtins(rule)
            data["times"] = times
            left.append(data)
        return left

    def __len__(self) -> int:
        return len(self._left)
