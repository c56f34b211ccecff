"""The live dialplan as Asterisk reports it, for ``callgate doctor``: contexts, extensions, priorities.

Two readers, one model. :func:`read_show` reads the text of ``asterisk -rx "dialplan show"`` (each line
is ``'exten' =>  N. App(data)  [registrar]``, one ``[ Context 'name' created by '...' ]`` block per
context; the CLI cuts a priority's ``N. App(data)`` at 1023 characters, and hides the label of
priority 1). :func:`read_ami` reads the ``ListDialplan`` events of the AMI action ``ShowDialPlan``
(every field whole, every label). Either gives a :class:`Dialplan`.

Extension names follow Asterisk's patterns (:func:`matches`, :func:`best_match`): ``_`` starts a
pattern, ``X`` ``Z`` ``N`` are digit classes, ``[...]`` a set, ``.`` one or more of anything, ``!`` zero
or more, and ``-`` is ignored. :func:`split_top` splits application arguments as Asterisk does, outside
``()``, ``[]``, ``{}`` and double quotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from callgate.errors import CallgateError

CLI_CUT = 1023  # pbx.c: a priority's "N. App(data)" is printed into a 1024-byte buffer

_CONTEXT = re.compile(r"^\[ (?:Included )?[Cc]ontext '(?P<name>.*)' created by '.*' \]\s*$")
_FIRST = re.compile(r"^  '(?P<name>[^']*)'(?: \(CID match '(?P<cid>[^']*)'\))? =>\s*(?P<rest>.*)$")
_NEXT = re.compile(r"^ {2,}(?:\[(?P<label>[^\]]+)\]\s+)?(?P<rest>\d+\. .*)$")
_INCLUDE = re.compile(r"^  Include =>\s+'(?P<name>.*)'\s+\[[^\]]*\]\s*$")
_SWITCH = re.compile(r"^  Alt\. Switch =>\s+'(?P<name>.*)'\s+\[[^\]]*\]\s*$")
_STEP = re.compile(r"^(?P<prio>\d+)\. (?P<app>[^(\s]*)\((?P<data>.*)\)\s+\[(?P<src>[^\[\]]*)\]\s*$")
_CUT = re.compile(r"^(?P<prio>\d+)\. (?P<app>[^(\s]*)\((?P<data>.*?)\s+\[(?P<src>[^\[\]]*)\]\s*$")
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True, slots=True)
class Step:
    """One priority: where it is, its application and data as written (nothing substituted)."""

    context: str
    extension: str
    priority: int
    label: str
    app: str
    data: str
    source: str  # the registrar: "extensions.conf:12", "pbx_config"
    cut: bool = False  # the CLI printed only the start of the data

    @property
    def where(self) -> str:
        return f"{self.context},{self.extension},{self.priority}"

    @property
    def line(self) -> str:
        return f"{self.app}({self.data}{'...' if self.cut else ')'}"


@dataclass(slots=True)
class Extension:
    """An extension (a name or a pattern) with its priorities, in order, and its labels."""

    name: str
    cid: str = ""  # "(CID match '...')", only in `dialplan show`
    steps: dict[int, Step] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.cid}" if self.cid else self.name


@dataclass(slots=True)
class Context:
    name: str
    extensions: dict[str, Extension] = field(default_factory=dict)  # by Extension.key
    includes: list[str] = field(default_factory=list)
    switches: list[str] = field(default_factory=list)  # "DUNDi/e164", "Loopback/other"


@dataclass(slots=True)
class Dialplan:
    source: str
    contexts: dict[str, Context] = field(default_factory=dict)

    def context(self, name: str) -> Context:
        return self.contexts.setdefault(name, Context(name))

    def steps(self) -> Iterator[Step]:
        for context in self.contexts.values():
            for extension in context.extensions.values():
                yield from extension.steps.values()

    def add(self, step: Step, cid: str = "") -> None:
        context = self.context(step.context)
        extension = Extension(step.extension, cid)
        extension = context.extensions.setdefault(extension.key, extension)
        extension.steps[step.priority] = step
        if step.label:
            extension.labels[step.label] = step.priority


def read_show(text: str, source: str) -> Dialplan:
    """A :class:`Dialplan` from ``dialplan show`` output; a text that holds no context is refused."""
    plan = Dialplan(source)
    context: Context | None = None
    extension: Extension | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if m := _CONTEXT.match(line):
            context, extension = plan.context(m["name"]), None
            continue
        if context is None:
            continue
        if m := _INCLUDE.match(line):
            context.includes.append(m["name"])
        elif m := _SWITCH.match(line):
            context.switches.append(m["name"])
        elif m := _FIRST.match(line):
            extension = Extension(m["name"], m["cid"] or "")
            extension = context.extensions.setdefault(extension.key, extension)
            _add_printed(plan, context, extension, "", m["rest"])
        elif (m := _NEXT.match(line)) and extension is not None:
            _add_printed(plan, context, extension, m["label"] or "", m["rest"])
    if not plan.contexts:
        raise CallgateError(
            f'{source}: no dialplan in it; expected the output of asterisk -rx "dialplan show"'
        )
    return plan


def _add_printed(plan: Dialplan, context: Context, ext: Extension, label: str, rest: str) -> None:
    m = _STEP.match(rest)
    cut = m is None and len(rest.partition("[")[0]) >= CLI_CUT - 60
    if m is None:
        m = _CUT.match(rest)
    if m is None:  # "hint: PJSIP/1000" and anything else that is no priority
        return
    step = Step(context.name, ext.name, int(m["prio"]), label, m["app"], m["data"], m["src"], cut)
    plan.add(step, ext.cid)


def read_ami(events: Iterable[Mapping[str, str]], source: str) -> Dialplan:
    """A :class:`Dialplan` from the ``ListDialplan`` events of ``ShowDialPlan`` (their headers)."""
    plan = Dialplan(source)
    for event in events:
        name = event.get("Context", "")
        if not name:
            continue
        context = plan.context(name)
        if event.get("IncludeContext"):
            context.includes.append(event["IncludeContext"])
        elif event.get("Switch"):
            context.switches.append(event["Switch"])
        elif event.get("Extension") and event.get("Priority", "").isdigit():
            plan.add(
                Step(
                    name,
                    event["Extension"],
                    int(event["Priority"]),
                    event.get("ExtensionLabel", ""),
                    event.get("Application", ""),
                    event.get("AppData", ""),
                    event.get("Registrar", ""),
                )
            )
    if not plan.contexts:
        raise CallgateError(f"{source}: ShowDialPlan listed no context")
    return plan


# --- Asterisk's extension patterns -----------------------------------------------------------------


@lru_cache(maxsize=4096)
def _pattern(name: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """The regex of an extension name and its specificity (a set size per position, as pbx.c
    ranks patterns: a smaller set is more specific; ``.`` and ``!`` rank last)."""
    if not name.startswith("_"):
        return re.compile(re.escape(name)), (1,) * len(name)
    out, rank, i, body = [], [], 0, name[1:]
    while i < len(body):
        c = body[i]
        if c == "[":
            end = body.find("]", i)
            end = len(body) if end < 0 else end
            chars = _charset(body[i + 1 : end])
            out.append("[" + re.escape(chars) + "]" if chars else "(?!)")
            rank.append(len(chars))
            i = end + 1
            continue
        if c in "Xx":
            out.append("[0-9]")
            rank.append(10)
        elif c in "Zz":
            out.append("[1-9]")
            rank.append(9)
        elif c in "Nn":
            out.append("[2-9]")
            rank.append(8)
        elif c == ".":
            out.append(".+")
            rank.append(1000)
        elif c == "!":
            out.append(".*")
            rank.append(1001)
        elif c != "-":
            out.append(re.escape(c))
            rank.append(1)
        i += 1
    return re.compile("".join(out), re.DOTALL), tuple(rank)


def _charset(spec: str) -> str:
    chars, i = [], 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            chars += [chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1)]
            i += 3
        else:
            chars.append(spec[i])
            i += 1
    return "".join(dict.fromkeys(chars))


def matches(name: str, exten: str) -> bool:
    """Whether extension ``name`` (a literal or a ``_`` pattern) matches the dialled ``exten``."""
    return _pattern(name)[0].fullmatch(exten) is not None


def best_match(names: Iterable[str], exten: str) -> str | None:
    """The name Asterisk would pick for ``exten``: a literal first, else the most specific pattern."""
    found = [n for n in names if matches(n, exten)]
    return min(found, key=lambda n: (n.startswith("_"), _pattern(n)[1]), default=None)


def free_text(name: str) -> bool:
    """Whether the pattern matches characters beyond ``0-9 * # +``: ``.`` and ``!`` match anything
    (``/``, ``@``, ``&`` and ``,`` among them), and so do sets that list other characters."""
    if not name.startswith("_"):
        return False
    body, sets = name[1:], re.findall(r"\[([^\]]*)\]", name)
    return (
        "." in re.sub(r"\[[^\]]*\]", "", body)
        or "!" in body
        or any(set(_charset(s)) - set("0123456789*#+") for s in sets)
    )


def literal(text: str) -> bool:
    """Whether ``text`` holds no substitution (``${...}``, ``$[...]``)."""
    return "$" not in text


def split_top(text: str, sep: str) -> list[str]:
    """Split application data on ``sep`` outside brackets and quotes, as Asterisk splits arguments."""
    parts, depth, start, quoted, i = [], [], 0, False, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c in _OPEN:
            depth.append(_OPEN[c])
        elif not quoted and depth and c == depth[-1]:
            depth.pop()
        elif not quoted and not depth and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return parts


def variables(text: str) -> list[str]:
    """The variable and function names of ``text``'s substitutions, in order: ``${OUT_${DIAL_TRUNK}}``
    gives ``OUT_``, ``DIAL_TRUNK``."""
    return re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)
