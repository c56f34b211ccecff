"""`callgate status --all`: every site of one Redis in one pass, riskiest first; on a redis-server and on
a 3-master Redis Cluster with the sites spread over every master."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio.cluster import RedisCluster

from callgate.cli import main
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.ops.policystore import PolicyStore
from callgate.ops.statusall import read_all
from callgate.ops.statustext import all_json, render_all
from callgate.store.redis import RedisStore
from tests.servers import Cluster

pytestmark = pytest.mark.redis

DEFAULT = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
BASE = load_policy(DEFAULT, "default").site.name
NOW = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Tuesday, office hours


def text_of(site: str) -> str:
    return DEFAULT.replace(f"name: {BASE}", f"name: {site}")


@pytest.fixture(params=["redis", "cluster"])
async def store(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[tuple[RedisStore, tuple[str, ...]]]:
    """A store, emptied, and four site names (on the cluster: three on different masters)."""
    if request.param == "redis":
        s = RedisStore.from_url(redis_url, timeout=5)
        names: tuple[str, ...] = ("calm", "spender", "panicky", "filemode")
    else:
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
        s = RedisStore(client)
        spread = cluster.sites("tenant")
        assert len({cluster.port_of(site) for site in spread}) == len(cluster.ports)
        names = (*spread, "filemode")
    await s.client.flushdb()
    yield s, names
    await s.aclose()


async def spend(store: RedisStore, site: str, calls: int) -> None:
    """``calls`` two-hour calls to London admitted, two per extension from 1001 on."""
    memo = Memo(load_policy(text_of(site), "p.yaml"))
    for n in range(calls):
        ext = f"10{n // 2 + 1:02d}"
        attempt = CallAttempt(f"{site}-{n}", ext, "011442079460123", leg=f"ch{n}")
        p = prepare(memo, attempt, NOW)
        assert p.admission is not None
        assert (await store.admit(p.admission)).admitted


async def test_every_site_in_one_pass_riskiest_first(
    store: tuple[RedisStore, tuple[str, ...]],
) -> None:
    """A site in panic first, then the one closest to a cap, then the quiet one; a site with state but
    no pushed policy is listed as such. The JSON says the same with exact money."""
    s, (calm, spender, panicky, filemode) = store
    for site in (calm, spender, panicky):
        await PolicyStore(s.client, site).push(text_of(site), "p.yaml", {}, by="t", at=NOW)
    await spend(s, spender, 6)
    await spend(s, calm, 1)
    await s.set_panic(panicky, True)
    await s.set_lock(filemode, "1001", "all")
    found = await read_all(s.client, NOW)
    assert [r.site for r in found.sites] == [panicky, spender, calm, filemode]
    spender_worst, calm_worst = found.sites[1].worst, found.sites[2].worst
    assert spender_worst is not None
    assert calm_worst is not None
    assert spender_worst.percent is not None
    assert calm_worst.percent is not None
    assert spender_worst.percent > calm_worst.percent > 0
    assert found.sites[3].status is None
    assert "no policy pushed" in found.sites[3].problem
    assert not found.truncated
    text = render_all(found)
    assert text.splitlines()[1].startswith(panicky)
    assert "ON" in text.splitlines()[1]
    data = json.loads(all_json(found))
    assert [row["site"] for row in data["sites"]] == [panicky, spender, calm, filemode]
    assert data["sites"][1]["closest_cap"]["percent"] == float(spender_worst.percent)
    assert data["sites"][3]["problem"].startswith("no policy pushed")


async def test_an_empty_redis_has_no_sites(store: tuple[RedisStore, tuple[str, ...]]) -> None:
    s, _ = store
    found = await read_all(s.client, NOW)
    assert (found.sites, found.keys) == ((), 0)


def test_the_command(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`callgate status --all` on a redis-server URL; --site or --policy with it is refused."""

    async def push() -> None:
        s = RedisStore.from_url(redis_url, timeout=5)
        await s.client.flushdb()
        await PolicyStore(s.client, "calm").push(text_of("calm"), "p.yaml", {}, by="t", at=NOW)
        await s.aclose()

    asyncio.run(push())
    assert main(["status", "--all", "--redis", redis_url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("calm")
    assert "1 sites" in out
    assert main(["status", "--all", "--redis", redis_url, "--site", "calm"]) == 2
    assert "--all reads every site" in capsys.readouterr().err


def test_push_to_many_sites_then_status_all(
    redis_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A provider pushes its sites' files in one command, each to the site its site.name names; a
    broken file, two files of one site, or --site with many files push nothing."""

    async def empty() -> None:
        s = RedisStore.from_url(redis_url, timeout=5)
        await s.client.flushdb()
        await s.aclose()

    asyncio.run(empty())
    paths = []
    for site in ("north", "south", "east"):
        path = tmp_path / f"{site}.yaml"
        path.write_text(text_of(site), encoding="utf-8")
        paths.append(str(path))
    broken = tmp_path / "broken.yaml"
    broken.write_text(text_of("west").replace("currency: USD", "currency: dollars"), "utf-8")
    same = tmp_path / "north-again.yaml"
    same.write_text(text_of("north"), encoding="utf-8")
    redis = ["--redis", redis_url]
    assert main(["policy", "push", *paths, str(broken), *redis]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err
    assert "currency" in err
    assert main(["policy", "push", *paths, str(same), *redis]) == 2
    assert "two files name the same site: north" in capsys.readouterr().err
    assert main(["policy", "push", *paths, "--site", "north", *redis]) == 2
    assert "--site names one site" in capsys.readouterr().err
    assert main(["status", "--all", *redis]) == 0
    assert "0 sites" in capsys.readouterr().out  # nothing was pushed by the refused commands
    assert main(["policy", "push", *paths, *redis]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == ["north", "south", "east"]
    assert all("version 1 active" in line for line in out.splitlines())
    assert main(["status", "--all", *redis]) == 0
    assert "3 sites" in capsys.readouterr().out
