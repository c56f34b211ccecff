"""Where calls start in a dialplan, and where its priorities send them.

Where calls start is not in the dialplan (an endpoint's ``context=``, a DISA, an AMI ``Originate``, a
destination stored in a database), so :func:`starts` makes two lists. Calls surely start in FreePBX's
and Asterisk's known entry contexts, those given with ``--entry``, every context nothing in the
dialplan leads to, and every context with an extension that no jump leads to (who would run it, if
not a call that starts there?). They may start in every other context some jump or include leads to,
except subroutines (only ever entered by ``Gosub``, ``Macro`` or Dial's ``U()``/``b()``, to return),
FreePBX's and callgate's own internal contexts, and those given with ``--internal``.

:func:`mentions` reads where one priority sends calls; :func:`named_contexts` what a context name as written
(``macro-dundi-${DIAL_TRUNK}``, ``${DEST}``) can be.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator

from callgate.ops.doctor.dialplan import Dialplan, Step, best_match, literal, split_top
from callgate.ops.doctor.targets import switch_target

# Contexts calls start in that no dialplan names: FreePBX's phones, trunks and transfers, Asterisk's
# defaults.
KNOWN_ENTRIES = frozenset(
    {
        "from-internal",
        "from-internal-xfer",
        "from-internal-noxfer",
        "from-trunk",
        "from-pstn",
        "from-digital",
        "from-analog",
        "from-did-direct",
        "from-sip-external",
        "default",
        "public",
    }
)
# Subroutines and destinations that FreePBX or callgate generate, and that no call starts in.
INTERNAL = re.compile(
    r"^(?:macro-|sub-|func-|ext-trunk$|callgate-(?:emergency|limit|refused|freepbx)$)"
)
# Extensions Asterisk runs by itself (hang-up, invalid, timeouts): no jump leads to them, and they
# tell nothing of where calls start.
SPECIAL_EXTENSIONS = frozenset({"h", "i", "t", "T", "e", "o", "a", "fax", "talk"})
DIALS = frozenset({"dial", "page", "originate"})


def starts(
    plan: Dialplan, entries: frozenset[str], internal: frozenset[str]
) -> tuple[list[str], list[str]]:
    """Where calls start. Surely: the known entries, ``--entry``, and each context (not internal)
    that nothing names or that has an extension no jump leads to (who runs it, if not a call that
    starts there?). Maybe: every other context some jump or include leads to, but for subroutines
    (only ever called, to return) and internal ones."""
    jumped: set[str] = set()
    called: set[str] = set()
    targeted: dict[
        str, set[str] | None
    ] = {}  # context -> the extension names jumps lead to; None: all
    for context in plan.contexts.values():
        for name in context.includes:
            jumped.add(name)
            targeted[name] = None
        for switch in context.switches:
            if (target := switch_target(switch)).context:
                jumped.add(target.context)
                targeted[target.context] = None
    for step in plan.steps():
        for kind, text, exten in mentions(step):
            names, dynamic = named_contexts(plan, text)
            if dynamic:  # tells nothing of where calls start: the walk follows it
                continue
            (called if kind == "call" else jumped).update(names)
            for name in names:
                _target(plan, targeted, name, exten)
    excluded = {c for c in plan.contexts if INTERNAL.match(c) or c in internal}
    sure = set(entries) | (KNOWN_ENTRIES - excluded)
    for name, context in plan.contexts.items():
        if name in excluded:
            continue
        aimed = targeted.get(name, set())
        untargeted = (
            aimed is not None
            and {e.name for e in context.extensions.values()} - aimed - SPECIAL_EXTENSIONS
        )
        if name not in jumped | called or untargeted:
            sure.add(name)
    maybe = jumped - sure - excluded
    return sorted(sure & set(plan.contexts)), sorted(maybe & set(plan.contexts))


def _target(
    plan: Dialplan, targeted: dict[str, set[str] | None], name: str, exten: str | None
) -> None:
    """Note that a jump leads to ``exten`` (None or one named at run time: to any) of ``name``."""
    context = plan.contexts.get(name)
    aimed = targeted.setdefault(name, set())
    if context is None or aimed is None:
        return
    if exten is None or not literal(exten):
        targeted[name] = None
    elif (best := best_match({e.name for e in context.extensions.values()}, exten)) is not None:
        aimed.add(best)


def mentions(step: Step) -> Iterator[tuple[str, str, str | None]]:
    """Where a priority sends calls: ``(kind, context, extension)`` as written, kind ``"call"`` for a
    subroutine (entered only to return) and ``"jump"`` otherwise; extension None for any."""
    app, data = step.app.lower(), step.data
    args = split_top(data, ",")
    if app in {"goto", "gosub"}:
        yield from _label(step, "call" if app == "gosub" else "jump", data)
    elif app in {"gotoif", "gosubif", "gotoiftime"}:
        for branch in split_top(after_question(data), ":"):
            yield from _label(step, "call" if app == "gosubif" else "jump", branch)
    elif app in {"execif", "exec", "tryexec"}:
        for branch in split_top(after_question(data), ":") if app == "execif" else [data]:
            inner_app, inner = inline(branch)
            yield from mentions(Step(step.context, step.extension, 0, "", inner_app, inner, ""))
    elif app == "macro" and args[0]:
        yield "call", f"macro-{args[0]}", "s"
    elif app == "disa":
        yield "jump", args[1] if len(args) > 1 and args[1] else "disa", None
    elif app in DIALS:
        for target in split_top(args[0], "&"):
            if m := re.fullmatch(r"(?is)\s*local/(.*)@([^/]*)(?:/.*)?", target):
                yield "jump", m[2], m[1]
        for option, name in re.findall(r"([UbBFG])\(([^()^,]+)\^", data):
            yield ("jump" if option in "FG" else "call"), name, None
        if app == "originate" and len(args) > 3 and args[1].strip().lower() == "exten":
            yield "jump", args[2], args[3]


def _label(step: Step, kind: str, label: str) -> Iterator[tuple[str, str, str | None]]:
    label = re.sub(r"\((?:[^()]|\([^()]*\))*\)\s*$", "", label.strip())  # Gosub's arguments
    parts = [p.strip() for p in split_top(label, ",")]
    if len(parts) == 3:
        yield kind, parts[0], parts[1]
    elif len(parts) == 2:
        yield kind, step.context, parts[0]


def after_question(data: str) -> str:
    parts = split_top(data, "?")
    return "?".join(parts[1:]) if len(parts) > 1 else ""


def inline(text: str) -> tuple[str, str]:
    """``App(args)`` (or ``App``), as ``ExecIf`` and ``Exec`` write it."""
    m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", text, re.DOTALL)
    return (m[1], m[2] or "") if m else ("", "")


def named_contexts(plan: Dialplan, text: str) -> tuple[list[str], bool]:
    """The contexts a context name as written can be, and whether it is named at run time: a literal
    is itself; ``sub-flp-${DIAL_TRUNK}`` is each context it can match; ``${DEST}`` is any."""
    text = text.strip()
    if literal(text):
        return [text], False
    shape, before = text, ""
    while shape != before:
        before, shape = shape, re.sub(r"\$\{[^{}]*\}|\$\[[^\[\]]*\]", "*", shape)
    if len(shape.replace("*", "")) >= 3 and "$" not in shape:
        return [c for c in plan.contexts if fnmatch.fnmatchcase(c, shape)], False
    return list(plan.contexts), True
