"""Stopping `callgate serve` never hangs on a dead or frozen backend: each step of a stop waits a bounded
time and logs what it leaves (docs/operations.md: reads no new calls, finishes the calls being decided,
settles what it gathered, writes the queued audit entries). First each step with in-memory stand-ins,
then SIGTERM to the real process on a real Asterisk with Redis killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from callgate.asterisk.ami import Message
from callgate.asterisk.ari import AriClient
from callgate.asterisk.gate import Gate
from callgate.asterisk.spend import SpendFeed
from callgate.asterisk.stasis import Router, read_start
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.errors import StoreUnavailable
from callgate.ops import alerts
from callgate.ops.alerts import Alert, Alerter, Email, SmtpSettings
from callgate.ops.audit import Audit
from callgate.store.memory import MemoryStore
from callgate.store.protocol import Settlement, SettleStatus
from tests.asterisk_rig import AsteriskInstance
from tests.e2e import EXTENSIONS, POLICY, Serving, Watch, cdr_of, reached, serving
from tests.fakes import FakeAudit, FakeChannels
from tests.servers import eventually

RIG_PATIENCE = 15  # seconds tests.e2e.Callgate.stop waits after SIGTERM before it sends SIGKILL
HANG = 20  # seconds after which a step that was to be bounded counts as hanging
RID = "1732000000.7:00c0ffee"


def said(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def cdr(rid: str = RID, seconds: str = "42") -> Message:
    headers = {"Event": "Cdr", "CallgateCall": rid, "Disposition": "ANSWERED"}
    return Message(headers | {"BillableSeconds": seconds}, {})


class Frozen:
    """A backend that never answers: each call waits until the test ends."""

    def __init__(self) -> None:
        self.calls = 0

    async def wait(self, *_: object, **__: object) -> Any:
        self.calls += 1
        await asyncio.Event().wait()


class FrozenAri(FakeChannels):
    """ARI that takes a request and never answers it."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = Frozen()

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
        return bool(await self.frozen.wait())


# -- each step, with stand-ins ---------------------------------------------------------------------


async def test_flush_gives_a_failing_settlement_one_last_try_and_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down: a settlement waiting to retry tries once more at the stop, and no more; its id is
    logged as charged in full when its reservation expires."""
    tries: list[str] = []

    async def down(rid: str, billsec: int | None) -> Settlement:
        tries.append(rid)
        raise StoreUnavailable("redis: connection refused")

    feed = SpendFeed(down, quiet=0.01)
    feed.on_event(cdr())
    await eventually(lambda: tries, "the first try")  # then it waits 1 s to retry
    assert await asyncio.wait_for(feed.flush(HANG), HANG) == [RID]
    assert tries == [RID, RID]
    [line] = said(caplog, "could not settle 1 call before stopping (redis: connection refused)")
    assert line.endswith(f": {RID}; each is charged in full when its reservation expires")


async def test_flush_cuts_short_a_store_that_never_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis frozen: the settlement under way is given up after ``within``, and named."""
    store = Frozen()
    feed = SpendFeed(store.wait, quiet=0.01)
    feed.on_event(cdr())
    await eventually(lambda: store.calls, "the first try")
    assert await asyncio.wait_for(feed.flush(0.05), HANG) == [RID]
    assert feed.tasks == set()
    assert said(caplog, "could not settle 1 call before stopping (no answer within 0.05s)")


async def test_flush_settles_what_it_can() -> None:
    """Redis up: what is gathered is settled at the stop, and nothing is reported."""
    settled: list[tuple[str, int | None]] = []

    async def up(rid: str, billsec: int | None) -> Settlement:
        settled.append((rid, billsec))
        return Settlement(SettleStatus.SETTLED, 0, 0, billsec or 0)

    feed = SpendFeed(up, quiet=60)
    feed.on_event(cdr(seconds="7"))
    assert await asyncio.wait_for(feed.flush(HANG), HANG) == []
    assert settled == [(RID, 7)]


async def test_drain_leaves_a_call_ari_never_applies(caplog: pytest.LogCaptureFixture) -> None:
    """ARI frozen while a call is being decided: the drain gives up after ``within`` and says the call
    stays in Stasis for the next callgate."""
    policy = load_policy(
        resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8"), "x"
    )
    memo, ari = Memo(policy), FrozenAri()
    router = Router(Gate(lambda: memo, MemoryStore(), ari, FakeAudit()), cast(AriClient, ari))
    router.published = policy  # the emergency numbers are in Asterisk already
    router.start(read_start({"id": "1732000000.9"}, ["2125550123", "ext=1001"]))
    await eventually(lambda: ari.frozen.calls, "the decision reaching ARI")
    assert await asyncio.wait_for(router.drain(0.05), HANG) == 1
    assert (router.tasks, router.busy) == (set(), set())
    assert said(caplog, "stopping: 1 call still being decided after 0.05s left waiting in Stasis")


async def test_audit_flush_is_bounded_and_counts_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis frozen: the queued audit entries get ``within`` seconds, then are counted in the log."""
    frozen = Frozen()

    class Pipe:
        def xadd(self, *_: object, **__: object) -> None: ...

        def expire(self, *_: object) -> None: ...

        execute = frozen.wait

    class Client:
        def pipeline(self, transaction: bool) -> Pipe:
            return Pipe()

    audit = Audit(cast(aioredis.Redis, Client()), "acme")
    audit.queue.extend([{"call_id": "1"}, {"call_id": "2"}])
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(audit.run(stop, within=0.05), HANG)
    assert frozen.calls == 1
    assert said(caplog, "stopping: 2 audit entries not written to the Redis stream")


async def test_alert_delivery_under_way_is_bounded_at_stop(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that holds the request: the stop gives the delivery under way the last try's
    bound, then the alert is counted as not delivered."""
    monkeypatch.setattr(alerts, "FINAL_FLUSH", 0.05)
    receiver = Frozen()

    class Held:
        name = "held"
        send = receiver.wait

        async def aclose(self) -> None: ...

    alerter = Alerter([Held()])
    stop = asyncio.Event()
    task = asyncio.create_task(alerter.run(stop))
    alerter.raise_alert(Alert("lock", "acme", "1001", "locked"))
    await eventually(lambda: receiver.calls, "the delivery")
    stop.set()
    await asyncio.wait_for(task, HANG)
    assert said(caplog, "stopping: 1 alert not delivered within 0.05s")


def test_a_mail_server_that_never_answers_does_not_hold_the_exit() -> None:
    """An SMTP delivery cut short leaves its thread to smtplib's timeout without holding the event
    loop's close: ``asyncio.run`` (what ``callgate serve`` runs in) returns at once."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never greets
        port = silent.getsockname()[1]
        email = Email(SmtpSettings("127.0.0.1", port, to=("it@example.com",), timeout=HANG * 3))

        async def stop_while_sending() -> None:
            sending = asyncio.create_task(email.send(Alert("lock", "acme", "1001", "locked")))
            await asyncio.sleep(0)  # its thread is started
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending

        loop_thread = threading.Thread(
            target=asyncio.run, args=(stop_while_sending(),), daemon=True
        )
        loop_thread.start()
        loop_thread.join(HANG)
        assert not loop_thread.is_alive()


# -- the real process --------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Serving]:
    with serving(tmp_path, EXTENSIONS, POLICY) as s:
        yield s


def messages(s: Serving) -> list[str]:
    """The messages of the gate's log lines (decisions have none)."""
    lines = s.gate.log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [str(json.loads(line).get("message", "")) for line in lines if line.startswith("{")]


def stop_within(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    """SIGTERM, then its exit code; None (and SIGKILL) when it is still running after ``seconds``."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@pytest.mark.asterisk
@pytest.mark.redis
async def test_sigterm_with_redis_dead_exits_and_says_what_is_left(served: Serving) -> None:
    """A call admitted, Redis killed, the call ends (its settlement cannot be written), a call decided
    without Redis (its audit entry cannot be streamed): SIGTERM ends the process, exit code 0, before
    the rig's SIGKILL, and the log names the settlement left to expiry and counts the audit entry."""
    watch = await Watch.open(served.ast)
    try:
        await watch.originate("1001", "2125550101", hold=2)
        assert await watch.wait(reached("+12125550101")), served.gate.tail()
        admitted = await served.decision("2125550101", 0)
        assert admitted["reason"] == "allowed"
        rid = admitted["reservation"]

        admin = aioredis.Redis.from_url(served.redis_url)
        with contextlib.suppress(Exception):  # the connection dies with the server
            await admin.shutdown(nosave=True)
        await admin.aclose()

        assert await watch.wait(cdr_of("2125550101"), 15), served.gate.tail()
        await eventually(  # the call ended: its settlement is being retried
            lambda: any(m.startswith(f"settling {rid} failed") for m in messages(served)),
            served.gate.tail,
        )
        await watch.originate("1001", "2125550102")
        assert await watch.wait(reached("+12125550102")), served.gate.tail()
        decided = await served.decision("2125550102", 1)
        assert decided["reason"] == "store_unavailable"
    finally:
        await watch.close()

    proc = served.gate.proc
    assert proc is not None
    served.gate.proc = None  # stopped here, not by the rig
    code = await asyncio.to_thread(stop_within, proc, RIG_PATIENCE)
    lines = messages(served)
    tail = "\n".join(lines[-15:])
    assert code == 0, f"exit code {code} (None: still running after {RIG_PATIENCE} s)\n{tail}"
    assert lines[-1] == "stopped", tail
    assert any(
        m.startswith("could not settle 1 call before stopping")
        and m.endswith(f": {rid}; each is charged in full when its reservation expires")
        for m in lines
    ), tail
    assert (
        "stopping: 1 audit entry not written to the Redis stream; each decision is in this log"
        in (lines)
    ), tail


def asterisk_pid(ast: AsteriskInstance) -> int:
    """The pid Asterisk wrote into its run directory (``astrundir`` in its asterisk.conf)."""
    for line in ast.config.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=>")
        if key.strip() == "astrundir":
            return int(Path(value.strip(), "asterisk.pid").read_text(encoding="utf-8"))
    raise AssertionError(f"no astrundir in {ast.config}")


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """The processes stopped (SIGSTOP): their sockets stay open, nothing answers."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.asterisk
@pytest.mark.redis
async def test_sigterm_with_redis_and_asterisk_frozen_exits(served: Serving) -> None:
    """Redis frozen while a call's settlement is due, then Asterisk frozen too (ARI, AMI and Redis all
    silent, their connections open): SIGTERM still ends the process, exit code 0, before the rig's
    SIGKILL, and the log names the settlement left to expiry."""
    admin = aioredis.Redis.from_url(served.redis_url, decode_responses=True)
    redis_pid = int((await admin.info("server"))["process_id"])
    await admin.aclose()
    watch = await Watch.open(served.ast)
    try:
        await watch.originate("1001", "2125550103", hold=1)
        assert await watch.wait(reached("+12125550103")), served.gate.tail()
        rid = (await served.decision("2125550103", 0))["reservation"]
        with frozen(redis_pid):
            assert await watch.wait(cdr_of("2125550103"), 15), served.gate.tail()
            await eventually(
                lambda: any(m.startswith(f"settling {rid} failed") for m in messages(served)),
                served.gate.tail,
            )
            with frozen(asterisk_pid(served.ast)):
                proc = served.gate.proc
                assert proc is not None
                served.gate.proc = None
                code = await asyncio.to_thread(stop_within, proc, RIG_PATIENCE)
    finally:
        await watch.close()
    lines = messages(served)
    tail = "\n".join(lines[-15:])
    assert code == 0, f"exit code {code} (None: still running after {RIG_PATIENCE} s)\n{tail}"
    assert lines[-1] == "stopped", tail
    assert any(
        m.startswith("could not settle 1 call before stopping") and rid in m for m in lines
    ), tail
