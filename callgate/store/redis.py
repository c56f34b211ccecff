"""The Redis counter store: one Lua script admits a call in one round trip (``lua/admit.lua``).

Every key of a site starts with ``cg:{site}:`` (:mod:`callgate.core.keys` spells them all) and every key a
script touches is passed in ``KEYS``: the hash tag puts all of a site's keys in one slot, so on a Redis
Cluster every script, pipeline and multi-key command of a site runs on the one master that holds that slot.
The client is a single server's (:class:`redis.asyncio.Redis`) or a Cluster's
(:class:`redis.asyncio.cluster.RedisCluster`): :data:`Client`. The only reads that are not of named keys,
the ``SCAN`` of a site's locks and of ``status``, go through :func:`scan_site`, which on a Cluster asks
only that master. Every counter has a TTL. redis errors (:data:`REDIS_ERRORS`) become
:class:`~callgate.errors.StoreUnavailable` here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from callgate.core import keys
from callgate.core.admission import Admission, BurstRule, Outcome, Refusal, held_lock
from callgate.errors import StoreUnavailable
from callgate.store.connect import Client, client_from_url
from callgate.store.protocol import SETTLED_MEMORY, BurstCount, Settlement, SettleStatus

T = TypeVar("T")

# The clients callgate talks through: one Redis server, or a Redis Cluster.
# What a failing Redis raises: the Cluster client's own errors (no node reachable, a slot no master
# serves) are not RedisErrors.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)


def _lua(name: str) -> str:
    return resources.files("callgate.store").joinpath(f"lua/{name}").read_text(encoding="utf-8")


# Seconds a command may take before it is a failure: short, because a decision waits on it (serve
# passes its own, the same; the admin commands wait longer, ops.admin.REDIS_TIMEOUT).
DECISION_TIMEOUT = 0.5
# Connections per master a Cluster client keeps for the audit stream, the policy watch and the status
# read of /metrics, which share it with the store (RedisStore._in_flight).
CLUSTER_SPARE = 4


class RedisStore:
    """A :class:`callgate.store.protocol.Store` on one Redis server or on a Redis Cluster."""

    def __init__(self, client: Client) -> None:
        self._redis = client
        self._admit = client.register_script(_lua("admit.lua"))
        self._settle = client.register_script(_lua("settle.lua"))
        self._burst = client.register_script(_lua("burst.lua"))
        self._release = client.register_script(_lua("release.lua"))
        # A Cluster client fails a command at once (MaxConnectionsError) when its node's connections
        # are all busy, where one server's BlockingConnectionPool waits for one: on a Cluster the
        # store keeps its commands in flight under each node's max_connections (less CLUSTER_SPARE).
        self._in_flight: asyncio.Semaphore | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = DECISION_TIMEOUT,
        max_connections: int = 50,
        wait_replicas: int = 0,
    ) -> RedisStore:
        """A store on ``url``: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` (the
        current primary, followed through failovers) or ``redis+cluster://``
        (:func:`callgate.store.connect.client_from_url`); ``wait_replicas``: each script call waits
        for that many replicas to have its writes."""
        return cls(
            client_from_url(
                url,
                timeout=timeout,
                max_connections=max_connections,
                wait_replicas=wait_replicas,
            )
        )

    @property
    def client(self) -> Client:
        return self._redis

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            if not isinstance(self._redis, RedisCluster):
                return await op()
            async with self._in_flight or await self._cluster_in_flight(self._redis):
                return await op()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _cluster_in_flight(self, client: RedisCluster) -> asyncio.Semaphore:
        await client.initialize()  # the nodes (a no-op once the client knows them)
        if self._in_flight is None:
            per_node = min(node.max_connections for node in client.get_nodes())
            self._in_flight = asyncio.Semaphore(max(1, per_node - CLUSTER_SPARE))
        return self._in_flight

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
            a.country_check.value, keys.COUNTRIES_TTL,
        ]  # fmt: skip
        for check in a.checks:  # a provider's cap (check.site) shares the tenant's hash tag
            names.append((keys.site_prefix(check.site) if check.site else prefix) + check.key)
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

    async def release(self, site: str, reservation_id: str, channel: str, at_ms: int) -> bool:
        name = keys.site_prefix(site) + keys.reservation_key(reservation_id)
        args: list[str | int] = [at_ms, reservation_id, channel]
        return bool(await self._call(lambda: self._release(keys=[name], args=args)))

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
            found = [
                key
                async for batch in scan_site(self._redis, site, keys.lock_key("*"), 500)
                for key in batch
            ]
            values = await self._redis.mget(found) if found else []  # one slot: the site's
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


def glob(text: str) -> str:
    """``text`` as a SCAN ``MATCH`` pattern that matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def scan_site(client: Client, site: str, tail: str, count: int) -> AsyncIterator[list[str]]:
    """The keys of ``site`` whose part after its prefix matches the glob ``tail``, one ``SCAN`` step
    (``COUNT count``) at a time. On a Cluster only the master holding the site's slot is scanned:
    every key of the site is there (a plain ``scan_iter`` would walk every master's keys)."""
    prefix = keys.site_prefix(site)
    match = glob(prefix) + tail
    target: dict[str, Any] = {}  # on a Cluster: the master of the site's slot
    if isinstance(client, RedisCluster):
        await client.initialize()  # the slot table (a no-op once the client has it)
        target = {"target_nodes": client.get_node_from_key(prefix)}
    cursor: Any = 0
    while True:
        cursor, batch = await client.scan(cursor, match=match, count=count, **target)
        if target:  # a Cluster answers {node: cursor}
            (cursor,) = cursor.values()
        yield [decoded(key) for key in batch]
        if not int(cursor):
            return


async def scan_all(client: Client, match: str, count: int) -> AsyncIterator[list[str]]:
    """Every key matching the glob ``match``, one ``SCAN`` step (``COUNT count``) at a time; on a
    Cluster, every master's in turn (what ``callgate status --all`` reads, once for all sites)."""
    nodes: list[Any] = [None]
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = list(client.get_primaries())
    for node in nodes:
        target = {} if node is None else {"target_nodes": node}
        cursor: Any = 0
        while True:
            cursor, batch = await client.scan(cursor, match=match, count=count, **target)
            if node is not None:  # a Cluster answers {node: cursor}
                (cursor,) = cursor.values()
            yield [decoded(key) for key in batch]
            if not int(cursor):
                break


def decoded(value: Any) -> str:
    """A Redis reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)
