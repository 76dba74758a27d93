"""Pure retry maths: backoff, Retry-After parsing and the retryability predicate (no I/O)."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from batchpump._config import RetryPolicy
from batchpump._retry import (
    NO_RETRY,
    RETRY,
    RetryVerdict,
    backoff,
    error_fields,
    parse_duration,
    parse_retry_after,
    retry_verdict,
)

NOW = 1_700_000_000.0


class _Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_grows_exponentially_then_caps() -> None:
    policy = RetryPolicy(wait_initial=0.5, wait_max=8.0, wait_jitter=0.0, wait_exp_base=2.0)
    waits = [backoff(n, policy, _Fixed(0.5)) for n in range(7)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_jitter_reduces_by_at_most_the_fraction() -> None:
    policy = RetryPolicy(wait_initial=1.0, wait_max=10.0, wait_jitter=0.25)
    assert backoff(0, policy, _Fixed(0.0)) == 1.0
    assert backoff(0, policy, _Fixed(1.0)) == 0.75
    rng = random.Random(7)
    assert all(0.75 <= backoff(0, policy, rng) <= 1.0 for _ in range(200))


def test_backoff_huge_attempt_number_saturates() -> None:
    policy = RetryPolicy(wait_jitter=0.0, wait_max=30.0)
    assert backoff(10_000, policy, _Fixed(0.0)) == 30.0


def test_no_wait_policy_never_waits() -> None:
    assert backoff(5, RetryPolicy.no_wait(), random.Random(1)) == 0.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("250us", 0.00025),
        ("", None),
        ("soon", None),
        ("5 s", None),
        ("1x", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        ({"retry-after-ms": "1500"}, 429, 1.5),
        ({"Retry-After-Ms": "20.5", "retry-after": "9"}, 429, 0.0205),
        ({"retry-after": "3"}, 429, 3.0),
        ({"Retry-After": "2.25"}, 503, 2.25),
        ({"retry-after": "600"}, 429, 600.0),
        ({"retry-after-ms": "junk", "retry-after": "4"}, 429, 4.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 429, 360.0),
        ({"x-ratelimit-reset-tokens": "12ms"}, 429, 0.012),
        ({"x-ratelimit-reset-requests": "1s"}, 503, None),
        ({"retry-after": "nonsense"}, 429, None),
        ({}, 429, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], status: int, expected: float | None) -> None:
    result = parse_retry_after(headers, NOW, status=status)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_parse_retry_after_http_date_far_ahead() -> None:
    headers = {"Retry-After": formatdate(NOW + 900, usegmt=True)}
    assert parse_retry_after(headers, NOW) == pytest.approx(900.0)


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    headers = {"retry-after": formatdate(NOW - 60, usegmt=True)}
    assert parse_retry_after(headers, NOW) == 0.0


QUOTA = b'{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}}'
RATE = (
    b'{"error": {"message": "Rate limit reached", "type": "requests",'
    b' "code": "rate_limit_exceeded"}}'
)


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (None, None, b"", RETRY),
        (200, {}, b"", NO_RETRY),
        (400, {}, b"", NO_RETRY),
        (401, {}, b"", NO_RETRY),
        (403, {}, b"", NO_RETRY),
        (404, {}, b"", NO_RETRY),
        (422, {}, b"", NO_RETRY),
        (400, {"x-should-retry": "true"}, b"", NO_RETRY),
        (408, {}, b"", RETRY),
        (409, {}, b"", RETRY),
        (429, {}, RATE, RETRY),
        (429, {"retry-after": "7"}, RATE, RetryVerdict(True, 7.0)),
        (429, {}, QUOTA, NO_RETRY),
        (500, {}, b"", RETRY),
        (502, {}, b"<html>bad gateway</html>", RETRY),
        (503, {"retry-after-ms": "250"}, b"", RetryVerdict(True, 0.25)),
        (503, {"X-Should-Retry": "false"}, b"", NO_RETRY),
        (429, {"x-should-retry": "false"}, RATE, NO_RETRY),
        (418, {}, b"", NO_RETRY),
        (418, {"x-should-retry": "true"}, b"", RETRY),
    ],
)
def test_retry_verdict_table(
    status: int | None, headers: dict[str, str] | None, body: bytes, expected: RetryVerdict
) -> None:
    assert retry_verdict(status, headers, body, now=NOW) == expected


def test_error_fields() -> None:
    assert error_fields(RATE) == ("rate_limit_exceeded", "Rate limit reached")
    assert error_fields(QUOTA) == ("insufficient_quota", "You exceeded your current quota")
    assert error_fields(b"<html></html>") == (None, None)
    assert error_fields(b'{"error": "plain"}') == (None, "plain")
