"""The gate: decide one call with the live store, then tell Asterisk what to do with the channel.

This is the imperative shell around the pure engine. It owns three seams, each a small Protocol:
the counter store (:mod:`callgate.store`), the channel control (ARI, :class:`ChannelControl`) and the
audit sink (:class:`AuditSink`). A decision never raises: a dead store or a store slower than the per-call
deadline gives the policy's ``on_store_error`` decision, and a channel that hung up meanwhile is simply
gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from callgate.engine import Decision, conclude, on_store_failure, prepare
from callgate.errors import StoreUnavailable
from callgate.policy import Policy
from callgate.reasons import Verdict
from callgate.rules import CallAttempt
from callgate.store import Settlement, Store

log = logging.getLogger("callgate.gate")

# Asterisk's own backstop: the channel is hung up this long after the allowed seconds even if the
# dialplan forgot Dial's L(). It is below RESERVATION_HOLD, so a call always ends before its reservation.
TIMEOUT_SLACK = 120


class ChannelControl(Protocol):
    """What the gate asks of Asterisk; :class:`callgate.ari.AriClient` is the real one."""

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool: ...

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool: ...

    async def hangup(self, channel_id: str, *, cause: int) -> bool: ...


class AuditSink(Protocol):
    def record(self, decision: Decision, channel_id: str, elapsed_ms: float) -> None: ...


@dataclass(frozen=True, slots=True)
class GateSettings:
    deadline: float = 1.0  # seconds a decision may wait for the store before on_store_error applies
    deny_cause: int = 21  # Q.850 call rejected (PJSIP sends 403)
    deny_context: str = (
        ""  # when set with deny_label, a denial continues there instead of hanging up
    )
    deny_label: str = ""
    timeout_absolute: bool = True  # also set TIMEOUT(absolute) as a backstop for Dial's L()


class Gate:
    """One site's gate. ``policy`` is called on every decision, so a reload takes effect at once."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        store: Store,
        channels: ChannelControl,
        audit: AuditSink,
        *,
        settings: GateSettings = GateSettings(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self.store = store
        self.channels = channels
        self.audit = audit
        self.settings = settings
        self.clock = clock

    async def decide(self, attempt: CallAttempt) -> Decision:
        policy = self.policy()
        p = prepare(policy, attempt, self.clock())
        if p.admission is None:
            return conclude(p, None)
        try:
            async with asyncio.timeout(self.settings.deadline):
                outcome = await self.store.admit(p.admission)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("store failed for call %s: %r", attempt.call_id, exc)
            return on_store_failure(p, policy.site.on_store_error)
        return conclude(p, outcome)

    async def handle(self, channel_id: str, attempt: CallAttempt) -> Decision:
        """Decide, set the channel variables, then continue or refuse the channel."""
        started = time.perf_counter()
        decision = await self.decide(attempt)
        await self.act(channel_id, decision)
        self.audit.record(decision, channel_id, (time.perf_counter() - started) * 1000)
        return decision

    async def act(self, channel_id: str, decision: Decision) -> None:
        variables = decision.variables()
        if decision.verdict is Verdict.ALLOW and self.settings.timeout_absolute:
            variables["TIMEOUT(absolute)"] = str(decision.allowed_seconds + TIMEOUT_SLACK)
        results = await asyncio.gather(
            *(self.channels.set_variable(channel_id, k, v) for k, v in variables.items())
        )
        if not all(results):
            log.info("channel %s left before the decision was applied", channel_id)
            return
        s = self.settings
        if decision.verdict is Verdict.ALLOW:
            await self.channels.continue_in_dialplan(channel_id)
        elif s.deny_label:
            await self.channels.continue_in_dialplan(
                channel_id, context=s.deny_context, label=s.deny_label
            )
        else:
            await self.channels.hangup(channel_id, cause=s.deny_cause)

    async def settle(self, call_id: str, billsec: int) -> Settlement:
        policy = self.policy()
        at_ms = int(self.clock().timestamp() * 1000)
        return await self.store.settle(policy.site.name, call_id, billsec, at_ms)
