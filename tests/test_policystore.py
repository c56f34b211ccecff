"""Policy versions in a real Redis (a server, and each master of a Redis Cluster): push, history,
rollback, and a running holder that follows them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from callgate.errors import PolicyError
from callgate.ops.livepolicy import FilePolicy, RedisPolicy
from callgate.ops.policystore import VERSIONS, PolicyStore, diff, read_for_push
from callgate.store.redis import RedisStore
from tests.conftest import DEPLOYMENTS, OpenStore
from tests.servers import eventually

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DEFAULT = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
SITE = "acme-nyc"  # the default policy's site


@pytest.fixture(params=DEPLOYMENTS)
async def redis_store(
    request: pytest.FixtureRequest, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> RedisStore:
    """On a server, and on each master of a cluster: there ``SITE`` is a name whose hash tag lands on
    that master, and ``DEFAULT`` the default policy named for it."""
    store, site = await open_store(request.param, SITE)
    monkeypatch.setitem(globals(), "DEFAULT", DEFAULT.replace(f"name: {SITE}", f"name: {site}"))
    monkeypatch.setitem(globals(), "SITE", site)
    return store


@pytest.fixture
async def versions(redis_store: RedisStore) -> PolicyStore:
    return PolicyStore(redis_store.client, SITE)


def edited(old: str, new: str) -> str:
    assert old in DEFAULT
    return DEFAULT.replace(old, new)


async def test_push_versions_and_rollback(versions: PolicyStore) -> None:
    """Each different text is a new active version; the same text again is not; rollback reactivates."""
    first = await versions.push(DEFAULT, "p.yaml", {}, by="alice", at=AT)
    again = await versions.push(DEFAULT, "p.yaml", {}, by="bob", at=AT)
    second = await versions.push(
        edited("calls_per_minute: 4", "calls_per_minute: 6"), "p.yaml", {}, by="bob", at=AT
    )
    assert (first.created, again.created, second.created) == (True, False, True)
    assert (first.stored.version, again.stored.version, second.stored.version) == (1, 1, 2)
    assert await versions.active_version() == 2
    back = await versions.rollback(1, by="carol", at=AT)
    assert back.digest == first.stored.digest
    assert await versions.active_version() == 1
    log = await versions.activations()
    assert [(a.action, a.version, a.by) for a in log] == [
        ("rollback", 1, "carol"),
        ("push", 2, "bob"),
        ("push", 1, "alice"),
    ]
    stored = await versions.get(2)
    assert stored is not None
    assert stored.load().revision == 2
    text = diff(first.stored, stored)
    assert "-      calls_per_minute: 4" in text
    assert "+      calls_per_minute: 6" in text


async def test_broken_or_foreign_policy_is_never_stored(versions: PolicyStore) -> None:
    """A policy that fails validation, or names another site, leaves the store untouched."""
    with pytest.raises(PolicyError, match=r"p\.yaml:"):
        await versions.push(DEFAULT + "\nbogus: 1\n", "p.yaml", {}, by="a", at=AT)
    with pytest.raises(PolicyError, match=r"site\.name"):
        await versions.push(edited(f"name: {SITE}", "name: other"), "p.yaml", {}, by="a", at=AT)
    assert await versions.active_version() is None
    assert await versions.versions() == []
    with pytest.raises(KeyError):
        await versions.rollback(7, by="a", at=AT)


async def test_push_carries_range_lists(versions: PolicyStore, tmp_path: Path) -> None:
    """The lists a policy names travel with it: the stored version loads with no file around."""
    (tmp_path / "ranges.txt").write_text("# source: test\n+88213\n", encoding="utf-8")
    policy_text = edited(
        'deny_prefixes: ["+1900", "+1976"]', 'deny_prefixes: ["+1900", {file: ranges.txt}]'
    )
    (tmp_path / "p.yaml").write_text(policy_text, encoding="utf-8")
    text, _, lists = read_for_push(tmp_path / "p.yaml")
    assert set(lists) == {"ranges.txt"}
    await versions.push(text, "p.yaml", lists, by="a", at=AT)
    (tmp_path / "ranges.txt").unlink()
    stored = await versions.get()
    assert stored is not None
    assert [x.name for x in stored.load().lists] == ["ranges.txt"]


async def test_redis_policy_follows_the_active_version(versions: PolicyStore) -> None:
    """A running holder switches to a pushed version at its next check, and ignores a broken one."""
    await versions.push(DEFAULT, "p.yaml", {}, by="a", at=AT)
    holder = await RedisPolicy.start(versions)
    assert holder().revision == 1
    seen: list[int] = []
    holder.listeners.append(lambda new: seen.append(new.revision))
    await versions.push(
        edited("calls_per_minute: 4", "calls_per_minute: 9"), "p.yaml", {}, by="a", at=AT
    )
    stop = asyncio.Event()
    task = asyncio.create_task(holder.watch(stop))
    await eventually(lambda: holder().revision == 2, "version 2 in force")
    stop.set()
    await task
    assert holder().revision == 2
    assert seen == [2]
    profile = holder().profiles["office"]
    assert profile.limits.calls_per_minute == 9


async def test_redis_policy_starts_from_fallback_file(
    versions: PolicyStore, tmp_path: Path
) -> None:
    """With nothing pushed yet, the fallback file runs until a version appears."""
    path = tmp_path / "p.yaml"
    path.write_text(DEFAULT, encoding="utf-8")
    holder = await RedisPolicy.start(versions, str(path))
    assert holder().revision == 0
    assert holder().site.name == SITE
    await versions.push(DEFAULT, "p.yaml", {}, by="a", at=AT)
    await holder.check()
    assert holder().revision == 1


def test_file_policy_keeps_last_good(tmp_path: Path) -> None:
    """A broken edit is refused (and reported); the last good policy keeps running."""
    path = tmp_path / "p.yaml"
    path.write_text(DEFAULT, encoding="utf-8")
    holder = FilePolicy(str(path))
    good = holder().digest
    refused: list[str] = []
    holder.refusals.append(lambda what, why: refused.append(why))
    path.write_text(DEFAULT + "\nbogus: 1\n", encoding="utf-8")
    holder.reload()
    assert holder().digest == good
    assert "bogus" in refused[0]
    path.write_text(edited("calls_per_minute: 4", "calls_per_minute: 5"), encoding="utf-8")
    holder.reload()
    assert holder().digest != good


async def test_an_active_version_this_callgate_cannot_load_falls_back_to_an_older_one(
    versions: PolicyStore,
) -> None:
    """A version stored by a newer callgate that this one cannot read: the newest older one runs."""
    await versions.push(DEFAULT, "p.yaml", {}, by="a", at=AT)
    await versions.push(
        edited("calls_per_minute: 4", "calls_per_minute: 7"), "p.yaml", {}, by="a", at=AT
    )
    raw = await versions.client.hget(versions.key[VERSIONS], "2")
    assert raw is not None
    broken = str(raw).replace("calls_per_minute: 7", "calls_per_minute: 7\\n      future_key: 1")
    await versions.client.hset(versions.key[VERSIONS], "2", broken)
    holder = await RedisPolicy.start(versions)
    assert holder().revision == 1
    refused: list[str] = []
    holder.refusals.append(lambda what, why: refused.append(what))
    await holder.check()
    await holder.check()
    assert (holder().revision, refused) == (1, ["version 2"])
