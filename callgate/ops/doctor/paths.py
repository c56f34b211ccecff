"""The paths of a dialplan that reach a trunk, and whether each passes the gate first.

The dialplan is walked as Asterisk runs it, from the contexts calls start in (:func:`starts`), through
each priority, ``Goto``/``GotoIf``, ``Gosub``/``Macro`` and their ``Return``, ``include``, ``Local``
channel, ``DISA`` and alternative switch, carrying what the path has passed (:class:`Flags`): the gate
(``Stasis(<app>)``), a test of ``STASISSTATUS``/``CALLGATE_VERDICT`` after it, an emergency test, a
``FILTER()`` of the dialled string. At each ``Dial``, ``Page``, ``Originate``, ``Queue``, ``FollowMe``
and switch, :mod:`callgate.ops.doctor.targets` says what is dialled, and what is dialled with those flags
is a :class:`~callgate.ops.doctor.targets.Finding`, or nothing.

Calls start where :func:`callgate.ops.doctor.entries.starts` says: surely (a bypass found from there is
``high``), or maybe (a bypass found only from there is "cannot tell", and names the context).

Emergency paths are trusted as the shipped dialplans build them: a literal emergency extension (911),
or the branch of a ``GotoIf`` that tests an emergency marker (``EMERGENCYROUTE``, a variable that the
extension sets from ``CALLGATE_EMERGENCY_NUMBERS`` or the emergency numbers, or one named ``emergency``).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntFlag

from callgate.asterisk.agi import SCRIPT as AGI_SCRIPT
from callgate.ops.doctor.dialplan import (
    Dialplan,
    Extension,
    Step,
    best_match,
    free_text,
    literal,
    split_top,
)
from callgate.ops.doctor.entries import DIALS, after_question, inline, named_contexts, starts
from callgate.ops.doctor.targets import (
    CUT,
    Finding,
    Kind,
    Reach,
    Target,
    classify,
    explain,
    switch_target,
)

# the FastAGI door: AGI(agi://<host:port, or a variable>/callgate,...) (callgate.asterisk.agi)
_AGI_DOOR = re.compile(rf"agi://[^/\s]+/{re.escape(AGI_SCRIPT)}")
BUILT_IN_EMERGENCY = frozenset({"911", "933", "112"})  # the shipped include's and hook's own
MAX_STACK = 12  # Gosub depth followed; a deeper call is followed as a jump that does not return
FLOW = frozenset(
    {"goto", "gotoif", "gotoiftime", "gosub", "gosubif", "macro", "return", "macroexit"}
)


class Flags(IntFlag):
    """What a path has passed, carried from priority to priority."""

    GATED = 1  # entered Stasis(<app>) or callgate's FastAGI door
    CHECKED = 2  # then tested STASISSTATUS, AGISTATUS or CALLGATE_VERDICT
    EMERGENCY = 4  # an emergency test's emergency branch, or a literal emergency extension
    FILTERED = 8  # tested FILTER(...) of the dialled string
    DYNAMIC = 16  # came through a jump whose context is named at run time
    ASSUMED = 32  # started in a context that calls may start in (starts()' second list)


Node = tuple[str, str, int]  # context, extension key, priority
State = tuple[Node, Flags, tuple[Node, ...]]  # where, what the path passed, the Gosub return stack


@dataclass(frozen=True, slots=True)
class Options:
    app: str = "callgate"  # the gate's Stasis app
    trunks: frozenset[str] = frozenset()  # endpoints, peers or Local contexts that are trunks
    entries: frozenset[str] = frozenset()  # contexts calls start in, besides those found
    internal: frozenset[str] = frozenset()  # contexts no call starts in (only jumped to)
    emergency: frozenset[str] = BUILT_IN_EMERGENCY


@dataclass(frozen=True, slots=True)
class Report:
    source: str
    contexts: int
    priorities: int
    entries: tuple[str, ...]  # where calls surely start
    assumed: tuple[str, ...]  # where they may start
    missing: tuple[str, ...]  # contexts the dialplan names and does not have
    cut: int  # priorities the CLI printed only in part
    findings: tuple[Finding, ...]

    @property
    def clean(self) -> bool:
        """No finding that counts (``low`` ones are reported and do not count)."""
        return not any(f.counts for f in self.findings)


def audit(plan: Dialplan, options: Options) -> Report:
    """Walk ``plan`` from where calls start and report each trunk dial reachable around the gate."""
    entries, assumed = starts(plan, options.entries, options.internal)
    walk = _Walk(plan, options)
    walk.run(entries, Flags(0))
    walk.run(assumed, Flags.ASSUMED)
    return Report(
        plan.source,
        len(plan.contexts),
        sum(1 for _ in plan.steps()),
        tuple(entries),
        tuple(assumed),
        tuple(sorted(walk.missing)),
        sum(1 for s in plan.steps() if s.cut),
        walk.findings(),
    )


def _priorities(extension: Extension, priority: str) -> list[int]:
    """The priorities a jump's priority (a number, a label, or one named at run time) can be."""
    priority = priority.strip()
    if priority.isdigit():
        return [int(priority)]
    if not literal(priority):
        return sorted({1, *extension.labels.values()})
    return [extension.labels.get(priority, 1)]  # the CLI does not print the label of priority 1


def _emergency_names(extension: Extension, emergency: frozenset[str]) -> frozenset[str]:
    """The variables an extension sets to an emergency list: from a global or variable named
    ``*EMERGENCY*``, or to emergency numbers themselves (``911-933-112``)."""
    names = set()
    for step in extension.steps.values():
        if step.app.lower() != "set":
            continue
        name, _, value = step.data.partition("=")
        name = re.sub(r"^LOCAL\((.*)\)$", r"\1", name.strip())
        numbers = set(re.split(r"[-&,|]", value.strip()))
        if re.search(r"emergency", value, re.IGNORECASE) or (numbers and numbers <= emergency):
            names.add(name)
    return frozenset(names)


def _condition(cond: str, flags: Flags, emergency: frozenset[str]) -> tuple[Flags, Flags]:
    """The flags of the true and of the false branch of a ``GotoIf`` condition."""
    true, false = flags, flags
    if re.search(r"\b(?:STASISSTATUS|AGISTATUS|CALLGATE_VERDICT)\b", cond):
        true |= Flags.CHECKED
        false |= Flags.CHECKED
    if "FILTER(" in cond:
        true |= Flags.FILTERED
        false |= Flags.FILTERED
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", cond))
    if re.search(r"emergency", cond, re.IGNORECASE) or words & emergency:
        if "!=" in cond:
            false |= Flags.EMERGENCY
        else:
            true |= Flags.EMERGENCY
    return true, false


def _judge(step: Step, target: Target, flags: Flags, options: str | None) -> Kind | None:
    """What dialling ``target`` with ``flags`` is: a kind of finding, or None when it is fine."""
    injected = (
        "${EXTEN" in target.text
        and free_text(step.extension)
        and not flags & (Flags.GATED | Flags.FILTERED)
        and target.reach is not Reach.TRUNK
    )
    if injected:
        return Kind.INJECTION
    if target.reach is Reach.TRUNK:
        if not flags & Flags.GATED:
            return Kind.BYPASS
        if not flags & Flags.CHECKED:
            return Kind.FAIL_OPEN
        if options is not None and "L(" not in options and "U(" not in options and literal(options):
            return Kind.NO_LIMIT
        return None
    if target.reach is Reach.UNKNOWN and not flags & Flags.GATED:
        return Kind.CANNOT_TELL
    return None


class _Walk:
    """A breadth-first walk over (priority, flags, return stack), each state at most once."""

    def __init__(self, plan: Dialplan, options: Options) -> None:
        self.plan, self.options = plan, options
        self.parent: dict[State, State | None] = {}
        self.entry: dict[State, str] = {}
        self.queue: deque[State] = deque()
        self.missing: set[str] = set()
        self.reached: set[str] = set()
        self.emergency: dict[tuple[str, str], frozenset[str]] = {}
        self.resolved: dict[tuple[str, str | None, str], list[Node]] = {}
        self.arguments: dict[str, list[str]] = {}
        # per (priority, target): the worst finding, and the first state that shows it
        self.hits: dict[tuple[str, str], tuple[int, Kind, Step, Target, State]] = {}

    def run(self, starts: Iterable[str], flags: Flags) -> None:
        for name in starts:
            for node in self._extensions(name, None):
                self._push((node, self._at(node, flags), ()), None, name)
            for at, switch in self._switches(name):
                self._switch(None, name, at, switch, flags)
        while self.queue:
            self._step(self.queue.popleft())

    def _push(self, state: State, parent: State | None, entry: str = "") -> None:
        if state in self.parent:
            return
        self.parent[state] = parent
        if parent is None:
            self.entry[state] = entry
        self.queue.append(state)

    def _at(self, node: Node, flags: Flags) -> Flags:
        """A literal emergency number's own extension is an emergency path."""
        name = self.plan.contexts[node[0]].extensions[node[1]].name
        return flags | Flags.EMERGENCY if name in self.options.emergency else flags

    def _step(self, state: State) -> None:
        (context, key, priority), flags, stack = state
        extension = self.plan.contexts[context].extensions[key]
        step = extension.steps.get(priority)
        if step is None:  # past the extension's last priority: the call ends
            return
        self.reached.add(step.where)
        app = step.app.lower()
        args = self.arguments.get(step.where)
        if args is None:
            args = self.arguments[step.where] = split_top(step.data, ",")
        following: State = ((context, key, priority + 1), flags, stack)
        if step.cut and app in DIALS | FLOW | {"execif"}:
            self._hit(state, step, Target(step.line, Reach.UNKNOWN, CUT), Kind.CANNOT_TELL)
        if app in FLOW:
            self._flow(state, step, app, args)
        elif app in {"stasis", "agi"}:
            if args[0].strip() == self.options.app or _AGI_DOOR.fullmatch(args[0].strip()):
                flags = (flags | Flags.GATED) & ~Flags.CHECKED
            self._push(((context, key, priority + 1), flags, stack), state)
        elif app in DIALS:
            self._dial(state, step, app, args)
            self._push(following, state)
        elif app in {"queue", "followme"}:
            self._hit(state, step, classify(step.line, self.options.trunks, app=app))
            self._push(following, state)
        elif app == "disa":  # the caller dials anew there: nothing judged so far holds
            name = args[1].strip() if len(args) > 1 and args[1].strip() else "disa"
            fresh = flags & (Flags.DYNAMIC | Flags.ASSUMED)
            self._jump(state, f"{name},${{EXTEN}},1", fresh, stack)
        elif app in {"execif", "exec", "tryexec"}:
            inner = split_top(after_question(step.data), ":") if app == "execif" else [step.data]
            for text in inner:
                inner_app, inner_data = inline(text)
                name = inner_app.lower()
                if name in DIALS:
                    self._dial(state, step, name, split_top(inner_data, ","))
                elif name == "goto":
                    self._jump(state, inner_data, flags, stack)
                elif name == "gosub":
                    self._call(state, inner_data, flags, (context, key, priority + 1))
                elif name in {"return", "macroexit"} and stack:
                    self._push((stack[-1], flags, stack[:-1]), state)
            self._push(following, state)
        elif app not in {"hangup", "busy", "congestion"}:
            route = app == "set" and re.match(r"\s*EMERGENCYROUTE\s*=\s*YES\b", step.data)
            if route and extension.name.startswith("_") and not flags & Flags.GATED:
                target = Target(extension.name, Reach.UNKNOWN, "an emergency route")
                self._hit(state, step, target, Kind.EMERGENCY_ROUTE)
            self._push(following, state)

    def _flow(self, state: State, step: Step, app: str, args: list[str]) -> None:
        """Goto, GotoIf, GotoIfTime, Gosub, GosubIf, Macro, Return, MacroExit."""
        (context, key, priority), flags, stack = state
        back = (context, key, priority + 1)
        if app == "goto":
            self._jump(state, step.data, flags, stack)
        elif app in {"gotoif", "gotoiftime", "gosubif"}:
            cond, _, branches = step.data.partition("?")
            true_flags, false_flags = flags, flags
            if app != "gotoiftime":
                names = self.emergency.get((context, key))
                if names is None:
                    extension = self.plan.contexts[context].extensions[key]
                    names = _emergency_names(extension, self.options.emergency)
                    self.emergency[(context, key)] = names
                true_flags, false_flags = _condition(cond, flags, names)
            pair = [*split_top(branches, ":"), ""][:2]
            for branch, branch_flags in zip(pair, (true_flags, false_flags), strict=True):
                if not branch.strip():
                    self._push((back, branch_flags, stack), state)
                elif app == "gosubif":
                    self._call(state, branch, branch_flags, back)
                else:
                    self._jump(state, branch, branch_flags, stack)
        elif app == "gosub":
            self._call(state, step.data, flags, back)
        elif app == "macro" and args[0].strip():
            self._call(state, f"macro-{args[0].strip()},s,1", flags, back)
        elif app in {"return", "macroexit"} and stack:
            self._push((stack[-1], flags, stack[:-1]), state)

    def _dial(self, state: State, step: Step, app: str, args: list[str]) -> None:
        for text in split_top(args[0], "&") if args else []:
            target = classify(text.strip(), self.options.trunks, app=app)
            if target.reach is Reach.LOCAL:  # a channel of its own: no return stack
                self._jump(state, f"{target.context},{target.exten},1", state[1], ())
            else:
                options = (args[2] if len(args) > 2 else "") if app == "dial" else None
                self._hit(state, step, target, options=options)
        if app == "originate" and len(args) > 4 and args[1].strip().lower() == "exten":
            self._jump(state, ",".join(args[2:5]), state[1], ())

    def _call(self, state: State, label: str, flags: Flags, back: Node) -> None:
        label = re.sub(r"\((?:[^()]|\([^()]*\))*\)\s*$", "", label.strip())  # the arguments
        stack = state[2]
        self._jump(state, label, flags, (*stack, back) if len(stack) < MAX_STACK else stack)

    def _jump(self, state: State, label: str, flags: Flags, stack: tuple[Node, ...]) -> None:
        """Go to ``[[context,]extension,]priority`` (a number or a label)."""
        parts = [p.strip() for p in split_top(label, ",")]
        if not parts[0] or len(parts) > 3:
            return
        here, key, _ = state[0]
        if len(parts) == 1:  # a priority of this very extension
            for p in _priorities(self.plan.contexts[here].extensions[key], parts[0]):
                self._push(((here, key, p), flags, stack), state)
            return
        context_text, exten, priority = ([here, *parts] if len(parts) == 2 else parts)[:3]
        contexts, dynamic = named_contexts(self.plan, context_text)
        if dynamic:
            flags |= Flags.DYNAMIC
        for name in contexts:
            wanted = exten if literal(exten) else None
            nodes = self._extensions(name, wanted, priority)
            for node in nodes:
                self._push((node, self._at(node, flags), stack), state)
            if wanted is None or not nodes:  # what no extension matches goes to the switches
                for at, switch in self._switches(name):
                    self._switch(state, name, at, switch, flags)

    def _extensions(self, name: str, exten: str | None, priority: str = "1") -> list[Node]:
        """The priorities that ``exten`` (None: any string) at ``priority`` reaches in context
        ``name`` or what it includes, searched as Asterisk does: a context's best match, then its
        includes in order."""
        key = (name, exten, priority)
        if key not in self.resolved:
            self.resolved[key] = self._search(name, exten, priority)
        return self.resolved[key]

    def _search(self, name: str, exten: str | None, priority: str) -> list[Node]:
        found: list[Node] = []
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop(0)
            context = self.plan.contexts.get(current)
            if context is None:
                self.missing.add(current)
                continue
            if current in seen:
                continue
            seen.add(current)
            if exten is None:
                keys = list(context.extensions)
            else:
                best = best_match({e.name for e in context.extensions.values()}, exten)
                keys = [k for k, e in context.extensions.items() if e.name == best]
            for k in keys:
                found += [(current, k, p) for p in _priorities(context.extensions[k], priority)]
            if exten is not None and keys:
                return found
            pending[0:0] = context.includes
        return found

    def _switches(self, name: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop(0)
            context = self.plan.contexts.get(current)
            if current in seen or context is None:
                continue
            seen.add(current)
            found += [(current, s) for s in context.switches]
            pending[0:0] = context.includes
        return found

    def _switch(self, state: State | None, entry: str, at: str, switch: str, flags: Flags) -> None:
        """A string no extension matches is looked up through the context's switch."""
        target = switch_target(switch)
        if target.reach is Reach.LOCAL:  # Loopback: the lookup goes on in another context
            for node in self._extensions(target.context, None):
                self._push((node, self._at(node, flags), ()), state, entry)
            return
        if state is None:  # a switch of a starting context is a start of its own
            state = ((at, "(switch)", 0), flags, ())
            self.parent.setdefault(state, None)
            self.entry.setdefault(state, entry)
        self._hit(state, Step(at, "(switch)", 0, "", "switch", switch, ""), target)

    # --- findings ---------------------------------------------------------------------------------

    def _hit(
        self,
        state: State,
        step: Step,
        target: Target,
        kind: Kind | None = None,
        *,
        options: str | None = None,
    ) -> None:
        flags = state[1]
        if flags & Flags.EMERGENCY:
            return
        kind = kind or _judge(step, target, flags, options)
        if kind is None:
            return
        rank = kind.rank + (100 if flags & (Flags.DYNAMIC | Flags.ASSUMED) else 0)
        key = (step.where, target.text)
        if key not in self.hits or rank < self.hits[key][0]:
            self.hits[key] = (rank, kind, step, target, state)

    def findings(self) -> tuple[Finding, ...]:
        app = self.options.app
        found = []
        for _, kind, step, target, state in self.hits.values():
            path, via = self._path(state)
            assumed = path[0] if state[1] & Flags.ASSUMED and path else ""
            found.append(explain(kind, step, target, path, via, app=app, assumed=assumed))
        for step in self.plan.steps():
            if step.where in self.reached or step.app.lower() not in {"dial", "page"}:
                continue
            for text in split_top(split_top(step.data, ",")[0], "&"):
                target = classify(text.strip(), self.options.trunks)
                if target.reach is Reach.TRUNK:
                    found.append(explain(Kind.UNREACHED, step, target, (), None, app=app))
        return tuple(sorted(found, key=lambda f: (f.kind.rank, f.step.where, f.target)))

    def _path(self, state: State) -> tuple[tuple[str, ...], Step | None]:
        """The contexts from the start to ``state`` (without subroutines already returned from),
        and the jump named at run time on the way, if any."""
        contexts: list[str] = []
        via: Step | None = None
        current: State | None = state
        depth = len(state[2])  # a state deeper than this, before it, was in a finished subroutine
        while current is not None:
            parent = self.parent.get(current)
            if len(current[2]) <= depth or current[2] == ():
                depth = len(current[2])
                names = [current[0][0]]
                if parent is None:
                    names.append(self.entry.get(current, ""))
                for name in names:
                    if name and contexts[-1:] != [name]:
                        contexts.append(name)
            if parent is not None and current[1] & Flags.DYNAMIC and not parent[1] & Flags.DYNAMIC:
                node = parent[0]
                via = self.plan.contexts[node[0]].extensions[node[1]].steps.get(node[2])
            current = parent
        return tuple(reversed(contexts)), via
