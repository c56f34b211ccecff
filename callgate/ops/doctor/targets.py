"""What a dial string reaches, and what ``callgate doctor`` says about it.

:func:`classify` reads one target of ``Dial()``/``Page()``/``Originate()`` as written in the dialplan
(nothing substituted) and says whether it is a trunk, a phone, a ``Local`` channel into a context, or
something the dialplan alone cannot tell. A trunk is a number or URI sent to an endpoint or peer
(``PJSIP/+1212...@mytrunk``, ``PJSIP/mytrunk/sip:...``, ``SIP/peer/...``, ``IAX2/peer/...``,
``DAHDI/g0/...``), an endpoint or ``Local`` context named with ``--trunk``, the shipped include's
``${CALLGATE_TRUNK}``, FreePBX's trunk strings (``${OUT_<n>}``, ``ext-trunk``'s ``${TDIAL_STRING}``, a
custom trunk's ``${pre_num}``, ENUM's ``${TRYDIAL}``), an ``ENUMLOOKUP``/``DUNDILOOKUP`` result, and a
DUNDi or IAX2 alternative switch. A phone is a bare endpoint (``PJSIP/1001``, ``PJSIP/${EXTEN}``),
``PJSIP_DIAL_CONTACTS`` and FreePBX's device strings (``DSTRING`` of ``macro-dial-one``, ``ds`` and
``HuntMember`` of ``macro-dial``, ``THISDIAL`` of ring groups: FreePBX builds them from the device's
dial string, and an external number in them as ``Local/<number>@from-internal``, which meets the
outbound route and its hook). Any other variable is named and "cannot tell".

:func:`explain` turns a judged dial into a :class:`Finding`: severity, where, the line, why and what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, StrEnum

from callgate.ops.doctor.dialplan import Step, literal, split_top, variables

TRUNK_TECHS = frozenset({"PJSIP", "SIP", "IAX2", "IAX", "DAHDI", "ZAP", "MOTIF", "OOH323", "H323"})
TRUNK_VARIABLES = {
    "CALLGATE_TRUNK": "the shipped include's trunk",
    "TDIAL_STRING": "FreePBX's trunk dial string",
    "pre_num": "FreePBX's custom-trunk dial string",
    "TRYDIAL": "an ENUM lookup's URI",
    "ENUMLOOKUP": "an ENUM lookup's URI",
    "DUNDILOOKUP": "a DUNDi lookup's result",
    "DUNDIQUERY": "a DUNDi lookup's result",
}
DEVICE_VARIABLES = frozenset({"PJSIP_DIAL_CONTACTS", "DSTRING", "ds", "HuntMember", "THISDIAL"})
CUT = "a line the CLI cut short"  # what a priority is that `dialplan show` printed only in part


class Reach(Enum):
    TRUNK = "trunk"
    DEVICE = "device"
    LOCAL = "local"  # a Local channel: the call goes on in context, exten
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Target:
    text: str  # as written: "PJSIP/${EXTEN}@mytrunk"
    reach: Reach
    what: str  # in words: "the PJSIP endpoint mytrunk"
    context: str = ""
    exten: str = ""


def classify(text: str, trunks: frozenset[str], *, app: str = "dial") -> Target:
    """What one dial target reaches (see the module's docstring)."""
    if app in {"queue", "followme"}:
        name = split_top(text.partition("(")[2].rstrip(")"), ",")[0]
        what = (
            f"the members of queue {name} (queues.conf, astdb or AddQueueMember)"
            if app == "queue"
            else f"the numbers of follow-me {name} (followme.conf, through its context)"
        )
        return Target(text, Reach.UNKNOWN, what)
    if m := re.fullmatch(r"(?is)local/(?P<exten>.*)@(?P<context>[^/]*)(?:/.*)?", text):
        if m["context"] in trunks:
            return Target(text, Reach.TRUNK, f"the trunk context {m['context']}")
        return Target(text, Reach.LOCAL, f"context {m['context']}", m["context"], m["exten"])
    names = variables(text)
    for name in names:
        if name in TRUNK_VARIABLES or (name.startswith("OUT_") and name != "OUTNUM"):
            return Target(text, Reach.TRUNK, TRUNK_VARIABLES.get(name, "FreePBX's trunk ${OUT_n}"))
    if m := re.fullmatch(r"(?s)(?P<tech>[A-Za-z][A-Za-z0-9]*)/(?P<resource>.*)", text):
        tech, resource = m["tech"].upper(), m["resource"]
        if tech not in TRUNK_TECHS:
            return Target(text, Reach.DEVICE, f"a {m['tech']} channel")
        plain = re.sub(r"\$\{(?:[^{}]|\{[^{}]*\})*\}", "", resource)
        if "@" in plain or "/" in plain:
            peer = plain.rpartition("@")[2] if "@" in plain else plain.partition("/")[0]
            return Target(text, Reach.TRUNK, f"the {m['tech']} trunk {peer or resource}")
        if resource in trunks:
            return Target(text, Reach.TRUNK, f"the {m['tech']} trunk {resource}")
        if literal(resource) or re.fullmatch(r"\$\{EXTEN(?::[0-9:-]+)?\}", resource):
            return Target(text, Reach.DEVICE, f"the {m['tech']} endpoint {resource}")
        return Target(text, Reach.UNKNOWN, f"a {m['tech']} endpoint named by ${{{names[0]}}}")
    if names and names[0] in DEVICE_VARIABLES:
        return Target(text, Reach.DEVICE, f"${{{names[0]}}}")
    if names:
        return Target(text, Reach.UNKNOWN, f"${{{names[0]}}}")
    return Target(text, Reach.UNKNOWN, repr(text))


def switch_target(switch: str) -> Target:
    """An alternative switch: every string no extension matches is looked up through it."""
    tech, _, data = switch.partition("/")
    if tech.lower() == "loopback":
        context = data.split("@")[-1].split("/")[0] if "@" in data else data.split("/")[0]
        return Target(switch, Reach.LOCAL, f"context {context}", context, "")
    if tech.lower() == "dundi":
        return Target(switch, Reach.TRUNK, f"whatever route DUNDi ({data}) finds for the number")
    if tech.lower() == "iax2":
        return Target(switch, Reach.TRUNK, f"the dialplan of the remote Asterisk {data}")
    return Target(
        switch, Reach.UNKNOWN, f"the {tech} switch's extensions (kept outside the dialplan)"
    )


class Severity(StrEnum):
    HIGH = "high"  # a call can reach a trunk around the gate
    UNKNOWN = "unknown"  # the dialplan alone cannot tell: check by hand
    LOW = "low"  # not reachable now, or gated without a limit of its own


class Kind(StrEnum):
    BYPASS = "bypass"
    INJECTION = "injection"
    EMERGENCY_ROUTE = "emergency-route"
    FAIL_OPEN = "fail-open"
    CANNOT_TELL = "cannot-tell"
    NO_LIMIT = "no-limit"
    UNREACHED = "unreached"

    @property
    def rank(self) -> int:
        return list(Kind).index(self)

    @property
    def severity(self) -> Severity:
        if self in {Kind.CANNOT_TELL}:
            return Severity.UNKNOWN
        if self in {Kind.NO_LIMIT, Kind.UNREACHED}:
            return Severity.LOW
        return Severity.HIGH


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    step: Step
    target: str
    why: str
    fix: str
    path: tuple[str, ...] = ()  # the contexts from where the call starts to this priority
    via: str = ""  # the jump named at run time that the path takes, if any

    @property
    def severity(self) -> Severity:
        return self.kind.severity

    @property
    def counts(self) -> bool:
        """Whether it makes ``callgate doctor`` exit 1: high and unknown findings do, low ones not."""
        return self.severity is not Severity.LOW

    @property
    def line(self) -> str:
        return f"switch => {self.step.data}" if self.step.app == "switch" else self.step.line

    def text(self) -> str:
        """One line: severity, kind, where, the application line, why, and what to do."""
        where = f"{self.step.context},{self.step.extension},{self.step.priority or '-'}"
        return f"{self.severity} {self.kind} {where} {self.line}: {self.why}. Fix: {self.fix}."

    def as_json(self) -> dict[str, object]:
        return {
            "severity": str(self.severity),
            "kind": str(self.kind),
            "context": self.step.context,
            "extension": self.step.extension,
            "priority": self.step.priority,
            "label": self.step.label,
            "application": self.line,
            "source": self.step.source,
            "target": self.target,
            "why": self.why,
            "fix": self.fix,
            "path": list(self.path),
            "via": self.via,
        }


# Known paths, by the context the dial is in: why it has no gate, and what the admin can do.
KNOWN = {
    "callgate-emergency": (
        "[callgate-emergency] dials whatever it is given, around the gate: it is meant only for the "
        "emergency numbers that [callgate-outbound] sends it",
        "include => callgate-outbound, never callgate-emergency, and jump to [callgate-emergency] "
        "only with an emergency number",
    ),
    "macro-dialout-trunk": (
        "FreePBX's trunk dial of an outbound route, whose [macro-dialout-trunk-predial-hook] does not "
        "enter Stasis({app})",
        "append dialplan/freepbx/extensions_custom.conf to /etc/asterisk/extensions_custom.conf and "
        "run fwconsole reload (docs/install.md, 5b)",
    ),
    "trunk-dial-with-exten": (
        "FreePBX's trunk dial of an outbound route, whose [macro-dialout-trunk-predial-hook] does not "
        "enter Stasis({app})",
        "append dialplan/freepbx/extensions_custom.conf to /etc/asterisk/extensions_custom.conf and "
        "run fwconsole reload (docs/install.md, 5b)",
    ),
    "macro-dialout-dundi": (
        "a FreePBX DUNDi trunk: FreePBX runs [macro-dialout-dundi-predial-hook] for it, never the "
        "trunk hook, and that hook does not enter Stasis({app})",
        "install callgate's DUNDi hook from dialplan/freepbx/ (docs/install.md, 5b), or take the "
        "DUNDi trunk out of every outbound route",
    ),
    "macro-dundi-": (
        "a FreePBX DUNDi trunk's lookup: DUNDi finds a route for the number and dials it",
        "install callgate's DUNDi hook from dialplan/freepbx/ (docs/install.md, 5b), or take the "
        "DUNDi trunk out of every outbound route",
    ),
    "macro-dialout-enum": (
        "a FreePBX ENUM trunk: FreePBX runs no predial hook for ENUM trunks and dials the URIs "
        "the lookup returns",
        "take the ENUM trunk out of every outbound route: callgate cannot gate it",
    ),
    "ext-trunk": (
        "a FreePBX trunk chosen as a destination: [ext-trunk] dials ${{FROM_DID}}, the number the "
        "call came in on, straight to the trunk with no predial hook",
        "point no inbound route, IVR option, time condition or other destination at a trunk; send "
        "such calls to a number that an outbound route dials",
    ),
}


def _known(context: str) -> tuple[str, str] | None:
    for name, texts in KNOWN.items():
        if context == name or (name.endswith("-") and context.startswith(name)):
            return texts
    return None


def explain(
    kind: Kind,
    step: Step,
    target: Target,
    path: tuple[str, ...],
    via: Step | None,
    *,
    app: str,
    assumed: str = "",
) -> Finding:
    """The finding for dialling ``target`` at ``step``, judged ``kind`` on the path ``path``: through
    ``via``, a jump whose context is named at run time, or from ``assumed``, a context calls may
    start in, a high finding is "cannot tell", and says so."""
    start = f"[{path[0]}]" if path else "no context doctor knows as an entry"
    route = f" ({' > '.join(path)})" if len(path) > 1 else ""
    gate = f"Stasis({app})"
    fix = (
        f"send the call through callgate first: include => callgate-outbound in [{path[0] if path else step.context}] "
        f"instead of this dial, or {gate} with the STASISSTATUS and CALLGATE_VERDICT checks of "
        "dialplan/extensions_callgate.conf before it"
    )
    special = _known(step.context)
    if step.app == "switch":
        fix = (
            f"remove switch => {step.data} from [{step.context}], or keep it in a context that only "
            "gated calls reach"
        )
    if kind is Kind.BYPASS:
        why = f"dials {target.what} on a path from {start}{route} that never enters {gate}"
        if special:
            why, fix = f"{why}: {special[0].format(app=app)}", special[1]
    elif kind is Kind.INJECTION:
        why = (
            f"pastes the dialled string into the dial string ({target.text}) in '{step.extension}', "
            "which matches any text, on a path from "
            f"{start}{route} that neither enters {gate} nor checks FILTER(): a caller who dials "
            "'1&PJSIP/<trunk>/sip:<number>@<provider>' (a SIP user part may hold & and /) adds a "
            "trunk call of their own"
        )
        fix = (
            "dial phones from patterns of digits only (_1XXX), or refuse a dialled string with "
            "anything outside 0-9+*# first, as [callgate-outbound] does"
        )
    elif kind is Kind.EMERGENCY_ROUTE:
        why = (
            f"an emergency route whose pattern '{step.extension}' matches more than emergency "
            "numbers: callgate's FreePBX hook lets every call of an emergency route around the gate"
        )
        fix = "give emergency routes only the emergency numbers themselves (911, 112, ...)"
    elif kind is Kind.FAIL_OPEN:
        why = (
            f"enters {gate} but dials {target.what} without checking STASISSTATUS or "
            f"CALLGATE_VERDICT (path from {start}{route}): while callgate is stopped, Stasis() "
            "returns at once and the call goes out unjudged"
        )
        fix = (
            'after Stasis(), GotoIf($["${STASISSTATUS}" != "SUCCESS"]?refuse) and '
            'GotoIf($["${CALLGATE_VERDICT}" != "ALLOW"]?refuse), as [callgate-outbound] does'
        )
    elif kind is Kind.NO_LIMIT:
        why = (
            f"gated, but this dial gives {target.what} no limit of its own: no L() and no "
            "U(callgate-limit^...), so a transferred call outlives its allowed seconds"
        )
        fix = (
            "add L(${CALLGATE_MAX_SECONDS}000)U(callgate-limit^${CALLGATE_MAX_SECONDS}^"
            "${CALLGATE_CALL}) to the dial options, as [callgate-outbound] does"
        )
    elif kind is Kind.UNREACHED:
        why = (
            f"dials {target.what} without the gate, but no path from the entries doctor found "
            "reaches it"
        )
        fix = (
            "nothing while no call starts here; an endpoint, DISA, AMI Originate or stored "
            "destination that sends calls here would bypass callgate (name such contexts with --entry)"
        )
        if special:
            why = f"{why}: {special[0].format(app=app)}"
    else:  # CANNOT_TELL
        why = f"dials {target.what} on a path from {start}{route} that does not enter {gate}"
        if target.what == CUT:
            why = "the CLI printed only the first 1023 characters of this line"
            fix = "run doctor with --ami, which reads every line whole"
        else:
            why += ": the dialplan alone does not say whether it is a trunk"
            fix = f"if it can be a trunk or an outside number, gate it first ({fix}); if it only ever names phones, nothing to do"
    if via is not None:
        why = (
            f"reached only through {via.line} at {via.where}, whose context is named at run time: "
            f"if that can lead here, this {kind}: {why}"
        )
    elif assumed:
        why = (
            f"reached only from [{assumed}], which the dialplan only jumps to: if a call can start "
            f"there (an endpoint's context, a DISA's, an Originate's; say so with --entry {assumed}), "
            f"this {kind}: {why}"
        )
    if (via is not None or assumed) and kind.severity is Severity.HIGH:
        kind = Kind.CANNOT_TELL
    shown = f"{via.line} at {via.where}" if via else ""
    return Finding(kind, step, target.text, why, fix, path, shown)
