"""The gate: decide one call with the live store, then tell Asterisk what to do with the channel.

This is the imperative shell around the pure engine. It owns two seams, each a small Protocol: the
counter store (:mod:`callgate.store.protocol`) and the channel control (ARI, :class:`ChannelControl`). What it
does is told on one typed stream (:mod:`callgate.asterisk.events`): each decision, locks, spend under a cap, the
store failing and recovering; the audit, the metrics and the alerts subscribe. A decision never raises: a dead store or a store slower than the per-call
deadline gives the policy's ``on_store_error`` decision, and a channel that hung up meanwhile is simply
gone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from callgate.asterisk.events import (
    Decided,
    Events,
    Locked,
    SpendCommitted,
    StoreFailed,
    StoreRecovered,
)
from callgate.asterisk.identity import caller_extension
from callgate.core.admission import BurstRule, CheckKind
from callgate.core.bursts import lockdown_rule, short_call_rule
from callgate.core.decision import RESERVATION_VARIABLE, Decision
from callgate.core.engine import conclude, on_store_failure
from callgate.core.memo import Memo
from callgate.core.origins import Origin
from callgate.core.plan import RESERVATION_HOLD, above_problem, abroad_for, prepare
from callgate.core.policy import FailMode, Policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import CallAttempt
from callgate.errors import StoreUnavailable
from callgate.store.protocol import Settlement, SettleStatus, Store

log = logging.getLogger("callgate.gate")

# Asterisk's own backstop: the channel is hung up this long after the allowed seconds even if the
# dialplan forgot Dial's L(). It is below RESERVATION_HOLD, so a call always ends before its reservation.
TIMEOUT_SLACK = 120


class ChannelControl(Protocol):
    """What the gate asks of Asterisk; :class:`callgate.asterisk.ari.AriClient` is the real one."""

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool: ...

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool: ...

    async def hangup(self, channel_id: str, *, cause: int) -> bool: ...


class Pbx(ChannelControl, Protocol):
    """What the router asks of Asterisk outside a call: the ARI client (``app``: its Stasis app), or,
    for an Asterisk without ARI, :class:`callgate.asterisk.ami.AmiControl` (no Stasis app, no channel
    ever waits in one)."""

    app: str

    async def set_global(self, variable: str, value: str) -> None: ...

    async def channels(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Then:
    """What a channel does once its variables are set: continue in the dialplan (at ``context``,
    ``extension`` and ``label`` when given; else at the next priority), or, with a ``cause``, hang up
    with that Q.850 cause."""

    context: str = ""
    extension: str = ""
    label: str = ""
    cause: int = 0


async def apply(
    control: ChannelControl, channel_id: str, variable: str, value: str, then: Then
) -> bool:
    """Set the variable, then continue or hang up: in one go where the control can (the ARI client
    over its websocket: :meth:`~callgate.asterisk.ari.AriClient.apply`), else one after the other.
    False when the channel had gone before the variable was set."""
    together = getattr(control, "apply", None)
    if together is not None:
        return bool(await together(channel_id, variable, value, then))
    if not await control.set_variable(channel_id, variable, value):
        return False
    if then.cause:
        await control.hangup(channel_id, cause=then.cause)
    else:
        await control.continue_in_dialplan(
            channel_id, context=then.context, extension=then.extension, label=then.label
        )
    return True


@dataclass(frozen=True, slots=True)
class GateSettings:
    deadline: float = 1.0  # seconds a decision may wait for the store before on_store_error applies
    deny_cause: int = 21  # Q.850 call rejected (PJSIP sends 403)
    deny_context: str = (
        ""  # when set with deny_label, a denial continues there instead of hanging up
    )
    deny_label: str = ""
    timeout_absolute: bool = True  # also set TIMEOUT(absolute) as a backstop for Dial's L()
    instance: str = ""  # which gate this is (serve: the host name); each reservation records it


@dataclass(frozen=True, slots=True)
class AdmittedCall:
    """An admitted call that has not been settled yet: what panic hangs up and short_calls looks at."""

    channel_id: str
    extension: str
    number: str
    international: bool
    until: float  # monotonic time after which it is surely over (allowed seconds + hold)
    origin: Origin = Origin.DIALLED  # short_calls counts the extension's own calls only


# With many tenants behind one callgate, the reservation id a channel carries (CALLGATE_CALL, and
# CDR(callgate) and the dialplan's callgate-limit after it) is ``<site>~<reservation id>``, so the spend
# feed hands each settlement to its tenant's gate, also after a restart. Neither a site name (letters,
# digits, . _ - and one /) nor a reservation id (a call id of [A-Za-z0-9._-], ":" and hex digits)
# holds a "~", a "," or a "^" (Dial's U() argument separator).
TENANT_SEP = "~"


_STRICTNESS = (FailMode.ALLOW, FailMode.DENY_INTERNATIONAL, FailMode.DENY)


def stricter(one: FailMode, other: FailMode) -> FailMode:
    """The stricter of two ``on_store_error`` modes: deny over deny_international over allow."""
    return max(one, other, key=_STRICTNESS.index)


def carried(site: str, reservation: str) -> str:
    """What the channel carries for ``reservation`` of tenant ``site``."""
    return f"{site}{TENANT_SEP}{reservation}"


def split_carried(value: str) -> tuple[str, str]:
    """(site, reservation id) of what a channel carried; ("", value) for an id without a site."""
    site, sep, reservation = value.rpartition(TENANT_SEP)
    return (site, reservation) if sep else ("", value)


_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]", re.ASCII)


def site_suffix(site: str) -> str:
    """What a tenant's global variables add to the names: ``_`` and its name with each of ``/ . -``
    as ``_`` (``acme/east`` -> ``_acme_east``), as the shipped dialplan writes it from
    ``CALLGATE_SITE`` (``REPLACE()``). "" for the one site of a single-site callgate: its globals keep
    their names. Tenants whose suffixes are equal are refused by the settings. (The names of the globals:
    :mod:`callgate.asterisk.stasis`.)"""
    return "_" + _NOT_IN_NAME.sub("_", site) if site else ""


def as_array(variables: dict[str, str]) -> tuple[str, str]:
    """Every variable in one ``ARRAY(...)`` assignment: one ARI request instead of one per variable
    (the request count is most of the gate's cost, ``make bench``). No value may hold a comma: they are
    verdicts, reasons, E.164 numbers and integers."""
    assert not any("," in v for v in variables.values()), variables
    return f"ARRAY({','.join(variables)})", ",".join(variables.values())


class Gate:
    """One site's gate. ``memo`` (the running policy with the engine's memo of it, from the policy
    holder) is called on every decision, so a reload takes effect at once.

    With many tenants behind one callgate, each tenant has its own gate: ``tenant`` (its site name)
    prefixes the reservation id its channels carry (:func:`carried`), and ``above`` gives the running
    memo of its provider's policy, if one is loaded, whose ``site_limits`` count every tenant's calls
    (:func:`callgate.core.plan.prepare`). A provider policy that cannot be above this tenant's (another
    currency) is logged, and the tenant's counted calls get its ``on_store_error`` decision: the caps
    above it cannot be counted, as when the store is down."""

    def __init__(
        self,
        memo: Callable[[], Memo],
        store: Store,
        channels: ChannelControl,
        events: Events,
        *,
        settings: GateSettings = GateSettings(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tenant: str = "",
        above: Callable[[], Memo | None] | None = None,
    ) -> None:
        self.memo = memo
        self.tenant = tenant
        self.above = above
        self._above_refused: tuple[str, str] | None = None  # (tenant, provider) digests logged
        self.store = store
        self.channels = channels
        self.events = events
        self.settings = settings
        self.clock = clock
        self.store_down = False  # the last admission failed: the next success is a recovery
        # call id -> admitted call of this instance, until settled
        self.live: dict[str, AdmittedCall] = {}

    def policy(self) -> Policy:
        return self.memo().policy

    async def decide(
        self, attempt: CallAttempt, *, late: bool = False, endpoint: str = "", by: str = ""
    ) -> Decision:
        """``late``: the call already waited its deadline for the gate; the store is not asked.

        ``endpoint``: the PJSIP endpoint that authenticated the channel; the caller is worked out from
        it and the dialplan's ``ext=`` by :func:`callgate.asterisk.identity.caller_extension`; ``by``: a
        transfer's transferring channel, as the dialplan passed it.
        """
        memo = self.memo()
        policy = memo.policy
        extension = caller_extension(
            policy.endpoints,
            endpoint,
            attempt.extension,
            attempt.origin,
            by=by,
            known=lambda name: (rule := policy.rule_for(name)) is not None and rule.match != "*",
        )
        if extension != attempt.extension:
            attempt = replace(attempt, extension=extension)
        above = self.above() if self.above is not None else None
        problem = above_problem(policy, above.policy) if above is not None else None
        p = prepare(memo, attempt, self.clock(), above=above if problem is None else None)
        if p.admission is None:
            return conclude(p, None)
        if problem is not None and above is not None:
            pair = (policy.digest, above.policy.digest)
            if self._above_refused != pair:
                self._above_refused = pair
                log.error("provider policy cannot count %s's calls: %s", policy.site.name, problem)
            # refused, whatever the tenant's own on_store_error says: a tenant must not escape the
            # provider's caps by pushing a policy they cannot count (another currency)
            return on_store_failure(p, FailMode.DENY)
        # A tenant's own on_store_error cannot loosen its provider's: the stricter of the two applies.
        fail = policy.site.on_store_error
        if above is not None:
            fail = stricter(fail, above.policy.site.on_store_error)
            # deny_international, judged as the provider judges: abroad for its country
            if fail is FailMode.DENY_INTERNATIONAL and abroad_for(
                p.number, above.policy.site.region
            ):
                fail = FailMode.DENY
        if late:
            log.warning("overloaded: call %s waited past its deadline", attempt.call_id)
            return on_store_failure(p, fail)
        # The store refuses to reserve once the deadline has passed on its own clock: a script that
        # reaches a frozen-then-resumed Redis after this gate gave up on it must not hold a slot and
        # money for a call the gate already decided without it.
        deadline_ms = int((time.time() + self.settings.deadline) * 1000)
        admission = p.admission._replace(deadline_ms=deadline_ms, instance=self.settings.instance)
        try:
            async with asyncio.timeout(self.settings.deadline):
                outcome = await self.store.admit(admission)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("store failed for call %s: %r", attempt.call_id, exc)
            if not self.store_down:
                self.store_down = True
                self.events.emit(StoreFailed(repr(exc), str(fail)))
            return on_store_failure(p, fail)
        if self.store_down:
            self.store_down = False
            self.events.emit(StoreRecovered())
        if outcome.admitted:
            for check, value in zip(p.admission.checks, outcome.values, strict=True):
                if check.kind is CheckKind.SPEND:
                    cap = check.report or check.limit
                    used = value + outcome.reserved
                    self.events.emit(SpendCommitted(check.key, check.rule, used, cap))
        return conclude(p, outcome)

    async def handle(
        self,
        channel_id: str,
        attempt: CallAttempt,
        *,
        late: bool = False,
        endpoint: str = "",
        by: str = "",
        control: ChannelControl | None = None,
    ) -> Decision:
        """Decide, set the channel variables, then continue or refuse the channel. ``control``: the
        call's own channel control (a FastAGI session); default, the gate's (ARI)."""
        started = time.perf_counter()
        decision = await self.decide(attempt, late=late, endpoint=endpoint, by=by)
        return await self.finish(
            channel_id, decision, started, endpoint=endpoint, by=by, control=control
        )

    async def finish(
        self,
        channel_id: str,
        decision: Decision,
        started: float,
        *,
        endpoint: str = "",
        by: str = "",
        control: ChannelControl | None = None,
    ) -> Decision:
        """The second half of :meth:`handle`: apply ``decision`` (decided from ``started``, a
        ``perf_counter()``), tell it, and count what follows it (a lock, a live call)."""
        applied = await self.act(channel_id, decision, control=control)
        if not applied and decision.allowed and decision.reason is Reason.ALLOWED:
            # the caller hung up while the gate decided: the call was never dialled, release it now
            # rather than charge its whole reservation when it expires
            await self._release(decision)
        elapsed = time.perf_counter() - started
        self.events.emit(Decided(decision, channel_id, elapsed, endpoint, by))
        if applied and decision.allowed and decision.reason is Reason.ALLOWED:
            self.live[decision.reservation] = AdmittedCall(
                channel_id,
                decision.extension,
                decision.number.e164 or "",
                decision.number.international,
                time.monotonic() + decision.allowed_seconds + RESERVATION_HOLD,
                decision.origin,
            )
        elif not decision.allowed:
            rule = lockdown_rule(self.memo(), decision.reason, decision.origin)
            if rule is not None:  # lockdown.after_denied: N denied attempts in the window lock
                await self._burst(
                    decision.extension,
                    decision.reservation or decision.call_id,
                    rule,
                    decision.reason.value,
                )
        return decision

    async def _release(self, decision: Decision) -> None:
        try:
            await self.settle(decision.reservation, 0)
        except StoreUnavailable as exc:
            log.warning("could not release call %s: %s", decision.reservation, exc)

    async def _burst(self, extension: str, call_id: str, rule: BurstRule, why: str) -> None:
        site = self.policy().site.name
        at_ms = int(self.clock().timestamp() * 1000)
        try:
            seen = await self.store.count_burst(site, extension, call_id, at_ms, rule)
        except StoreUnavailable as exc:
            log.warning("could not count %s for %s: %s", rule.name, extension, exc)
            return
        if seen.locked:
            log.warning(
                "extension %s locked (%s): %d %s calls within %ds",
                extension, rule.scope, seen.count, rule.name, rule.within,
            )  # fmt: skip
            self.events.emit(Locked(extension, rule.name, seen.count, rule.within, rule.scope, why))
        elif rule.report and seen.count >= rule.threshold:
            log.warning("report: extension %s would be locked (%s)", extension, rule.scope)
            self.events.emit(
                Locked(extension, rule.name, seen.count, rule.within, rule.scope, why, report=True)
            )

    async def hang_up_international(self) -> int:
        """Panic: hang up every international call this instance admitted that may still be up."""
        now = time.monotonic()
        doomed = [(cid, c) for cid, c in self.live.items() if c.international and c.until > now]
        results = await asyncio.gather(
            *(self.channels.hangup(c.channel_id, cause=self.settings.deny_cause) for _, c in doomed)
        )
        hung = sum(1 for ok in results if ok)
        if doomed:
            log.warning("panic: hung up %d international calls in progress", hung)
        return hung

    async def act(
        self, channel_id: str, decision: Decision, *, control: ChannelControl | None = None
    ) -> bool:
        """Tell Asterisk (through ``control``, default the gate's own); False when the channel had
        already gone before anything was applied.

        Only the first request says so: a ``continue`` retried after a lost response answers 404 although
        the first one went through, so its answer cannot tell that the call was never dialled."""
        variables = decision.variables()
        # The reason reaches the PBX's own CDR reports too (the shipped dialplan sets the same value
        # for allowed calls; a refused call never runs the dialplan again, so it is set here).
        variables["CDR(userfield)"] = f"callgate:{decision.reason.value}"
        limited = decision.verdict is Verdict.ALLOW and decision.reason is not Reason.EMERGENCY
        if RESERVATION_VARIABLE in variables:  # an admitted call: the only kind that carries the id
            if self.tenant:  # the spend feed finds the tenant by it (:func:`carried`)
                variables[RESERVATION_VARIABLE] = carried(self.tenant, decision.reservation)
            # The spend feed settles this leg from its CDR (cdr_manager.conf maps it as CallgateCall),
            # also when the caller hangs up before the dialplan dials: it then costs nothing.
            variables["CDR(callgate)"] = variables[RESERVATION_VARIABLE]
        if limited and self.settings.timeout_absolute:
            variables["TIMEOUT(absolute)"] = str(decision.allowed_seconds + TIMEOUT_SLACK)
        channels = control or self.channels
        s = self.settings
        if decision.verdict is Verdict.ALLOW:
            then = Then()
        elif s.deny_label:
            then = Then(context=s.deny_context, label=s.deny_label)
        else:
            then = Then(cause=s.deny_cause)
        if not await apply(channels, channel_id, *as_array(variables), then):
            log.info("channel %s left before the decision was applied", channel_id)
            return False
        return True

    async def settle(self, call_id: str, billsec: int | None) -> Settlement:
        memo = self.memo()
        at_ms = int(self.clock().timestamp() * 1000)
        settled = await self.store.settle(memo.policy.site.name, call_id, billsec, at_ms)
        call = self.live.pop(call_id, None)
        self._forget_ended()
        if call is not None and settled.status is SettleStatus.SETTLED:
            # None: length unknown
            short = short_call_rule(memo, call.extension, billsec or 0, call.origin)
            if short is not None:  # limits.short_calls: a burst of very short answered calls
                await self._burst(call.extension, call_id, short, f"short call ({billsec}s)")
        return settled

    async def release(self, call_id: str, channel: str) -> bool:
        """The spend feed saw ``channel`` hang up with ``call_id``: free the call's concurrency slots now
        (the store checks that it is the channel the call was admitted for); its money waits for its
        CDR."""
        at_ms = int(self.clock().timestamp() * 1000)
        return await self.store.release(self.memo().policy.site.name, call_id, channel, at_ms)

    def _forget_ended(self) -> None:
        now = time.monotonic()
        for call_id in [cid for cid, c in self.live.items() if c.until <= now]:
            del self.live[call_id]
