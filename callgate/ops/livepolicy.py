"""The running policy of ``callgate serve``, and how it changes while calls go on.

A holder is called on every decision (``holder()`` returns the current :class:`Policy`), so a new policy
applies from the next call on; a call already decided keeps the decision it got. A policy that does not
load is never activated: the last good one keeps running and the reason is logged (and alerted).

* :class:`FilePolicy`: one file on this box. Its modification time and size are checked every second and
  SIGHUP re-reads it at once.
* :class:`RedisPolicy`: the version made active with ``callgate policy push`` / ``rollback``. The active
  version number is read every ``POLL`` seconds (one GET), so every gate of the site switches within a
  second, and a gate that lost Redis for a while catches up by itself when it is back.

Under ``serve`` a new policy is read and checked in a worker thread (``asyncio.to_thread``), never on the
event loop: a policy of a few megabytes, or one with a million ranges, takes a second or two to load, and
calls go on being decided by the running policy meanwhile. One reload runs at a time per holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from callgate.core.memo import Memo
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy_file
from callgate.errors import BackendUnavailable, PolicyError, Problem
from callgate.ops.policystore import PolicyStore

log = logging.getLogger("callgate.policy")

POLL = 0.5  # seconds between checks of the active version (Redis) or the file's stat (file)

Listener = Callable[[Policy], None]  # (the new policy)
# What a holder makes of each policy it loads before it runs it (a tenant's: callgate.tenants.vet):
# the policy to run, or PolicyError to refuse it and keep the running one.
Vet = Callable[[Policy], Policy]
Refused = Callable[[str, str], None]  # (what was refused, why)


class _Holder:
    def __init__(self, current: Policy) -> None:
        self._memo = Memo(current)
        self.listeners: list[Listener] = []
        self.refusals: list[Refused] = []

    def __call__(self) -> Policy:
        return self.current

    @property
    def current(self) -> Policy:
        return self._memo.policy

    def memo(self) -> Memo:
        """The running policy with what the engine worked out for it (the gate decides with this)."""
        return self._memo

    def _activate(self, policy: Policy) -> None:
        self._memo = Memo(policy)  # a new policy starts with an empty memo
        log.info(
            "policy active: %s sha256:%s%s",
            policy.source,
            policy.digest[:12],
            f" version {policy.revision}" if policy.revision else "",
        )
        for listener in self.listeners:
            listener(policy)

    def _refuse(self, what: str, why: str) -> None:
        log.error("policy %s refused; keeping sha256:%s\n%s", what, self.current.digest[:12], why)
        for refused in self.refusals:
            refused(what, why)


class FilePolicy(_Holder):
    """A policy file, watched; ``reload`` is also what SIGHUP calls."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = self._stat()
        super().__init__(load_policy_file(path))
        self._reloading = asyncio.Lock()
        self._pending: asyncio.Task[None] | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        """Re-read the file now (SIGHUP). On the event loop the reading is scheduled in a worker thread
        (:meth:`refresh`) and this returns at once; elsewhere (a script, a test) it is done here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._seen = self._stat()
            self._take(self._read())
            return
        self._pending = loop.create_task(self.refresh())

    async def refresh(self) -> None:
        """Read and check the file in a worker thread; activate it if it loads and differs."""
        async with self._reloading:
            self._seen = self._stat()
            self._take(await asyncio.to_thread(self._read))

    def _read(self) -> Policy | PolicyError | OSError:
        """The file's policy, or why it cannot run (returned: it is reported, never raised)."""
        try:
            return load_policy_file(self.path)
        except (PolicyError, OSError) as exc:
            return exc

    def _take(self, found: Policy | PolicyError | OSError) -> None:
        if isinstance(found, Exception):
            self._refuse(self.path, str(found))
        elif found.digest != self.current.digest:
            self._activate(found)

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL * 2)
            if self._stat() != self._seen:
                await self.refresh()


class RedisPolicy(_Holder):
    """The site's active version in Redis."""

    def __init__(self, store: PolicyStore, current: Policy, vet: Vet | None = None) -> None:
        super().__init__(current)
        self.store = store
        self.vet = vet
        self.refused_version = 0  # a version that did not load: not retried until another appears
        self._pending: asyncio.Task[None] | None = None
        self._checking = asyncio.Lock()

    @classmethod
    async def start(
        cls, store: PolicyStore, fallback: str = "", *, wait: float = 30.0
    ) -> RedisPolicy:
        """The active version; while Redis is unreachable or empty, the ``fallback`` file if given,
        else wait (up to ``wait`` seconds) for a version to be pushed."""
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                found = await cls._loadable(store)
                if found is not None:
                    return cls(store, found)
                problem = f"no loadable policy pushed for site {store.site!r}"
            except BackendUnavailable as exc:
                problem = str(exc)
            if fallback:
                log.warning("%s; running %s until Redis has one", problem, fallback)
                return cls(store, await asyncio.to_thread(load_policy_file, fallback))
            if asyncio.get_running_loop().time() > deadline:
                raise PolicyError([Problem(f"redis site {store.site}", 0, "", problem)])
            log.warning("%s; waiting", problem)
            await asyncio.sleep(1.0)

    @classmethod
    async def find(cls, store: PolicyStore, vet: Vet | None = None) -> RedisPolicy | None:
        """The site's active version if one was pushed and loads (and ``vet`` takes it), else None (a
        tenant not served yet: its calls are refused until it has one). One look; raises
        BackendUnavailable; PolicyError when ``vet`` refuses the active version."""
        found = await cls._loadable(store)
        if found is None:
            return None
        return cls(store, vet(found) if vet is not None else found, vet)

    @staticmethod
    async def _loadable(store: PolicyStore) -> Policy | None:
        """The active version; if this callgate cannot load it (say, after a downgrade), the newest
        older version it can, with the reason logged. None when nothing was pushed or nothing loads."""
        active = await store.active_version()
        if active is None:
            return None
        for stored in sorted(await store.versions(), key=lambda v: -v.version):
            if stored.version > active:
                continue
            try:
                return await asyncio.to_thread(stored.load)
            except PolicyError as exc:
                log.error(
                    "policy version %d does not load here; trying older\n%s", stored.version, exc
                )
        return None

    def check_soon(self) -> None:
        """SIGHUP: look at the active version now rather than at the next poll."""
        task = asyncio.get_running_loop().create_task(self._check_logged())
        self._pending = task

    async def _check_logged(self) -> None:
        try:
            await self.check()
        except BackendUnavailable as exc:
            log.warning("cannot read the active policy (%s); keeping the running one", exc)

    async def check(self) -> None:
        """Activate the active version if it is not the running one. Raises BackendUnavailable.

        The version is loaded in a worker thread; one check runs at a time (the poll and SIGHUP)."""
        async with self._checking:
            version = await self.store.active_version()
            if version is None or version in (self.current.revision, self.refused_version):
                return
            stored = await self.store.get(version)
            if stored is None:
                return
            try:
                policy = await asyncio.to_thread(stored.load)
                if self.vet is not None:
                    policy = self.vet(policy)
            except PolicyError as exc:
                self.refused_version = version
                self._refuse(f"version {version}", str(exc))
                return
            self._activate(policy)

    async def watch(self, stop: asyncio.Event) -> None:
        down = False
        while not stop.is_set():
            try:
                await self.check()
                if down:
                    log.info("policy store reachable again")
                down = False
            except BackendUnavailable as exc:
                if not down:
                    log.warning("cannot read the active policy (%s); keeping the running one", exc)
                down = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)
