"""The Redis counter store: one Lua script admits a call in one round trip (``lua/admit.lua``).

Every key of a site starts with ``cg:{site}:`` (:mod:`callgate.core.keys` spells them all) and every key a
script touches is passed in ``KEYS``, so the scripts are Cluster-safe in principle: the hash tag puts a
site's keys in one slot. The client is a single-node one, though: connecting through Sentinel or to a
Cluster is not supported yet (issue 11; docs/operations.md, section 9). Every counter has a TTL. redis
errors become :class:`~callgate.errors.StoreUnavailable` here, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from callgate.core import keys
from callgate.core.admission import Admission, BurstRule, Outcome, Refusal, held_lock
from callgate.errors import StoreUnavailable
from callgate.store.protocol import SETTLED_MEMORY, BurstCount, Settlement, SettleStatus

T = TypeVar("T")


def _lua(name: str) -> str:
    return resources.files("callgate.store").joinpath(f"lua/{name}").read_text(encoding="utf-8")


# Seconds a command may take before it is a failure: short, because a decision waits on it (serve
# passes its own, the same; the admin commands wait longer, ops.admin.REDIS_TIMEOUT).
DECISION_TIMEOUT = 0.5


class RedisStore:
    """A :class:`callgate.store.protocol.Store` on one Redis server (not through Sentinel, not on a
    Cluster: issue 11)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._admit = client.register_script(_lua("admit.lua"))
        self._settle = client.register_script(_lua("settle.lua"))
        self._burst = client.register_script(_lua("burst.lua"))

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = DECISION_TIMEOUT, max_connections: int = 50
    ) -> RedisStore:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        return cls(aioredis.Redis.from_pool(pool))  # the client owns and closes the pool

    @property
    def client(self) -> aioredis.Redis:
        return self._redis

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _run(self, a: Admission, peek: bool) -> Outcome:
        prefix = keys.site_prefix(a.site)
        names = [
            prefix + keys.reservation_key(a.call_id),
            prefix + keys.lock_key(a.extension),
            prefix + keys.PANIC,
            prefix + keys.COUNTRIES,
        ]
        args: list[Any] = [
            a.call_id, a.at_ms, a.rate, a.increment, a.max_seconds, a.hold,
            int(a.reserve), int(a.international), int(peek), a.deadline_ms,
            a.extension, a.number, a.channel, a.instance, a.origin.value, a.country,
            a.country_check.value,
        ]  # fmt: skip
        for check in a.checks:
            names.append(prefix + check.key)
            args += [check.kind.value, check.limit, check.window, check.member]
        reply = await self._call(lambda: self._admit(keys=names, args=args))
        lock, panic, refused, failed, admitted, allowed, cost, replayed, learned, *values = reply
        return Outcome(
            values=tuple(int(v) for v in values),
            lock=held_lock(str(lock or "")),
            panic=bool(int(panic)),
            admitted=bool(int(admitted)),
            allowed_seconds=int(allowed),
            reserved=int(cost),
            replayed=bool(int(replayed)),
            refused=Refusal(str(refused)) if refused else None,
            failed=None if int(failed) < 0 else int(failed),
            learned=bool(int(learned)),
        )

    async def admit(self, admission: Admission) -> Outcome:
        return await self._run(admission, peek=False)

    async def peek(self, admission: Admission) -> Outcome:
        return await self._run(admission, peek=True)

    async def settle(
        self, site: str, reservation_id: str, billsec: int | None, at_ms: int
    ) -> Settlement:
        prefix = keys.site_prefix(site)
        names = [
            prefix + keys.reservation_key(reservation_id),
            prefix + keys.settled_key(reservation_id),
            prefix + keys.COUNTRIES,
        ]
        given = "" if billsec is None else billsec  # '': cannot be settled, charged in full
        args = [given, SETTLED_MEMORY, at_ms, reservation_id, keys.COUNTRIES_TTL]
        reply = await self._call(lambda: self._settle(keys=names, args=args))
        status, charged, released, seconds = reply
        return Settlement(SettleStatus(str(status)), int(charged), int(released), int(seconds))

    async def set_lock(self, site: str, extension: str, scope: str | None) -> None:
        prefix = keys.site_prefix(site)
        key = prefix + keys.lock_key(extension)
        # unlocking also forgets the bursts that led to the lock, or the next refusal would relock
        bursts = [prefix + keys.burst_key(extension, burst) for burst in keys.BURSTS]
        await self._call(
            lambda: self._redis.set(key, scope) if scope else self._redis.delete(key, *bursts)
        )

    async def set_panic(self, site: str, on: bool) -> None:
        key = keys.site_prefix(site) + keys.PANIC
        await self._call(lambda: self._redis.set(key, "1") if on else self._redis.delete(key))

    async def count_burst(
        self, site: str, extension: str, call_id: str, at_ms: int, rule: BurstRule
    ) -> BurstCount:
        prefix = keys.site_prefix(site)
        names = [prefix + keys.burst_key(extension, rule.name), prefix + keys.lock_key(extension)]
        args: list[Any] = [
            call_id,
            at_ms,
            rule.within,
            rule.threshold,
            rule.scope.value,
            int(rule.report),
        ]
        count, locked, lock = await self._call(lambda: self._burst(keys=names, args=args))
        return BurstCount(int(count), bool(int(locked)), held_lock(str(lock)))

    async def locks(self, site: str) -> dict[str, str]:
        prefix = keys.site_prefix(site) + keys.lock_key("")

        async def scan() -> dict[str, str]:
            found = [key async for key in self._redis.scan_iter(match=prefix + "*", count=500)]
            values = await self._redis.mget(found) if found else []
            return {k[len(prefix) :]: str(v) for k, v in zip(found, values, strict=True) if v}

        return await self._call(scan)

    async def countries(self, site: str) -> dict[str, int]:
        """The countries the site has learned (rule new_country): ISO code -> unix time of the last
        answered call to it."""
        key = keys.site_prefix(site) + keys.COUNTRIES
        found = await self._call(lambda: self._redis.hgetall(key))
        return {decoded(k): int(decoded(v)) for k, v in found.items()}

    async def set_countries(self, site: str, codes: Sequence[str], at: int | None) -> None:
        """Teach the site ``codes`` as if a call to each had just been answered at ``at`` (unix
        seconds), or forget them (``at`` None). Same key and lifetime as settle.lua."""
        key = keys.site_prefix(site) + keys.COUNTRIES

        async def write() -> None:
            if at is None:
                await self._redis.hdel(key, *codes)
                return
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=dict.fromkeys(codes, at))
                pipe.expire(key, keys.COUNTRIES_TTL)
                await pipe.execute()

        await self._call(write)

    async def panic(self, site: str) -> bool:
        key = keys.site_prefix(site) + keys.PANIC
        return bool(await self._call(lambda: self._redis.exists(key)))

    async def aclose(self) -> None:
        await self._redis.aclose()


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(url)
    try:
        yield store
    finally:
        await store.aclose()


def decoded(value: Any) -> str:
    """A Redis reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)
