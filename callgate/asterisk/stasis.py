"""The Stasis layer: read ARI events into call attempts and route them to the gate. No decisions here.

The dialplan passes what callgate needs as ``Stasis()`` arguments (docs/install.md)::

    Stasis(callgate,${EXTEN})                                                plain Asterisk, PJSIP phones
    Stasis(callgate,${EXTEN},ext=${CALLGATE_EXTENSION},call=${CHANNEL(linkedid)},
           origin=${CALLGATE_ORIGIN},via=${CALLGATE_VIA},by=<BLINDTRANSFER>)     the shipped include
    Stasis(callgate,<OUTPREFIX digits>${DIAL_NUMBER},ext=<from AMPUSER, or the forward/follow-me/
           transfer/DISA owner>,call=${CHANNEL(linkedid)},origin=...,via=${FROM_DID})
                                                                FreePBX predial hooks (trunk, DUNDi)

The first argument is the dialled string. Then, by name only and each at most once: ``ext=`` (the
extension, for channels that are not PJSIP endpoints: callgate.asterisk.identity), ``call=`` (the call id that
makes every trunk attempt of one call one decision; default: the channel id), ``account=`` (default:
the channel's account code), ``origin=`` (who caused the leg, :class:`~callgate.core.origins.Origin`;
default, or empty: ``dialled``) and ``via=`` (the inbound DID or trunk that brought the call in, 0 to 64
of ``A-Z a-z 0-9 + . _ -``; recorded only) and ``by=`` (a transfer's leg: the transferring channel
Asterisk wrote to ``BLINDTRANSFER``/``ATTENDEDTRANSFER``, a channel name of at most 100 of
``A-Z a-z 0-9 + . _ - / @ ; :``; it decides whom the leg is charged to, callgate.asterisk.identity)
and ``site=`` (the tenant whose gate decides the call when one callgate serves many sites, a site name
as policies spell it, ``P/T`` for a provider's tenant; set by the tenant's context, ``CALLGATE_SITE``;
empty: not said). The caller id is never read: a phone sets its own.

Asterisk substitutes ``${EXTEN}`` before it splits the arguments on commas, so a phone that dials
``011532345678,ext=1005,call=ATTACK`` adds arguments of its own. The shipped dialplan refuses such a
string before ``Stasis()``; here, as a second wall, any argument that is not one of the known names, a
name given twice, a bare value, a call id outside ``[A-Za-z0-9._-]``, an origin that is not one, a
``via`` or a ``site`` outside its alphabet makes the whole argument list the dialled string: the number reader cannot
read a comma, so the call is refused as ``unparseable_number``. A third wall holds where the dialplan
neither filters the string nor passes every name (``Stasis(callgate,${EXTEN})``): a channel whose
extension holds a comma is treated the same way, since its ``${EXTEN}`` was split into arguments. So a
phone can never name an origin (and with it escape its endpoint, callgate.asterisk.identity) by what it
dials. Nothing the phone dialled is ever trimmed into something else. Nor a site: a forged list names
none, so with many tenants it is refused as ``unknown_site`` before any tenant's policy reads it.

The router hands each call to the gate of its site (:class:`Gates`): with one site, the only gate, and
a call whose ``site=`` names another site is refused; with many (``[policy] tenants``), the gate of the
tenant named, and a call that names none, a site that is no tenant, or a tenant whose policy is not
loaded is refused (``unknown_site``), never decided by another tenant's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callgate.asterisk.events import Events, Unrouted
from callgate.asterisk.gate import ChannelControl, Gate, GateSettings, Pbx, as_array, site_suffix
from callgate.asterisk.identity import channel_endpoint
from callgate.core.decision import RESERVATION_VARIABLE
from callgate.core.numbers import emergency_forms, known_emergency
from callgate.core.origins import Origin
from callgate.core.policy import Policy
from callgate.core.policyvalues import SITE_NAME
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import CallAttempt
from callgate.errors import AmiUnavailable, AriUnavailable

IN_FLIGHT = 64  # calls decided at once by one gate
TENANT_IN_FLIGHT = IN_FLIGHT // 4  # of which at most this many of one tenant (many tenants)

log = logging.getLogger("callgate.stasis")

MAX_FIELD = 128
_NAMED = frozenset({"ext", "call", "account", "origin", "via", "by", "site"})
_CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_VIA = re.compile(r"[A-Za-z0-9+._-]{0,64}", re.ASCII)  # a DID or a trunk's name; empty: not said
# the channel that transferred (Asterisk's BLINDTRANSFER/ATTENDEDTRANSFER): a channel's name
_BY = re.compile(r"[A-Za-z0-9+._@;:/-]{0,100}", re.ASCII)  # Asterisk: 80 at most
_ORIGINS = {origin.value: origin for origin in Origin}


@dataclass(frozen=True, slots=True)
class Start:
    channel_id: str
    attempt: CallAttempt
    endpoint: str = ""  # the PJSIP endpoint that authenticated the channel, from its name
    by: str = ""  # a transfer's leg: the channel that transferred it (the dialplan's ``by=``)
    site: str = ""  # the site the dialplan named (``site=``); "" when it named none or was forged


def _field(value: object) -> str:
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def read_start(
    channel: Mapping[str, Any], args: Sequence[object], *, forged: bool = False
) -> Start | None:
    """The call attempt of a channel entering Stasis, or None when it has no channel id.

    ``forged``: the door already knows the arguments cannot be believed (the FastAGI door, an
    environment that a caller's value broke into: callgate.asterisk.agi); the call is refused as
    any forged list is."""
    channel_id = _field(channel.get("id"))
    if not channel_id:
        return None
    named: dict[str, str] = {}
    # Asterisk's own fact: the extension the channel runs. One with a comma is a dialled string that
    # Stasis() split into arguments (``Stasis(callgate,${EXTEN})`` with EXTEN "...,origin=forward"),
    # whatever names they use: the third wall, for dialplans that neither filter nor pass every key.
    dialplan = channel.get("dialplan")
    exten = dialplan.get("exten") if isinstance(dialplan, Mapping) else None
    # all of it: a comma past MAX_FIELD counts too
    forged = forged or (isinstance(exten, str) and "," in exten)
    for arg in args[1:]:
        key, sep, value = _field(arg).partition("=")
        if not sep or key not in _NAMED or key in named:
            forged = True
        named[key] = value
    call_id = named.get("call") or channel_id
    origin = _ORIGINS.get(named.get("origin") or Origin.DIALLED.value)
    via = named.get("via", "")
    by = named.get("by", "")
    site = named.get("site", "")
    if (
        not _CALL_ID.fullmatch(call_id)
        or origin is None
        or not _VIA.fullmatch(via)
        or not _BY.fullmatch(by)
        or (site != "" and not SITE_NAME.fullmatch(site))
    ):
        forged = True
    dialled = _field(args[0]) if args else ""
    if forged:
        # the whole list, commas included: unreadable as a number, so refused as unparseable_number
        dialled = ",".join(_field(a) for a in args)[:MAX_FIELD]
        log.warning("channel %s: Stasis arguments were forged: %r", channel_id, dialled)
        call_id = channel_id if _CALL_ID.fullmatch(channel_id) else "forged"
    attempt = CallAttempt(
        call_id=call_id,
        extension=named.get("ext", "") if not forged else "",
        dialled=dialled,
        account_code=named.get("account") or _field(channel.get("accountcode")),
        leg=channel_id,
        origin=origin if origin is not None and not forged else Origin.DIALLED,
        via=via if not forged else "",
    )
    endpoint = channel_endpoint(_field(channel.get("name")))
    return Start(
        channel_id, attempt, endpoint, by if not forged else "", site if not forged else ""
    )


# Asterisk global variables the shipped dialplan reads with GLOBAL() (a channel variable cannot shadow
# them). Globals, not AstDB: Asterisk blocks DB() writes from ARI unless live_dangerously is on.
EMERGENCY_NUMBERS = "CALLGATE_EMERGENCY_NUMBERS"  # the dialled forms, '-' separated: 911-112-9911
EMERGENCY_DIALS = "CALLGATE_EMERGENCY_DIALS"  # what each form dials, at the same position


def published_emergency(policy: Policy) -> tuple[str, str]:
    """The policy's emergency numbers as the shipped dialplan reads them before ``Stasis()``.

    The dialled forms (:func:`callgate.core.numbers.emergency_forms`: each entry alone and behind each
    outside-line prefix), '-' separated, and at the same position what each one dials. Kept in
    Asterisk's global variables, so an emergency call goes around the gate whatever the dialplan lists,
    even while callgate is down or restarting; after an Asterisk restart and until callgate connects,
    the dialplan's built-in 911/933/112 apply. Forms outside the dial alphabet (which no dialled string
    that passes the dialplan's filter can equal) are left out. Each tenant has its own pair
    (:func:`site_suffix`): never the union of the tenants' lists."""
    forms = emergency_forms(policy.emergency, policy.site.outside_line)
    listed = [(form, dial) for form, dial in forms.items() if _DIAL_ALPHABET.fullmatch(form)]
    return "-".join(form for form, _ in listed), "-".join(dial for _, dial in listed)


_DIAL_ALPHABET = re.compile(r"[0-9+*#]{1,32}", re.ASCII)


def safety_net(policies: Iterable[Policy]) -> str:
    """With many tenants, the emergency numbers a call whose context set no site still reaches (the
    plain ``CALLGATE_EMERGENCY_NUMBERS``, '-' separated; each dials itself): every tenant's entry that
    libphonenumber knows as an emergency number of that tenant's own country (a UK tenant's 999 when
    its context forgot ``CALLGATE_SITE``). Never a tenant's other entries: a number a policy calls an
    emergency one goes around the gate, and one tenant's list must not open a number for others."""
    found = {
        entry
        for policy in policies
        for entry in known_emergency(policy.emergency, policy.site.region)
        if _DIAL_ALPHABET.fullmatch(entry)
    }
    return "-".join(sorted(found))


def waiting_args(channel: Mapping[str, Any], app: str) -> list[str] | None:
    """For a channel listed by ``GET /channels``: its Stasis arguments if it waits in ``app``."""
    dialplan = channel.get("dialplan")
    if not isinstance(dialplan, Mapping) or dialplan.get("app_name") != "Stasis":
        return None
    name, *args = str(dialplan.get("app_data", "")).split(",")
    return args if name.strip() == app else None


def _emergency(dialled: str) -> dict[str, str]:
    """What the shipped dialplan reads to place ``dialled`` as an emergency call."""
    return {
        "CALLGATE_VERDICT": Verdict.ALLOW.value,
        "CALLGATE_REASON": Reason.EMERGENCY.value,
        "CALLGATE_NUMBER": dialled,
        "CALLGATE_MAX_SECONDS": "0",
        "CDR(userfield)": f"callgate:{Reason.EMERGENCY.value}",
    }


UNKNOWN_SITE_VARIABLES = {
    "CALLGATE_VERDICT": Verdict.DENY.value,
    "CALLGATE_REASON": Reason.UNKNOWN_SITE.value,
    "CDR(userfield)": f"callgate:{Reason.UNKNOWN_SITE.value}",
}
assert RESERVATION_VARIABLE not in UNKNOWN_SITE_VARIABLES  # a refused call holds no reservation


class Router:
    """Routes events to the gate of each call's site, one task per call; a channel is never handled
    twice at once.

    ``Router(gate, ari)``: one site. ``Router.tenants(gates, ari, ...)``: many; ``gates`` (site name ->
    gate) is the live map ``serve`` fills as each tenant's policy loads, so a tenant pushed later is
    served from its first loaded version on.

    ``ari`` is how the router reaches Asterisk outside a call (the emergency globals, the channels
    waiting in Stasis) and the Stasis door's channel control: the ARI client, or, with no ARI at all,
    the AMI one (:class:`callgate.asterisk.ami.AmiControl`). A call that came through the FastAGI door
    is controlled through its own session (``start(..., control=...)``)."""

    def __init__(
        self,
        gate: Gate | None,
        ari: Pbx,
        *,
        tenants: Mapping[str, Gate] | None = None,
        settings: GateSettings | None = None,
        events: Events | None = None,
    ) -> None:
        assert (gate is None) != (tenants is None), "one gate, or the tenants' gates"
        self.gate = gate
        self.many = tenants
        self.ari = ari
        self.settings = settings or (gate.settings if gate is not None else GateSettings())
        self.events = events or (gate.events if gate is not None else Events())
        # The task deciding each busy channel, and the busy channels that left Stasis meanwhile
        # (StasisEnd): a channel that comes back (a FreePBX trunk failover re-enters the hook) waits
        # for its first decision to finish, where the same entry seen twice (reconcile and its own
        # StasisStart) is decided once.
        self.current: dict[str, asyncio.Task[None]] = {}
        self.left: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # At most this many calls are decided at once; the others queue. A call that queued past the
        # gate's deadline gets the policy's on_store_error decision without asking the store, so an
        # overloaded gate sheds load instead of letting every call wait longer and longer.
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        # With many tenants, each also waits for one of its own TENANT_IN_FLIGHT slots first: one
        # tenant's flood of calls queues (and goes late) behind its own share, not the others' calls.
        self.tenant_slots: dict[str, asyncio.Semaphore] = {}
        self.published: Policy | None = None  # one site: the policy whose numbers Asterisk holds
        self.published_by: dict[str, Policy] = {}  # tenants: the same, per tenant

    @property
    def busy(self) -> set[str]:
        """The channels being decided now."""
        return set(self.current)

    @classmethod
    def tenants(
        cls, gates: Mapping[str, Gate], ari: Pbx, settings: GateSettings, events: Events
    ) -> Router:
        return cls(None, ari, tenants=gates, settings=settings, events=events)

    def gate_for(self, site: str) -> Gate | None:
        """The gate that decides a call whose dialplan named ``site`` ("" for none); None: no gate
        may (refused as ``unknown_site``)."""
        if self.many is None:
            assert self.gate is not None
            return self.gate if site in ("", self.gate.policy().site.name) else None
        return self.many.get(site) if site else None

    def _publishing(self) -> list[tuple[str, Gate]]:
        if self.many is None:
            assert self.gate is not None
            return [("", self.gate)]
        return sorted(self.many.items(), key=lambda item: item[0])

    async def publish_emergency(self, only: str | None = None) -> None:
        """Write each site's emergency numbers to Asterisk's globals (the dialplan reads them):
        every site, or ``only`` that one ("" for the one of a single-site callgate). With many
        tenants, also the plain pair a call of no site reads (:func:`safety_net`)."""
        for site, gate in self._publishing():
            if only is None or only == site:
                await self._publish(site, gate)
        if self.many is not None:
            net = safety_net(gate.policy() for _, gate in self._publishing())
            try:
                await self.ari.set_global(EMERGENCY_NUMBERS, net)
                await self.ari.set_global(EMERGENCY_DIALS, net)
            except (AriUnavailable, AmiUnavailable) as exc:
                log.warning("could not publish the emergency safety net to Asterisk: %s", exc)

    async def _publish(self, site: str, gate: Gate) -> None:
        policy = gate.policy()
        forms, dials = published_emergency(policy)
        suffix = site_suffix(site)
        try:
            await self.ari.set_global(EMERGENCY_NUMBERS + suffix, forms)
            await self.ari.set_global(EMERGENCY_DIALS + suffix, dials)
        except (AriUnavailable, AmiUnavailable) as exc:
            log.warning("could not publish the emergency numbers to Asterisk: %s", exc)
            self._mark(site, None)  # try again with the next call
            return
        self._mark(site, policy)
        shown = forms or "none"
        if site:
            log.info("emergency numbers published to Asterisk for %s: %s", site, shown)
        else:
            log.info("emergency numbers published to Asterisk: %s", shown)

    def _mark(self, site: str, policy: Policy | None) -> None:
        if not site:
            self.published = policy
        elif policy is None:
            self.published_by.pop(site, None)
        else:
            self.published_by[site] = policy

    def _republish(self) -> None:
        for site, gate in self._publishing():
            done = self.published if not site else self.published_by.get(site)
            if gate.policy() is not done:
                self._mark(site, gate.policy())  # once per policy, even while a publish is running
                task = asyncio.create_task(self.publish_emergency(site))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def dispatch(self, event: Mapping[str, Any]) -> None:
        match event:
            case {"type": "StasisStart", "channel": dict() as channel, "args": list() as args}:
                self.start(read_start(channel, args))
            case {"type": "StasisEnd", "channel": {"id": str() as channel_id}}:
                if channel_id in self.current:
                    self.left.add(channel_id)
            case {"type": "ApplicationReplaced"}:
                log.error(
                    "another client took the Stasis app %r: run one app name per instance",
                    self.ari.app,
                )
            case _:
                pass

    def start(
        self, start: Start | None, control: ChannelControl | None = None
    ) -> asyncio.Task[None] | None:
        """Decide the call in a task of its own (returned; None when there is nothing to decide).
        ``control``: the call's own channel control (its FastAGI session); default ``ari``."""
        self._republish()  # a new policy (file or Redis) may list other emergency numbers
        if start is None:
            return None
        channel_id, control = start.channel_id, control or self.ari
        running = self.current.get(channel_id)
        if running is None:
            task = asyncio.create_task(self._handle(start, control))
        elif control is not self.ari or channel_id in self.left:
            # it came back: a new FastAGI session, or a new entry into Stasis after StasisEnd
            self.left.discard(channel_id)
            task = asyncio.create_task(self._after(running, start, control))
        else:
            return None  # the same entry into Stasis, seen twice: decided once
        self.current[channel_id] = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _after(
        self, running: asyncio.Task[None], start: Start, control: ChannelControl
    ) -> None:
        await asyncio.wait({running})
        await self._handle(start, control)

    async def _handle(self, start: Start, control: ChannelControl) -> None:
        queued = time.monotonic()
        try:
            gate = self.gate_for(start.site)
            if gate is None:
                await self._unrouted(start, queued, control)
                return
            # The slots are held while the call is decided, not while the answer is carried out: a
            # channel control that is slow to take it (a FastAGI peer that never answers) holds
            # nobody else's call past its deadline.
            async with self._share(start.site), self.slots:
                late = time.monotonic() - queued > self.settings.deadline
                started = time.perf_counter()
                decision = await gate.decide(
                    start.attempt, late=late, endpoint=start.endpoint, by=start.by
                )
            await gate.finish(
                start.channel_id, decision, started, endpoint=start.endpoint, by=start.by,
                control=control,
            )  # fmt: skip
        except AriUnavailable as exc:
            log.warning(
                "channel %s: ARI failed while applying the decision: %s", start.channel_id, exc
            )
        except Exception:  # a bug must not kill the gate; the channel is refused by the dialplan
            log.exception("channel %s: unexpected error", start.channel_id)
            await self._refuse(start.channel_id, control)
        finally:
            if self.current.get(start.channel_id) is asyncio.current_task():
                del self.current[start.channel_id]
                self.left.discard(start.channel_id)

    def _share(self, site: str) -> contextlib.AbstractAsyncContextManager[object]:
        """A tenant's own share of the in-flight slots (one site: no share, only the slots)."""
        if self.many is None:
            return contextlib.nullcontext()
        share = self.tenant_slots.get(site)
        if share is None:
            share = self.tenant_slots[site] = asyncio.Semaphore(TENANT_IN_FLIGHT)
        return share

    async def _unrouted(self, start: Start, queued: float, control: ChannelControl) -> None:
        """Refuse a call no gate of this callgate may decide: ``unknown_site``, as a denial; but
        with many tenants, a number of the safety net (:func:`safety_net`: an emergency number
        of a served tenant's country) is placed as an emergency call, like a call of no site whose
        dialplan found it in the plain globals (a tenant listed but with no policy pushed yet, or
        one whose context names a site that is no tenant, still reaches 999)."""
        dialled = start.attempt.dialled
        if (
            self.many is not None
            and _DIAL_ALPHABET.fullmatch(dialled)
            and dialled in safety_net(gate.policy() for _, gate in self._publishing()).split("-")
        ):
            log.warning(
                "channel %s: emergency number %s of site %r (not served here) placed",
                start.channel_id, dialled, start.site,
            )  # fmt: skip
            if await control.set_variable(start.channel_id, *as_array(_emergency(dialled))):
                await control.continue_in_dialplan(start.channel_id)
            return
        if not start.site:
            why = "its dialplan named no site (CALLGATE_SITE)"
        elif self.many is None:
            why = f"site {start.site!r} is not the one this callgate serves"
        else:
            why = f"site {start.site!r} is no tenant served here, or has no policy loaded"
        log.warning("channel %s: refused (unknown_site): %s", start.channel_id, why)
        s = self.settings
        if await control.set_variable(start.channel_id, *as_array(UNKNOWN_SITE_VARIABLES)):
            if s.deny_label:
                await control.continue_in_dialplan(
                    start.channel_id, context=s.deny_context, label=s.deny_label
                )
            else:
                await control.hangup(start.channel_id, cause=s.deny_cause)
        elapsed = time.monotonic() - queued
        self.events.emit(Unrouted(start.channel_id, start.site, start.attempt.dialled, elapsed))

    async def _refuse(self, channel_id: str, control: ChannelControl) -> None:
        try:
            await control.hangup(channel_id, cause=self.settings.deny_cause)
        except AriUnavailable:
            log.warning("channel %s: could not refuse it either", channel_id)

    async def reconcile(self) -> int:
        """Decide every channel left waiting in the app (after a reconnect or a restart)."""
        await self.publish_emergency()
        found = 0
        for channel in await self.ari.channels():
            args = waiting_args(channel, self.ari.app)
            if args is not None:
                found += 1
                self.start(read_start(channel, args))
        if found:
            log.info("found %d channel(s) waiting in Stasis app %r", found, self.ari.app)
        return found

    async def drain(self, within: float | None = None) -> int:
        """Wait for the calls being decided (at shutdown), for at most ``within`` seconds. Returns how
        many were still undecided then: they are dropped, logged, and stay waiting in Stasis, where the
        next callgate to connect decides them (:meth:`reconcile`)."""
        if not self.tasks:
            return 0
        _, late = await asyncio.wait(set(self.tasks), timeout=within)
        left = len(self.busy)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
        if left:
            log.warning(
                "stopping: %d call%s still being decided after %gs left waiting in Stasis; the next "
                "callgate to connect decides them", left, "" if left == 1 else "s", within or 0,
            )  # fmt: skip
        return left
