"""The gate shell with in-memory seams: what it tells Asterisk for each kind of decision, and how it
fails when the store fails. (The same paths run against a real Asterisk in tests/test_e2e.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callgate.asterisk.events import Locked
from callgate.asterisk.gate import TIMEOUT_SLACK, Gate, GateSettings
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import CallAttempt
from callgate.ops.livepolicy import FilePolicy
from callgate.store.memory import MemoryStore
from callgate.store.protocol import Store
from tests.fakes import BrokenStore, FakeAudit, FakeChannels

NY = ZoneInfo("America/New_York")
TUE = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
SAT_NIGHT = datetime(2026, 11, 21, 2, 0, tzinfo=NY)
POLICY = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8"),
    "example",
)


def gate(
    store: Store | None = None, *, at: datetime = TUE, settings: GateSettings | None = None
) -> tuple[Gate, FakeChannels, FakeAudit]:
    channels, audit, memo = FakeChannels(), FakeAudit(), Memo(POLICY)
    g = Gate(
        lambda: memo,
        store or MemoryStore(),
        channels,
        audit,
        settings=settings or GateSettings(),
        clock=lambda: at,
    )
    return g, channels, audit


async def test_allowed_call_gets_variables_then_continues() -> None:
    """An allowed call: the four variables and the TIMEOUT backstop are set, then it continues."""
    g, channels, audit = gate()
    decision = await g.handle("ch1", CallAttempt("L1", "1001", "2125550123"))
    assert decision.verdict is Verdict.ALLOW
    variables = channels.variables("ch1")
    assert variables["CALLGATE_VERDICT"] == "ALLOW"
    assert variables["CALLGATE_REASON"] == "allowed"
    assert variables["CALLGATE_NUMBER"] == "+12125550123"
    assert int(variables["CALLGATE_MAX_SECONDS"]) == decision.allowed_seconds > 0
    assert int(variables["TIMEOUT(absolute)"]) == decision.allowed_seconds + TIMEOUT_SLACK
    assert channels.actions("ch1") == [("continue", "ch1", "", "", "")]
    assert audit.decisions == [(decision, "ch1")]


async def test_denied_call_is_hung_up_with_the_cause() -> None:
    """A denied call: variables set, then hung up with cause 21; no TIMEOUT is set."""
    g, channels, _ = gate()
    decision = await g.handle("ch2", CallAttempt("L2", "1001", "011532345678"))
    assert decision.reason is Reason.COUNTRY_NOT_ALLOWED
    assert channels.variables("ch2")["CALLGATE_VERDICT"] == "DENY"
    assert "TIMEOUT(absolute)" not in channels.variables("ch2")
    assert channels.actions("ch2") == [("hangup", "ch2", "21")]


async def test_deny_label_continues_to_the_dialplan() -> None:
    """With a deny label, a refusal continues there (to play an announcement) instead of hanging up."""
    settings = GateSettings(deny_context="callgate-deny", deny_label="refuse")
    g, channels, _ = gate(settings=settings)
    await g.handle("ch3", CallAttempt("L3", "1001", "19005551234"))
    assert channels.actions("ch3") == [("continue", "ch3", "callgate-deny", "", "refuse")]


@pytest.mark.parametrize(
    ("dialled", "at", "verdict"),
    [
        ("2125550123", TUE, Verdict.ALLOW),  # domestic: deny_international lets it through
        ("011442079460000", TUE, Verdict.DENY),  # international: refused
        ("911", SAT_NIGHT, Verdict.ALLOW),  # emergency never needs the store
    ],
)
async def test_dead_store_applies_on_store_error(
    dialled: str, at: datetime, verdict: Verdict
) -> None:
    """Redis down: the policy's on_store_error (deny_international) decides, nothing raises."""
    g, channels, _ = gate(BrokenStore(), at=at)
    decision = await g.handle("ch", CallAttempt("L", "1001", dialled))
    assert decision.verdict is verdict
    if dialled != "911":
        assert decision.reason is Reason.STORE_UNAVAILABLE
    assert channels.actions("ch")


async def test_slow_store_is_cut_at_the_deadline() -> None:
    """A store slower than the per-call deadline counts as down: the call waits no longer."""
    g, _, _ = gate(BrokenStore(delay=5), settings=GateSettings(deadline=0.05))
    decision = await g.decide(CallAttempt("L", "1001", "011442079460000"))
    assert decision.reason is Reason.STORE_UNAVAILABLE


async def test_channel_gone_before_the_decision_is_applied() -> None:
    """A caller who hangs up while callgate decides: nothing else is sent to the dead channel."""
    g, channels, audit = gate()
    channels.gone.add("ch9")
    await g.handle("ch9", CallAttempt("L9", "1001", "2125550123"))
    assert channels.actions("ch9") == []
    assert len(audit.decisions) == 1


@pytest.mark.parametrize(
    "dialled",
    ["", "'; DROP TABLE calls; --", "\x00\x01\x02", "9" * 500, "+", "sip:@", "${SHELL}", "0" * 64],
)
async def test_hostile_dialled_strings_are_denied(dialled: str) -> None:
    """Whatever arrives as the number, the gate refuses it and does not raise."""
    g, channels, _ = gate()
    decision = await g.handle("chx", CallAttempt("Lx", "1001", dialled))
    assert decision.verdict is Verdict.DENY
    assert channels.actions("chx") == [("hangup", "chx", "21")]


async def test_settle_releases_the_reservation() -> None:
    """The spend feed's settle goes to the store with the policy's site."""
    store = MemoryStore()
    g, _, _ = gate(store)
    decision = await g.decide(CallAttempt("L5", "1001", "2125550123"))
    assert decision.reserved > 0
    assert store.reservations(POLICY.site.name) == 1
    settled = await g.settle(decision.reservation, 30)
    assert settled.billsec == 60  # the policy bills per minute
    assert store.reservations(POLICY.site.name) == 0


async def test_lockdown_after_denied_attempts_then_unlock() -> None:
    """Five denied attempts lock the extension (international): its next call abroad is refused with
    extension_locked, a domestic call still goes, and unlocking restores it."""
    store = MemoryStore()
    g, _, audit = gate(store)
    for i in range(5):
        denied = await g.handle(f"d{i}", CallAttempt(f"D{i}", "1001", "011537123456"))
        assert denied.reason is Reason.COUNTRY_NOT_ALLOWED
    locks = [e for e in audit.seen if isinstance(e, Locked)]
    assert len(locks) == 1
    assert (locks[0].extension, locks[0].report) == ("1001", False)
    assert sum(not d.allowed for d, _ in audit.decisions) == 5
    london = await g.handle("uk", CallAttempt("UK", "1001", "011442079460123"))
    assert london.reason is Reason.EXTENSION_LOCKED
    assert (await g.handle("us", CallAttempt("US", "1001", "2125550123"))).allowed
    await store.set_lock(POLICY.site.name, "1001", None)
    assert (await g.handle("uk2", CallAttempt("UK2", "1001", "011442079460123"))).allowed


async def test_short_calls_lock_after_a_burst() -> None:
    """Answered calls shorter than short_calls.shorter_than, five within the window, lock."""
    store, now, memo = MemoryStore(), [TUE], Memo(POLICY)
    g = Gate(lambda: memo, store, FakeChannels(), FakeAudit(), clock=lambda: now[0])
    for i in range(5):
        now[0] = TUE + timedelta(seconds=61 * i)  # under calls_per_minute: 4
        short = await g.handle(f"s{i}", CallAttempt(f"S{i}", "1002", f"21255501{i:02d}"))
        await g.settle(short.reservation, 3)
    assert await store.locks(POLICY.site.name) == {"1002": "international"}
    long = await g.handle("long", CallAttempt("LONG", "1003", "2125550199"))
    await g.settle(long.reservation, 300)  # a normal call counts nothing
    assert "1003" not in await store.locks(POLICY.site.name)


async def test_panic_hangs_up_live_international_calls_only() -> None:
    """Panic hangs up the international calls this gate admitted that are still up, not domestic."""
    g, channels, _ = gate()
    await g.handle("abroad", CallAttempt("A", "1001", "011442079460123"))
    await g.handle("home", CallAttempt("H", "1002", "2125550123"))
    ended = await g.handle("ended", CallAttempt("E", "1003", "011442079460124"))
    await g.settle(ended.reservation, 30)
    assert await g.hang_up_international() == 1
    assert ("hangup", "abroad", "21") in channels.calls
    assert not any(c[0] == "hangup" and c[1] in {"home", "ended"} for c in channels.calls)


async def test_a_call_that_waited_past_its_deadline_gets_the_store_failure_mode() -> None:
    """Overload: a late call is decided by on_store_error without asking the store."""
    store = MemoryStore()
    g, _, _ = gate(store)
    abroad = await g.handle("a", CallAttempt("A", "1001", "011442079460123"), late=True)
    home = await g.handle("h", CallAttempt("H", "1001", "2125550123"), late=True)
    assert (abroad.verdict, abroad.reason) == (Verdict.DENY, Reason.STORE_UNAVAILABLE)
    assert (home.verdict, home.reason) == (Verdict.ALLOW, Reason.STORE_UNAVAILABLE)
    assert store.reservations(POLICY.site.name) == 0


async def test_a_new_policy_is_decided_with_a_new_memo(tmp_path: Path) -> None:
    """A reloaded policy comes with an empty Memo: what the old one worked out for a number (here,
    London allowed) is never read for the new one (London refused)."""
    text = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    holder = FilePolicy(str(path))
    g = Gate(holder.memo, MemoryStore(), FakeChannels(), FakeAudit(), clock=lambda: TUE)
    assert (await g.decide(CallAttempt("A", "1001", "011442079460123"))).allowed
    old = holder.memo()
    assert len(old) > 0
    path.write_text(text.replace("[US, CA, GB, DE, FR, MX]", "[US, CA, DE, FR, MX]"), "utf-8")
    await holder.refresh()
    assert holder.memo() is not old
    assert holder.memo().policy is holder() is g.policy()
    london = await g.decide(CallAttempt("B", "1001", "011442079460123"))
    assert (london.verdict, london.reason) == (Verdict.DENY, Reason.COUNTRY_NOT_ALLOWED)
