"""The Redis client of a ``[redis] url``: one server, the primary that Sentinel names, or a Cluster.

The URL forms, stated here once (:func:`callgate.settings.redis_url_problem` checks a URL by
:func:`parse_nodes`; docs/operations.md, section 9, explains them)::

    redis://[[user]:password@]host[:port][/db]      one server; rediss:// with TLS; unix:///path?db=N
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
        [?sentinel_username=NAME&sentinel_password=PASSWORD]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]

In the Sentinel form the hosts are the sentinels (port 26379 unless given), ``service`` is the name
their ``sentinel monitor`` line gives the primary, and the user and password before ``@`` are the
primary's and the replicas' (``requirepass``, or an ACL user); the sentinels' own password, when they
have one (``requirepass`` in sentinel.conf), is the ``sentinel_password`` option. The client asks the
sentinels for the primary whenever it opens a connection, so after a failover it follows the new
primary by itself: the commands in flight on the old one fail (``StoreUnavailable``), the next ones
reach the new one. In the Cluster form the hosts are some of the Cluster's nodes (port 6379 unless
given); the client learns the rest from them.

``wait_replicas`` (``[redis] wait_replicas``) makes every Lua script call (admission, settlement, burst
count) return only once that many replicas acknowledged its writes, so a failover cannot lose a
reservation or a lock whose answer a gate acted on. A script call and its ``WAIT`` go down one
connection in one round trip, since ``WAIT`` counts the writes of its own connection; when the
replicas do not acknowledge in time the call fails as the store being down does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT, KeyT, ScriptTextT

Client = aioredis.Redis | RedisCluster  # what client_from_url builds

SENTINEL_PORT: Final = 26379
CLUSTER_PORT: Final = 6379
SENTINEL_OPTIONS: Final = ("sentinel_username", "sentinel_password")
SENTINEL_FORM: Final = (
    "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
    "[?sentinel_password=...]"
)
CLUSTER_FORM: Final = "redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]"


class Kind(enum.StrEnum):
    SENTINEL = "redis+sentinel"
    CLUSTER = "redis+cluster"


FORMS: Final = {Kind.SENTINEL: SENTINEL_FORM, Kind.CLUSTER: CLUSTER_FORM}
DEFAULT_PORT: Final = {Kind.SENTINEL: SENTINEL_PORT, Kind.CLUSTER: CLUSTER_PORT}


class BadUrl(ValueError):
    """What is wrong with a ``redis+sentinel://`` or ``redis+cluster://`` URL, in words that never
    quote it (a password may be anywhere in a mistyped URL); ``form`` is the form it should have."""

    def __init__(self, form: str, reason: str) -> None:
        super().__init__(f"expected {form}; {reason}")


@dataclass(frozen=True, slots=True)
class Nodes:
    """A ``redis+sentinel://`` or ``redis+cluster://`` URL, read. Its repr shows no password."""

    kind: Kind
    hosts: tuple[tuple[str, int], ...]  # the sentinels, or the Cluster nodes to start from
    service: str = ""  # Sentinel: the primary's name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def multi_host(url: str) -> bool:
    """Whether ``url`` is of a form :func:`parse_nodes` reads (by its scheme alone)."""
    return url.partition("://")[0].lower() in set(Kind)


def _host(item: str, form: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[IPv6]:port``."""
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise BadUrl(form, "an [IPv6] host is not closed by ']' before its port")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = item.partition(":")
        port = port_text if colon else None
    if not host:
        raise BadUrl(form, "a host is missing (an empty item in the list of hosts)")
    if any(c.isspace() or c in "[]@/?#" for c in host):
        raise BadUrl(form, "a host holds a character a host name cannot have")
    if port is None:
        return host, default_port
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise BadUrl(form, "a port is not a number from 1 to 65535")
    return host, int(port)


def parse_nodes(url: str) -> Nodes:
    """Read a ``redis+sentinel://`` or ``redis+cluster://`` URL; :class:`BadUrl` says what is wrong.
    A ``/``, ``?``, ``#`` or ``,`` in the user or the password must be percent-encoded (``%2F``), as
    redis-py wants it in a ``redis://`` URL; an ``@`` need not be."""
    scheme, slashes, rest = url.partition("://")
    if not slashes or scheme.lower() not in set(Kind):
        raise BadUrl(f"{SENTINEL_FORM} or {CLUSTER_FORM}", "the scheme is not one of these")
    kind = Kind(scheme.lower())
    form = FORMS[kind]
    rest, hash_, _ = rest.partition("#")
    if hash_:
        raise BadUrl(form, "a fragment (#...) means nothing here; write a '#' in a password as %23")
    rest, _, query = rest.partition("?")
    userinfo, _, rest = rest.rpartition("@")
    authority, _, path = rest.partition("/")
    if not authority:
        raise BadUrl(form, "no host is given")
    hosts = tuple(_host(item, form, DEFAULT_PORT[kind]) for item in authority.split(","))
    user, _, password = userinfo.partition(":")
    options = _options(query, kind, form)
    segments = path.removesuffix("/").split("/") if path.removesuffix("/") else []
    if kind is Kind.CLUSTER:
        if segments not in ([], ["0"]):
            raise BadUrl(
                form, "a Cluster has only database 0: nothing may follow the hosts but '/'"
            )
        return Nodes(
            kind, hosts, username=unquote(user) or None, password=unquote(password) or None
        )
    if not segments or not segments[0]:
        raise BadUrl(form, "the service name (the primary's name in sentinel.conf) is missing")
    if len(segments) > 2:
        raise BadUrl(form, "only /service or /service/db may follow the hosts")
    db = segments[1] if len(segments) == 2 else "0"
    if not (db.isascii() and db.isdigit()):
        raise BadUrl(form, "the database after the service name must be a number")
    return Nodes(
        kind,
        hosts,
        service=unquote(segments[0]),
        db=int(db),
        username=unquote(user) or None,
        password=unquote(password) or None,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def _options(query: str, kind: Kind, form: str) -> dict[str, str]:
    if not query:
        return {}
    if kind is Kind.CLUSTER:
        raise BadUrl(form, "a redis+cluster:// URL takes no options (nothing after '?')")
    found: dict[str, str] = {}
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if not eq or key not in SENTINEL_OPTIONS:
            raise BadUrl(
                form, f"the only options are {' and '.join(SENTINEL_OPTIONS)} (name=value)"
            )
        if key in found:
            raise BadUrl(form, "an option is given twice")
        found[key] = unquote(value)
    return {k: v for k, v in found.items() if v}


def client_from_url(
    url: str, *, timeout: float, max_connections: int, wait_replicas: int = 0
) -> Client:
    """A client for ``url``, with ``decode_responses``, every connect and reply bounded by ``timeout``
    seconds, and at most ``max_connections`` connections (to each Cluster node): a command waits up to
    ``timeout`` for a free one. ``wait_replicas``: see the module's docstring (not with a Cluster).
    :class:`BadUrl` (a ValueError) for a URL of a multi-host form that cannot be read; a plain one
    that redis-py cannot read raises its own ValueError."""
    bounds: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if wait_replicas < 0:
        raise ValueError("wait_replicas cannot be negative")
    redis_class = WaitingRedis if wait_replicas else aioredis.Redis
    if not multi_host(url):
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, decode_responses=True, **bounds
        )
        client = redis_class.from_pool(pool)  # the client owns and closes the pool
        return _waiting(client, wait_replicas, timeout)
    nodes = parse_nodes(url)
    if nodes.kind is Kind.CLUSTER:
        if wait_replicas:
            raise ValueError("[redis] wait_replicas is not supported with redis+cluster:// URLs")
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes.hosts],
            decode_responses=True,
            max_connections=max_connections,
            username=nodes.username,
            password=nodes.password,
            **bounds,
        )
    own = {"username": nodes.sentinel_username, "password": nodes.sentinel_password}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(nodes.hosts),
        sentinel_kwargs={**bounds, **{k: v for k, v in own.items() if v}},
        db=nodes.db,
        username=nodes.username,
        password=nodes.password,
        decode_responses=True,
        **bounds,
    )
    client = sentinel.master_for(
        nodes.service,
        redis_class=redis_class,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=timeout,
    )
    return _waiting(client, wait_replicas, timeout)


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool, which looks the primary up for every new connection, made blocking like the
    single-server one (a burst of calls waits for a connection rather than failing at once); closing
    it also closes the connections to the sentinels."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class NotReplicated(RedisError):
    """A script's writes were made on the primary but fewer replicas than ``[redis] wait_replicas``
    acknowledged them in time (translated to ``StoreUnavailable`` with the other redis errors)."""


def wait_ms(timeout: float) -> int:
    """How long a WAIT waits: half the command timeout, so that a replica that does not answer is
    reported as such before the connection's own timeout cuts the reply off."""
    return max(1, round(timeout * 500))


def _waiting(client: aioredis.Redis, replicas: int, timeout: float) -> aioredis.Redis:
    if isinstance(client, WaitingRedis):
        client.replicas, client.wait_ms = replicas, wait_ms(timeout)
    return client


class WaitingRedis(aioredis.Redis):
    """A client whose Lua scripts wait for ``replicas`` replicas (``[redis] wait_replicas``)."""

    replicas = 1
    wait_ms = 250

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]
        return WaitingScript(self, script)


class WaitingScript(AsyncScript):
    """A script called as ``EVALSHA ...; WAIT replicas ms``, pipelined on one connection."""

    def __init__(self, owner: WaitingRedis, script: ScriptTextT) -> None:
        super().__init__(owner, script)
        self.owner = owner

    async def __call__(
        self,
        keys: Any = None,
        args: Any = None,
        client: Any = None,
    ) -> Any:
        owner = self.owner
        names: list[KeyT] = list(keys or [])
        values: list[EncodableT] = list(args or [])
        reply, acked = await self._once(owner, names, values)
        if isinstance(reply, NoScriptError):  # a new server, after a restart or a failover
            self.sha = await owner.script_load(self.script)
            reply, acked = await self._once(owner, names, values)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < owner.replicas:
            raise NotReplicated(
                f"written on the primary but acknowledged by {acked} of {owner.replicas} "
                f"replicas within {owner.wait_ms} ms ([redis] wait_replicas)"
            )
        return reply

    async def _once(
        self, owner: WaitingRedis, keys: list[KeyT], args: list[EncodableT]
    ) -> list[Any]:
        async with owner.pipeline(transaction=False) as pipe:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", owner.replicas, owner.wait_ms)
            return await pipe.execute(raise_on_error=False)
