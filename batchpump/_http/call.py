"""What one HTTP call is: ``Call``, sent once per try; where a redirect sends it; when a try
that failed is tried again.

A ``Call`` describes everything ``Transport.exchange`` needs to send it again on each try: its
body factory, endpoint class, headers, and whether it may be retried, streamed or redirected.
Redirects of calls carrying the client's headers are followed by ``exchange``, not by aiohttp:
``redirect_hop`` keeps the headers for the same origin only and picks the method and body by
status (301/302/303 become a bodiless ``GET``; 307/308 repeat the call). ``retry_wait`` applies
the ``RetryPolicy`` to a failed try: a call that is not idempotent is retried only when the
failure proves nothing happened.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import yarl

from .._clock import Clock
from .._config import RetryPolicy
from .._errors import ProviderError, TransportError
from .._ratelimit import EndpointClass
from .bodies import Response
from .retry import NO_RETRY, RetryVerdict, backoff

__all__ = ["MAX_REDIRECTS", "Call", "is_redirect", "redirect_hop", "retry_wait"]

#: Redirects followed for one call before giving up.
MAX_REDIRECTS: Final = 5


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One logical call, sent once per try.

    ``data`` builds the body afresh for each try (``None``: no body); ``size`` only feeds the
    statistics. ``label`` names the call in logs (never a query string: it may be a signature).
    ``authorized=False`` sends none of the client's own headers (a storage PUT). With
    ``redirects=False`` a 3xx answer is returned as it is. ``secrets`` are redacted from this
    call's errors on top of the client's.
    """

    method: str
    url: str | yarl.URL
    label: str
    cls: EndpointClass
    data: Callable[[], Any] | None = None
    size: int = 0
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    authorized: bool = True
    idempotent: bool = True
    passthrough: Collection[int] = ()
    stream: bool = False
    bulk: bool = False
    redirects: bool = True
    expect_json: bool = True
    secrets: Sequence[str] = ()


def is_redirect(response: Response) -> bool:
    """Whether ``response`` is a 3xx answer naming where to go."""
    return 300 <= response.status < 400 and "location" in response.headers


def redirect_hop(call: Call, url: yarl.URL, response: Response) -> Call:
    """The call that ``response``, a redirect answering ``call`` sent to ``url``, asks for.

    The client's headers and the call's own go along only to the same origin.
    """
    target = url.join(yarl.URL(response.headers["location"]))
    same_origin = target.origin() == yarl.URL(str(call.url)).origin()
    return dataclasses.replace(
        call,
        method="GET" if response.status in (301, 302, 303) else call.method,
        url=target,
        params=None,
        authorized=same_origin,
        headers=call.headers if same_origin else None,
        data=call.data if response.status in (307, 308) else None,
    )


def retry_wait(
    failure: ProviderError | TransportError,
    verdict: RetryVerdict,
    *,
    tries: int,
    deadline: float | None,
    safe: bool,
    policy: RetryPolicy,
    rng: random.Random,
    clock: Clock,
) -> float:
    """Seconds to wait before the next try, or raise ``failure`` if there is none.

    Args:
        failure: what the last try raised.
        verdict: ``retry_verdict``'s answer for it.
        tries: tries made so far (>= 1).
        deadline: the ``clock.monotonic()`` instant all tries must end by, if any.
        safe: the call is idempotent, or the failure proves nothing was done.
        policy: the call's ``RetryPolicy``.
        rng: jitter source of the backoff.
        clock: what ``deadline`` is measured on.
    """
    if not safe:
        verdict = NO_RETRY
    if not verdict.retry or tries >= policy.attempts:
        raise failure
    wait = verdict.after if verdict.after is not None else backoff(tries - 1, policy, rng)
    if deadline is not None and clock.monotonic() + wait > deadline:
        raise failure
    return wait
