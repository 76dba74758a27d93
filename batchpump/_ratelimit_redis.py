"""One rate limit and one 429 pause shared by every worker, on Redis.

Each ``EndpointGate`` paces its own process. When several workers (processes, machines) use one
provider key, their gates also take turns through a ``SharedGate``: one per (provider key,
endpoint class), kept in Redis, so the workers together stay under the limit each of them was
told, and a 429 seen by one pauses them all.

- **GCRA, one round trip per call.** A Lua script keeps the class's *theoretical arrival time*
  (TAT) and reserves the caller's turn: it is sent at ``max(now, TAT, paused_until)`` and TAT
  moves one interval (``1 / rate``) past it; the script answers how long to wait. Time is the
  Redis server's (``TIME``), so the workers' clocks need not agree. The pause is a key beside
  TAT: publishing one extends it (never shortens it), and every turn honours it.
- **Chosen by measurement** over the ``limits`` library's async Redis storage, with tasks
  wanting more than the limit: ``limits`` only answers yes or no, so a refused caller must ask
  again (more than one round trip per admitted call), and its moving window let a whole
  second's calls through in one burst (which a provider's sub-second window answers with
  429s); this script spaces the calls evenly with exactly one round trip each. Raw throughput
  of the two was alike (figures in ``docs/workers.md``).
- **A worker that knows no rate yet** (it just started, and its provider advertises nothing or
  has not answered yet) takes its turns at the interval the other workers last reserved at
  (kept beside TAT), instead of unpaced: a worker restarted after a crash joins the class's
  pace rather than bursting into the provider's 429s to learn it again.
- **Keys** are ``batchpump:{SCOPE:CLASS}:tat``, ``...:pause`` and ``...:interval`` (the braces
  keep them on one cluster slot), with SCOPE a hash of the provider, its base URL and its key:
  the key itself never reaches Redis. They expire once idle.
- **Redis unreachable**: the gate goes on with its local pacing alone (and says so once in the
  log, with the URL's password hidden) rather than stopping the run; the provider's 429s still
  pace it. Turns resume through Redis as soon as it answers.
- **Clock.** Rates and pauses are in ``Clock`` seconds like the gate's; Redis keeps real time,
  so they are converted with the clock's ``speed`` (1 for the system clock).

Needs the ``redis`` extra: ``pip install 'batchpump[redis]'``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, final

from ._errors import UsageError
from ._journal import redact_url

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

    from ._ratelimit import EndpointClass

__all__ = ["RedisLimiter", "SharedGate", "limit_scope"]

logger: Final = logging.getLogger("batchpump.ratelimit")

#: Seconds a class's keys outlive its last turn (a later turn starts afresh, as an idle one).
IDLE_EXPIRY: Final = 60.0

# KEYS: tat, pause, interval. ARGV: interval (us; 0 = the caller knows no rate: it takes the
# interval the others last used, if any, else only the pause applies), pause to publish (us from
# now, 0 = none), idle expiry (ms). Returns {wait_us, pause_remaining_us}.
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local publish = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if publish > 0 and now + publish > paused then
  paused = now + publish
  redis.call('SET', KEYS[2], string.format('%d', paused), 'PX', math.ceil(publish / 1000) + 1000)
end
local pause_left = math.max(0, paused - now)
if publish > 0 then
  return {pause_left, pause_left}
end
if interval > 0 then
  redis.call('SET', KEYS[3], string.format('%d', interval), 'PX', idle)
else
  interval = tonumber(redis.call('GET', KEYS[3]) or '0')
  if interval <= 0 then
    return {pause_left, pause_left}
  end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local send = math.max(now, tat, paused)
local ttl = math.ceil((send + interval - now) / 1000) + idle
redis.call('SET', KEYS[1], string.format('%d', send + interval), 'PX', ttl)
return {send - now, pause_left}
"""


class SharedGate(Protocol):
    """The part of an endpoint class's limit that every worker shares."""

    async def turn(self, rate: float | None) -> tuple[float, float]:
        """Reserve one call at ``rate`` calls per Clock second (``None``: this worker knows no
        rate; the rate the others last reserved at, if any, else only the pause); return
        ``(wait, paused)``: Clock seconds until the call may go, and how long the class is
        paused for everyone."""
        ...

    async def publish_pause(self, seconds: float) -> None:
        """Pause the class for every worker, ``seconds`` (Clock) from now; never shortens."""
        ...


def limit_scope(provider: str, base_url: str, secrets: Sequence[str]) -> str:
    """The scope workers sharing one provider key share: a hash, never the key itself."""
    h = hashlib.blake2b(digest_size=12)
    for part in (provider, base_url.rstrip("/"), *secrets):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


@final
class RedisLimiter:
    """The shared limits on one Redis server; ``gate`` makes one ``SharedGate`` per class.

    Open with ``await RedisLimiter.connect("redis://HOST:PORT/DB")``; close with ``aclose``.
    """

    def __init__(self, url: str, client: aioredis.Redis, script: AsyncScript) -> None:
        """Wrap a client; use ``RedisLimiter.connect`` instead."""
        self._shown = redact_url(url)
        self._client = client
        self._script = script
        self._unreachable = False
        self.turns = 0
        self.failures = 0

    @property
    def url(self) -> str:
        """The server's URL with its password hidden."""
        return self._shown

    @classmethod
    async def connect(cls, url: str) -> RedisLimiter:
        """Connect to ``url`` (``redis://``, ``rediss://`` or ``unix://``) and check it answers.

        Raises:
            UsageError: not a Redis URL, redis-py is not installed, or the server does not
                answer (a worker told to share a limit must not start without it).
        """
        shown = redact_url(url)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise UsageError(f"--limiter needs a redis:// URL, got {shown!r}")
        try:
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError
        except ImportError:
            raise UsageError(
                "a shared limiter needs redis-py: pip install 'batchpump[redis]'"
            ) from None
        client = aioredis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=10)
        try:
            await client.ping()
            script = client.register_script(_SCRIPT)
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise UsageError(
                f"the limiter at {shown} does not answer ({type(exc).__name__}); start Redis "
                "or drop --limiter (each worker then keeps its own limit)"
            ) from None
        return cls(url, client, script)

    def gate(self, scope: str, endpoint: EndpointClass, *, speed: float = 1.0) -> SharedGate:
        """The shared part of ``endpoint``'s gate for the provider key ``scope`` names.

        Args:
            scope: ``limit_scope(...)`` of the provider key.
            endpoint: the endpoint class.
            speed: the gate's Clock seconds per real second.
        """
        return _RedisGate(self, f"batchpump:{{{scope}:{endpoint}}}", speed)

    async def _run(self, prefix: str, interval_us: int, publish_us: int) -> tuple[int, int]:
        from redis.exceptions import RedisError

        self.turns += 1
        try:
            wait, paused = await self._script(
                keys=[f"{prefix}:tat", f"{prefix}:pause", f"{prefix}:interval"],
                args=[interval_us, publish_us, int(IDLE_EXPIRY * 1000)],
            )
        except (RedisError, OSError) as exc:
            self.failures += 1
            if not self._unreachable:
                self._unreachable = True
                logger.warning(
                    "shared limiter at %s unreachable (%s); pacing locally until it answers",
                    self._shown,
                    type(exc).__name__,
                )
            return 0, 0
        if self._unreachable:
            self._unreachable = False
            logger.warning("shared limiter at %s answers again", self._shown)
        return int(wait), int(paused)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisLimiter url={self._shown!r} turns={self.turns}>"


@final
class _RedisGate:
    """One endpoint class's shared TAT and pause."""

    def __init__(self, limiter: RedisLimiter, prefix: str, speed: float) -> None:
        self._limiter = limiter
        self._prefix = prefix
        self._speed = speed

    async def turn(self, rate: float | None) -> tuple[float, float]:
        interval = 0 if rate is None or rate <= 0 else max(1, round(1e6 / (rate * self._speed)))
        wait, paused = await self._limiter._run(self._prefix, interval, 0)
        return wait / 1e6 * self._speed, paused / 1e6 * self._speed

    async def publish_pause(self, seconds: float) -> None:
        publish = round(seconds / self._speed * 1e6)
        if publish > 0:
            await self._limiter._run(self._prefix, 0, publish)

    def __repr__(self) -> str:
        return f"<SharedGate {self._prefix} on {self._limiter.url}>"
