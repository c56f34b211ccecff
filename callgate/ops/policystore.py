"""Versioned policies in Redis: what ``policy push / show / history / diff / rollback`` change, and what
every running ``callgate serve`` of the site follows.

The keys are the site's ``policy:<part>`` keys, one per part of :data:`callgate.core.keys.POLICY_PARTS`
(its ``LAYOUT``, which docs/design.md shows): :data:`SEQ` the last version number handed out (INCR),
:data:`VERSIONS` a hash of version -> :class:`StoredPolicy` JSON, :data:`ACTIVE` the active version,
:data:`LOG` a stream of :class:`Activation` (about ``LOG_MAXLEN`` kept). Like every key they carry the
site's hash tag; they have no TTL, on purpose: a policy must outlive any idle period, and there are few
of them. The keys of a site share its hash tag, so the two scripts (four keys each) run on a Redis
Cluster as they do on one server.

A push validates the text first (with the very loader ``policy check`` uses) and never stores a policy
that does not load; it carries the text of every range list the policy names, so a gate on another
machine loads exactly the same policy. Pushing the text of the active version again changes nothing.
Storing and activating a version is one Lua script, so two admins pushing at once get two versions and
one of them active, never a half-written one.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from callgate.core.keys import POLICY_PARTS, policy_key, site_prefix
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy, read_policy_text
from callgate.core.prefixlists import ListFiles
from callgate.errors import PolicyError, Problem, StoreUnavailable
from callgate.store.connect import Client
from callgate.store.redis import REDIS_ERRORS, decoded

LOG_MAXLEN = 10_000
# The policy keys' parts, in the order the scripts below take them: KEYS[1], ..., KEYS[4].
SEQ, VERSIONS, ACTIVE, LOG = POLICY_PARTS

_PUSH = """
local active = redis.call('GET', KEYS[3])
if active then
  local held = redis.call('HGET', KEYS[2], active)
  if held and cjson.decode(held)['digest'] == ARGV[2] then return {0, tonumber(active)} end
end
local version = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], version, ARGV[1])
redis.call('SET', KEYS[3], version)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
  'action', 'push', 'version', version, 'by', ARGV[3], 'at', ARGV[4])
return {1, version}
"""

_ROLLBACK = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*',
  'action', 'rollback', 'version', ARGV[1], 'by', ARGV[2], 'at', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """One pushed version: the policy's text and the texts of its range lists, with who and when."""

    version: int
    digest: str
    pushed_by: str
    pushed_at: str  # ISO 8601 with offset
    source: str  # the file it was pushed from
    text: str
    lists: dict[str, str] = field(default_factory=dict)

    def load(self) -> Policy:
        """The policy object; raises PolicyError only if a newer callgate reads the text differently."""
        where = f"{self.source} (v{self.version})"
        policy = load_policy(self.text, where, read_list=self.lists)
        return replace(policy, revision=self.version)

    def to_json(self) -> str:
        data = {
            "digest": self.digest,
            "pushed_by": self.pushed_by,
            "pushed_at": self.pushed_at,
            "source": self.source,
            "text": self.text,
            "lists": self.lists,
        }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, version: int, raw: str | bytes) -> StoredPolicy:
        data = json.loads(raw)
        return cls(
            version,
            str(data["digest"]),
            str(data["pushed_by"]),
            str(data["pushed_at"]),
            str(data["source"]),
            str(data["text"]),
            {str(k): str(v) for k, v in dict(data.get("lists") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Activation:
    version: int
    action: str  # push | rollback
    by: str
    at: str


@dataclass(frozen=True, slots=True)
class PushResult:
    stored: StoredPolicy
    created: bool  # False: the text was already the active version


def read_for_push(path: str | Path) -> tuple[str, Policy, dict[str, str]]:
    """Read and validate a policy file with its range lists: (text, policy, list texts by name)."""
    path = Path(path)
    text = read_policy_text(path)  # at most MAX_BYTES + 1 bytes are read
    files = ListFiles(path.parent)
    lists: dict[str, str] = {}

    def recording(name: str) -> str:
        lists[name] = files(name)
        return lists[name]

    policy = load_policy(text, str(path), read_list=recording)
    return text, policy, lists


class PolicyStore:
    """The versions of one site's policy in Redis."""

    def __init__(self, client: Client, site: str) -> None:
        self.client = client
        self.site = site
        prefix = site_prefix(site)
        self.key = {part: prefix + policy_key(part) for part in POLICY_PARTS}
        self.script_keys = list(self.key.values())  # KEYS[1..4], in POLICY_PARTS order
        self._push = client.register_script(_PUSH)
        self._rollback = client.register_script(_ROLLBACK)

    async def push(
        self, text: str, source: str, lists: dict[str, str], *, by: str, at: datetime
    ) -> PushResult:
        """Validate and store ``text`` as a new active version (or find it already active)."""
        policy = load_policy(text, source, read_list=lists)  # raises PolicyError: nothing stored
        if policy.site.name != self.site:
            raise PolicyError(
                [Problem(source, 0, "site.name", f"is {policy.site.name!r}, not {self.site!r}")]
            )
        stored = StoredPolicy(0, policy.digest, by, at.isoformat(), source, text, dict(lists))
        created, version = await self._call(
            self._push(
                keys=self.script_keys,
                args=[stored.to_json(), policy.digest, by, at.isoformat(), LOG_MAXLEN],
            )
        )
        if not created:
            found = await self.get(int(version))
            assert found is not None
            return PushResult(found, False)
        return PushResult(replace(stored, version=int(version)), True)

    async def active_version(self) -> int | None:
        raw = await self._call(self.client.get(self.key[ACTIVE]))
        return int(raw) if raw is not None else None

    async def get(self, version: int | None = None) -> StoredPolicy | None:
        """A stored version; the active one when ``version`` is None."""
        if version is None:
            version = await self.active_version()
            if version is None:
                return None
        raw = await self._call(self.client.hget(self.key[VERSIONS], str(version)))
        if raw is None:
            return None
        return await asyncio.to_thread(StoredPolicy.from_json, version, raw)  # megabytes of lists

    async def versions(self) -> list[StoredPolicy]:
        """Every stored version, oldest first."""
        raw = await self._call(self.client.hgetall(self.key[VERSIONS]))

        def decoded() -> list[StoredPolicy]:
            return [StoredPolicy.from_json(int(k), v) for k, v in raw.items()]

        return sorted(await asyncio.to_thread(decoded), key=lambda s: s.version)

    async def activations(self, count: int = 100) -> list[Activation]:
        """The latest activations, newest first."""
        entries = await self._call(self.client.xrevrange(self.key[LOG], count=count))
        out = []
        for _id, fields in entries:
            f = {decoded(k): decoded(v) for k, v in fields.items()}
            out.append(Activation(int(f["version"]), f["action"], f["by"], f["at"]))
        return out

    async def rollback(self, version: int, *, by: str, at: datetime) -> StoredPolicy:
        """Make an earlier version active again; it is validated first, as a push is."""
        stored = await self.get(version)
        if stored is None:
            raise KeyError(version)
        stored.load()  # raises PolicyError: this callgate cannot run it, so it is not activated
        done = await self._call(
            self._rollback(keys=self.script_keys, args=[version, by, at.isoformat(), LOG_MAXLEN])
        )
        if not done:
            raise KeyError(version)
        return stored

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc


def diff(a: StoredPolicy, b: StoredPolicy) -> str:
    """A unified diff of two versions' texts and of their range lists."""
    out = list(
        difflib.unified_diff(
            a.text.splitlines(keepends=True),
            b.text.splitlines(keepends=True),
            f"v{a.version} ({a.source})",
            f"v{b.version} ({b.source})",
        )
    )
    for name in sorted(set(a.lists) | set(b.lists)):
        out += difflib.unified_diff(
            a.lists.get(name, "").splitlines(keepends=True),
            b.lists.get(name, "").splitlines(keepends=True),
            f"v{a.version} list {name}",
            f"v{b.version} list {name}",
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)
