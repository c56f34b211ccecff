"""Reading the admin's policy YAML into a :class:`~callgate.core.policy.Policy`, naming every problem.

The text is composed, not constructed, with libyaml: every value keeps its line and the text exactly as
written. So money is read from its digits (``0.05`` is ``Decimal("0.05")``, never a float), and ``NO``
(Norway), ``011`` or ``+1900`` stay what the admin typed. Reading never stops at the first problem: the
whole file is checked against the schema tables below, and one :class:`~callgate.errors.PolicyError`
carries every :class:`~callgate.errors.Problem`.

Required: ``version`` (1), ``site`` (``name``, ``region``, ``timezone``, ``currency``), ``emergency`` (may
be ``[]``: forgetting 911 must not be silent), ``rates``, ``profiles`` and ``extensions``. Every other key
is optional; ``docs/policy.md`` gives each default.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
import yaml

from callgate.core import prefixlists
from callgate.core.keys import PERIODS
from callgate.core.numbers import NumberType
from callgate.core.policy import (
    DEFAULT_MAX_CALL_DURATION,
    Alerts,
    Burst,
    Destinations,
    ExtensionRule,
    FailMode,
    HolidayMode,
    Hours,
    Limits,
    Lockdown,
    LockScope,
    Policy,
    PrefixList,
    Profile,
    Rates,
    RuleMode,
    ShortCallAction,
    ShortCalls,
    Site,
    Spend,
    Window,
)
from callgate.core.prefixlists import ListFiles, ListSource, read_prefix_list
from callgate.core.windows import format_duration, parse_duration, parse_window
from callgate.errors import PolicyError, Problem

T = TypeVar("T")
E = TypeVar("E", FailMode, HolidayMode, LockScope, ShortCallAction, NumberType, RuleMode)
Node = yaml.Node
Parse = Callable[["_Reader", Node, str], T | None]

# Limits on what a policy may be (docs/policy.md, "Limits"): a hostile or broken file is refused
# before it costs more than a few megabytes and seconds, with problems that name it.
MAX_BYTES = 2 * 1024 * 1024  # a policy is a few kilobytes; long prefix lists belong in list files
MAX_NODES = 200_000  # keys, values, lists and mappings, each alias counted as all it repeats
MAX_DEPTH = 32  # libyaml's composer recurses in C: a file nested thousands deep would crash it
MAX_PROBLEMS = 100  # listed; the rest are counted
MAX_LIST_BYTES = 64 * 1024 * 1024  # all the range lists of one policy together
_YAML_TAG = "tag:yaml.org,2002:"
_PLAIN = ("str", "int", "float", "bool", "null", "timestamp", "seq", "map")
_TAGS = frozenset({"!", *(_YAML_TAG + t for t in _PLAIN)})  # what plain YAML resolves to
_QUOTED = 400  # the longest source or message of a problem
_LISTS_TOO_LARGE = f"the range lists of one policy may hold {MAX_LIST_BYTES:,} bytes together"
_NO_TAGS = "a policy is plain YAML; remove the tag (quote the value to keep it as text)"
_NULL, _MERGE = "tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
_MONEY = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?", re.ASCII)  # micro-units stay exact in Lua
_WHOLE = re.compile(r"[0-9]{1,9}", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,15}", re.ASCII)
_PLUS_DIGITS = re.compile(r"\+[0-9]{1,15}", re.ASCII)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_MATCH = re.compile(r"\*|[A-Za-z0-9_.@#+-]{1,80}\*?", re.ASCII)
_RANGE = re.compile(r"([0-9]+)-([0-9]+)", re.ASCII)

_PER_EXTENSION = "set it in a profile's limits or an extension's limits"
_MISPLACED = {  # keys that exist, but not where they were written
    "max_call_duration": f"not allowed here: it limits each call; {_PER_EXTENSION}",
    "short_calls": f"not allowed here: it watches each extension; {_PER_EXTENSION}",
    "profile_limits": "not allowed here: it belongs in a profile, beside its limits",
    "mode": "not allowed here: a mode belongs to one rule, such as "
    "calls_per_minute: {value: 4, mode: report} or same_number: {calls: 3, within: 10m, mode: report}",
}


@dataclass(slots=True)
class _Reader:
    """One reading of one file: the problems found so far, and what later sections need."""

    source: str
    problems: list[Problem] = field(default_factory=list)  # the first MAX_PROBLEMS found
    found: int = 0  # every problem found, listed or not
    increment: int = 1  # rates.increment, read before any limits
    profiles: dict[str, Profile] = field(default_factory=dict)  # read before extensions
    read_list: ListSource = field(default_factory=ListFiles)
    lists: dict[str, PrefixList | None] = field(default_factory=dict)  # None: read, but broken
    list_bytes: int = 0  # the range lists' text read so far, in bytes

    def problem(self, where: Node | int, path: str, message: str) -> None:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        self.add(Problem(self.source, line, path, message))

    def add(self, problem: Problem) -> None:
        """Record a problem; past MAX_PROBLEMS it is only counted (load_policy says how many). What a
        file wrote is quoted in a problem at most ``_QUOTED`` characters long."""
        self.found += 1
        if len(self.problems) < MAX_PROBLEMS:
            source, message = _clipped(problem.source), _clipped(problem.message)
            self.problems.append(replace(problem, source=source, message=message))

    def hint(self, word: str, choices: Iterable[str]) -> str:
        """:func:`_hint`, unless the problem will not be listed: a hostile file cannot make the
        reader compare thousands of names for messages nobody reads."""
        return _hint(word, choices) if len(self.problems) < MAX_PROBLEMS else ""

    def refused(self) -> PolicyError:
        """Every problem listed, and how many more were found but not listed."""
        unlisted = self.found - len(self.problems)
        if not unlisted:
            return PolicyError(self.problems)
        more = f"{unlisted:,} more problems not listed: only the first {MAX_PROBLEMS} are; "
        return PolicyError([*self.problems, Problem(self.source, 0, "", more + "fix these first")])


@dataclass(frozen=True, slots=True)
class _Key:
    """One key of a schema: how its value is read, what it must be when required, the model's name."""

    parse: Parse[Any]
    need: str = ""  # set: the key is required, and this says what is expected
    attr: str = ""  # the dataclass field, when it is not the key


# --- entry points -------------------------------------------------------------------------------


def load_policy(text: str, source: str, *, read_list: ListSource | None = None) -> Policy:
    """The policy in ``text``; raises :class:`PolicyError` with every problem (``source`` names the file).

    ``read_list`` gives the text of each range list the policy names (``{file: NAME}``): a mapping of
    name to text (a policy stored with its lists reads nothing from disk), or a function. By default
    ``callgate:NAME`` is a list shipped with callgate and any other name a file, relative to the current
    directory. The digest covers the lists' texts too: a changed list is a changed policy.

    Hostile text is refused before it costs much (docs/policy.md, "Limits"): more than ``MAX_BYTES``
    of text, more than ``MAX_NODES`` YAML nodes counting each alias as all it repeats, nesting deeper
    than ``MAX_DEPTH``, tags other than YAML's own. At most ``MAX_PROBLEMS`` problems are listed.
    """
    r = _Reader(source, read_list=ListFiles() if read_list is None else read_list)
    root = _compose(r, text)
    values = _section(r, root, "", _TOP, line=0) if root is not None else None
    if values is None or r.found:
        raise r.refused()
    lists = tuple(sorted((found for found in r.lists.values() if found), key=lambda f: f.name))
    digest = hashlib.sha256(text.encode("utf-8"))
    for found in lists:
        digest.update(f"\0{found.name}\0{found.digest}".encode())
    return Policy(**values, source=source, digest=digest.hexdigest(), lists=lists)


def load_policy_file(path: str | Path, *, read_list: ListSource | None = None) -> Policy:
    """The policy in the UTF-8 file at ``path``; ``OSError`` when it cannot be read.

    Range lists named by a relative path are read from the policy file's directory.
    """
    text = read_policy_text(path)
    lists = ListFiles(Path(path).parent) if read_list is None else read_list
    return load_policy(text, str(path), read_list=lists)


def read_policy_text(path: str | Path) -> str:
    """The text of the policy file at ``path``: at most ``MAX_BYTES + 1`` bytes are read, so a huge
    file, or ``/dev/zero``, is refused at once. :class:`PolicyError` names the file when it is too
    large or not UTF-8; ``OSError`` when it cannot be read."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise PolicyError([Problem(str(path), 0, "", _too_large())])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError([Problem(str(path), line, "", "not UTF-8 text")]) from None


def _too_large() -> str:
    return (
        f"larger than {MAX_BYTES:,} bytes, the most a policy may be; "
        "a policy is a few kilobytes: keep long prefix lists in list files ({file: ...})"
    )


# --- YAML to nodes ------------------------------------------------------------------------------


def _compose(r: _Reader, text: str) -> Node | None:
    """The document's root node, or None (the problem recorded) when the text is not usable YAML.

    Nothing is composed until :func:`_shape` has read libyaml's events and found the text within
    bounds: composing keeps every node (about 400 bytes each), reading events keeps none.
    """
    try:
        if len(text.encode("utf-8")) > MAX_BYTES:
            r.problem(0, "", _too_large())
            return None
        if not _shape(r, text):
            return None
        root = yaml.compose(text, Loader=yaml.CSafeLoader)
    except UnicodeEncodeError as exc:
        r.problem(text[: exc.start].count("\n") + 1, "", "not valid Unicode text")
        return None
    except yaml.MarkedYAMLError as exc:
        mark, since = exc.problem_mark or exc.context_mark, exc.context_mark
        context = f" ({exc.context} at line {since.line + 1})" if exc.context and since else ""
        line = mark.line + 1 if mark is not None else 0
        r.problem(line, "", f"not valid YAML: {exc.problem}{context}")
        return None
    except yaml.YAMLError as exc:  # a reader error: a character YAML does not allow
        line = text.encode("utf-8")[: getattr(exc, "position", 0)].count(b"\n") + 1
        r.problem(line, "", f"not valid YAML: {str(exc).splitlines()[0]}")
        return None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        r.problem(0, "", "the file is empty; expected a policy that starts with version: 1")
        return None
    return root


@dataclass(slots=True)
class _Open:
    """A list or mapping whose events are being read: where it is and what it holds so far."""

    path: str
    mapping: bool
    anchor: str | None
    start: int  # the nodes counted before it
    children: int = 0  # keys and values of a mapping, items of a list
    key: str = ""  # a mapping's last key


def _shape(r: _Reader, text: str) -> bool:
    """Whether ``text`` may be composed: from libyaml's events, which are read one at a time and kept
    by no one, check the nesting (MAX_DEPTH), the number of nodes the reader would visit, counting an
    alias as every node it repeats (MAX_NODES: the alias bomb of docs/policy.md), aliases inside their
    own anchor, and tags (only YAML's own: ``!!python/...`` and custom tags are refused). Each problem
    names its line and key path."""
    nodes = 0
    sizes: dict[str, int] = {}  # anchor -> the nodes an alias of it repeats
    stack: list[_Open] = []
    ok = True
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = nodes - done.start
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        line = event.start_mark.line + 1 if event.start_mark else 0
        path = _event_path(stack[-1] if stack else None, event)
        if isinstance(event, yaml.AliasEvent):
            name = str(event.anchor)
            if any(o.anchor == name for o in stack):
                r.problem(line, path, f"the alias *{name} is inside its own anchor &{name}")
                return False
            repeats = sizes.get(name, 1)
            nodes += repeats
            if nodes > MAX_NODES:
                r.problem(line, path, _too_many(f"the alias *{name} repeats {repeats:,} nodes; "))
                return False
            continue
        nodes += 1
        if nodes > MAX_NODES:
            r.problem(line, path, _too_many(""))
            return False
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _TAGS:
            shown = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            r.problem(line, path, f"unsupported tag {shown}: {_NO_TAGS}")
            ok = False
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                r.problem(line, "", f"nested more than {MAX_DEPTH} levels deep")
                return False
            mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append(_Open(path, mapping, event.anchor, nodes - 1))
        elif event.anchor is not None:
            sizes[event.anchor] = 1
    return ok


def _event_path(parent: _Open | None, event: yaml.NodeEvent) -> str:
    """The key path of the node ``event`` starts; counts it as its parent's next child."""
    if parent is None:
        return ""
    n, parent.children = parent.children, parent.children + 1
    if not parent.mapping:
        return _join(parent.path, n)
    if n % 2 == 0:  # a key: its path is the key's own
        parent.key = str(event.value) if isinstance(event, yaml.ScalarEvent) else "?"
    return _join(parent.path, parent.key)


def _too_many(why: str) -> str:
    return (
        f"too many YAML nodes: {why}a policy may hold {MAX_NODES:,} (each key, value, list and "
        "mapping counts one; an alias counts every node it repeats)"
    )


# --- mappings and lists -------------------------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    """``path.key`` or ``path[n]``. A long key is clipped: every node below it has this path, and a
    key of a megabyte (``? ...`` may be that long) must not be copied for each of them."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key if len(key) <= 64 else key[:61] + "..."
    return f"{path}.{key}" if path else key


def _clipped(text: str) -> str:
    return text if len(text) <= _QUOTED else text[: _QUOTED - 3] + "..."


def _shown(node: Node) -> str:
    """How a wrong value is quoted back in a message."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    value = str(node.value)
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _hint(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for a close choice, else the choices when there are few."""
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1) if len(word) <= 100 else []
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(options)}" if 0 < len(options) <= 12 else ""


def _pairs(r: _Reader, node: Node, path: str, what: str) -> list[tuple[str, Node, Node]]:
    """(name, key node, value node) of each entry; duplicate keys and merge keys are problems."""
    if not isinstance(node, yaml.MappingNode):
        r.problem(node, path, f"expected {what}, got {_shown(node)}")
        return []
    seen: dict[str, int] = {}
    out: list[tuple[str, Node, Node]] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            r.problem(key, path, f"expected a key name, got {_shown(key)}")
        elif key.tag == _MERGE:
            r.problem(key, path, "merge keys (<<) are not supported; reuse a mapping with *alias")
        elif key.value in seen:
            where = f"first at line {seen[key.value]}"
            r.problem(key, _join(path, key.value), f"duplicate key ({where}); write each key once")
        else:
            seen[key.value] = key.start_mark.line + 1
            out.append((str(key.value), key, value))
    return out


def _section(
    r: _Reader, node: Node, path: str, schema: Mapping[str, _Key], *, line: int | None = None
) -> dict[str, Any] | None:
    """Read a mapping by its schema: the model's keyword arguments, or None when it cannot be built.

    Keys are read in schema order (rates before profiles before extensions), whatever the file's order.
    The keys whose rule is in ``mode: report`` are named in the ``report`` argument.
    """
    found: dict[str, Node] = {}
    for name, key, value in _pairs(r, node, path, f"a mapping with keys {', '.join(schema)}"):
        if name in schema:
            found[name] = value
        else:
            message = _MISPLACED.get(name) or f"unknown key {name!r}{r.hint(name, schema)}"
            r.problem(key, _join(path, name), message)
    if not isinstance(node, yaml.MappingNode):
        return None
    values: dict[str, Any] = {}
    report: set[str] = set()
    complete = True
    for name, spec in schema.items():
        if name not in found:
            if spec.need:
                where = node.start_mark.line + 1 if line is None else line
                r.problem(where, _join(path, name), f"missing; expected {spec.need}")
                complete = False
            continue
        parsed = spec.parse(r, found[name], _join(path, name))
        if isinstance(parsed, _Moded):
            report |= _report_names(name, parsed.value) if parsed.report else set()
            parsed = parsed.value
        if parsed is not None:
            values[spec.attr or name] = parsed
        complete = complete and (parsed is not None or not spec.need)
    if report:
        values["report"] = frozenset(report)
    return values if complete else None


def _model(model: Callable[..., T], schema: Mapping[str, _Key]) -> Parse[T]:
    """A parser that reads a mapping by ``schema`` and builds ``model`` from it."""

    def parse(r: _Reader, node: Node, path: str) -> T | None:
        values = _section(r, node, path, schema)
        return None if values is None else model(**values)

    return parse


# --- report mode --------------------------------------------------------------------------------


class _Moded(NamedTuple, Generic[T]):  # a NamedTuple: mypyc cannot build a generic dataclass
    """A rule's value and whether it is in ``mode: report``; :func:`_section` unwraps it."""

    value: T
    report: bool


def _report_names(key: str, value: object) -> set[str]:
    """The names a rule in report mode adds to its section's ``report``: spend names each period."""
    if isinstance(value, Spend):
        return {f"{key}.{period}" for period, _ in value.items()}
    return {key}


def _moded(parse: Parse[T], example: str) -> Parse[_Moded[T]]:
    """A rule written as its value, or in long form ``{value: ..., mode: report}``."""
    schema = {"value": _Key(parse, f"the rule's value: {example}"), "mode": _Key(_choice(RuleMode))}

    def read(r: _Reader, node: Node, path: str) -> _Moded[T] | None:
        if not isinstance(node, yaml.MappingNode):
            value = parse(r, node, path)
            return None if value is None else _Moded(value, False)
        values = _section(r, node, path, schema)
        if values is None:
            return None
        return _Moded(values["value"], values.get("mode") is RuleMode.REPORT)

    return read


def _moded_model(model: Callable[..., T], schema: Mapping[str, _Key]) -> Parse[_Moded[T]]:
    """A rule whose value is a mapping: ``mode: report`` is one more key of it."""
    with_mode = {**schema, "mode": _Key(_choice(RuleMode))}

    def read(r: _Reader, node: Node, path: str) -> _Moded[T] | None:
        values = _section(r, node, path, with_mode)
        if values is None:
            return None
        report = values.pop("mode", RuleMode.ENFORCE) is RuleMode.REPORT
        return _Moded(model(**values), report)

    return read


def _items(r: _Reader, node: Node, path: str, example: str) -> list[Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    r.problem(node, path, f"expected a list such as {example}, got {_shown(node)}")
    return []


def _many(item: Parse[T], example: str) -> Parse[list[T]]:
    """A parser of a list whose items ``item`` reads; the readable items are kept."""

    def parse(r: _Reader, node: Node, path: str) -> list[T]:
        items = _items(r, node, path, example)
        values = (item(r, one, _join(path, n)) for n, one in enumerate(items))
        return [v for v in values if v is not None]

    return parse


def _set(item: Parse[T], example: str) -> Parse[frozenset[T]]:
    many = _many(item, example)
    return lambda r, node, path: frozenset(many(r, node, path) or ())


def _tuple(item: Parse[T], example: str) -> Parse[tuple[T, ...]]:
    many = _many(item, example)
    return lambda r, node, path: tuple(many(r, node, path) or ())


# --- scalars ------------------------------------------------------------------------------------


def _scalar_text(r: _Reader, node: Node, path: str, what: str = "text") -> str | None:
    """The scalar as written, quoted or not; nothing, lists and mappings are problems."""
    if isinstance(node, yaml.ScalarNode) and node.tag != _NULL:
        return str(node.value)
    r.problem(node, path, f"expected {what}, got {_shown(node)}")
    return None


def _pattern(pattern: re.Pattern[str], what: str, strip: int = 0) -> Parse[str]:
    """Text that ``pattern`` matches whole, less its first ``strip`` characters."""

    def parse(r: _Reader, node: Node, path: str) -> str | None:
        text = _scalar_text(r, node, path, what)
        if text is None or pattern.fullmatch(text):
            return None if text is None else text[strip:]
        r.problem(node, path, f"expected {what}, got {_shown(node)}")
        return None

    return parse


_site_name = _pattern(
    _NAME, "a name of letters, digits, '.', '_' or '-' (it is part of Redis keys)"
)
_currency = _pattern(_CURRENCY, "an ISO 4217 currency code such as USD")
_dialled = _pattern(_DIGITS, 'digits as dialled, such as "9"')
_emergency = _pattern(_DIGITS, 'an emergency number as digits, such as "911"')
_rate_prefix = _pattern(_DIGITS, 'an E.164 prefix as digits without "+", such as "44"')
_e164_prefix = _pattern(
    _PLUS_DIGITS, 'an E.164 prefix: "+" then digits, such as "+1900", or {file: NAME}', 1
)


def _money(r: _Reader, node: Node, path: str) -> Decimal | None:
    text = _scalar_text(r, node, path, "an amount such as 0.05")
    if text is None or _MONEY.fullmatch(text):
        return None if text is None else Decimal(text)
    why = "must not be negative" if text.startswith("-") else "expected an amount"
    r.problem(node, path, f"{why}: digits with at most 6 decimals such as 0.05; got {_shown(node)}")
    return None


def _whole(least: int, most: int = 10**9 - 1) -> Parse[int]:
    def parse(r: _Reader, node: Node, path: str) -> int | None:
        text = _scalar_text(r, node, path, f"a whole number from {least}")
        if text is not None and _WHOLE.fullmatch(text) and least <= int(text) <= most:
            return int(text)
        if text is not None:
            r.problem(
                node, path, f"expected a whole number from {least} to {most}, got {_shown(node)}"
            )
        return None

    return parse


def _version(r: _Reader, node: Node, path: str) -> int | None:
    text = _scalar_text(r, node, path, "1")
    if text == "1":
        return 1
    if text is not None:
        r.problem(node, path, f"unsupported version {_shown(node)}; this callgate reads version 1")
    return None


def _duration(most: int) -> Parse[int]:
    def parse(r: _Reader, node: Node, path: str) -> int | None:
        text = _scalar_text(r, node, path, "a duration such as 10m")
        try:
            seconds = parse_duration(text) if text is not None else None
        except ValueError as exc:
            r.problem(node, path, str(exc))
            return None
        if seconds is not None and not 1 <= seconds <= most:
            r.problem(
                node, path, f"expected a duration from 1s to {format_duration(most)}, got {text!r}"
            )
            return None
        return seconds

    return parse


_within = _duration(31 * 86400)  # sliding windows: counters live that long in Redis
_seconds = _duration(86400)


def _call_length(r: _Reader, node: Node, path: str) -> int | None:
    seconds = _seconds(r, node, path)
    if seconds is not None and seconds < r.increment:
        r.problem(
            node, path, f"shorter than the billing increment ({r.increment}s): no call would fit"
        )
        return None
    return seconds


def _window(r: _Reader, node: Node, path: str) -> Window | None:
    text = _scalar_text(r, node, path, "a time window such as 'mon-fri 08:00-18:00'")
    try:
        return parse_window(text) if text is not None else None
    except ValueError as exc:
        r.problem(node, path, str(exc))
        return None


def _flag(r: _Reader, node: Node, path: str) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return str(node.value).lower() in {"true", "yes", "on"}
    r.problem(node, path, f"expected true or false, got {_shown(node)}")
    return None


def _choice(kind: type[E]) -> Parse[E]:
    names = [member.value for member in kind]

    def parse(r: _Reader, node: Node, path: str) -> E | None:
        text = _scalar_text(r, node, path, f"one of {', '.join(names)}")
        if text is None or text in names:
            return None if text is None else kind(text)
        r.problem(node, path, f"unknown value {_shown(node)}{r.hint(text, names)}")
        return None

    return parse


def _region(word: str) -> Parse[str]:
    def parse(r: _Reader, node: Node, path: str) -> str | None:
        code = _scalar_text(r, node, path, f"a {word} code such as US")
        if code is None or code in _REGIONS:
            return code
        upper = f"; write {code.upper()!r}" if code.upper() in _REGIONS else ""
        expected = "an ISO 3166 alpha-2 code that libphonenumber knows, such as US or GB"
        r.problem(node, path, f"unknown {word} {code!r}: expected {expected}{upper}")
        return None

    return parse


def _zone(r: _Reader, node: Node, path: str) -> ZoneInfo | None:
    key = _scalar_text(r, node, path, "an IANA time zone such as America/New_York")
    if key is None:
        return None
    try:
        return ZoneInfo(key)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        hint = r.hint(key, available_timezones())
        r.problem(
            node, path, f"unknown time zone {key!r}: expected one such as America/New_York{hint}"
        )
        return None


def _holiday(r: _Reader, node: Node, path: str) -> date | None:
    text = _scalar_text(r, node, path, 'an ISO date such as "2026-12-25"')
    if text is None:
        return None
    try:
        if _ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    r.problem(node, path, f'expected an ISO date YYYY-MM-DD such as "2026-12-25", got {text!r}')
    return None


def _webhook(r: _Reader, node: Node, path: str) -> str | None:
    url = _scalar_text(r, node, path, "an http(s) URL")
    try:
        if url is None or (urlsplit(url).scheme in {"http", "https"} and urlsplit(url).hostname):
            return url
    except ValueError:
        pass
    r.problem(node, path, f"expected an http:// or https:// URL, got {_shown(node)}")
    return None


# --- sections -----------------------------------------------------------------------------------


def _rates(r: _Reader, node: Node, path: str) -> Rates | None:
    before = r.found
    values = _section(r, node, path, _RATES)
    if values is None:
        return None
    if r.found == before and "default" not in values and not values.get("prefixes"):
        r.problem(
            node, path, "expected a default and/or prefixes; without either every call is denied"
        )
    r.increment = values.get("increment", 1)
    prefixes: dict[str, Decimal] = values.get("prefixes", {})
    return Rates(**{"default": None, **values}, longest=max(map(len, prefixes), default=0))


def _prefix_rates(r: _Reader, node: Node, path: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for name, key, value in _pairs(
        r, node, path, 'a mapping of prefixes to rates, such as {"44": 0.02}'
    ):
        prefix, rate = _rate_prefix(r, key, _join(path, name)), _money(r, value, _join(path, name))
        if prefix is not None and rate is not None:
            out[prefix] = rate
    return out


def _destinations(r: _Reader, node: Node, path: str) -> Destinations | None:
    """The destination rules; an allow list and a deny list of the same thing cannot be mixed."""
    pairs = node.value if isinstance(node, yaml.MappingNode) else []
    keys = {key.value: key for key, _ in pairs if isinstance(key, yaml.ScalarNode)}
    for kind in ("countries", "number_types"):
        allow, deny = f"allow_{kind}", f"deny_{kind}"
        if allow in keys and deny in keys:
            message = f"{allow} and {deny} cannot both be set; keep one"
            r.problem(keys[deny], _join(path, deny), message)
    values = _section(r, node, path, _DESTINATIONS)
    if values is None:
        return None
    lists: dict[str, str] = {}
    for key in ("deny_prefixes", "allow_prefixes"):
        if key in values:
            lists.update(values[key].lists)
            values[key] = values[key].prefixes
    return Destinations(**values, prefix_lists=lists)


@dataclass(frozen=True, slots=True)
class _Prefixes:
    """``deny_prefixes`` or ``allow_prefixes``: every prefix, and the list each file-read one is from."""

    prefixes: tuple[str, ...]
    lists: dict[str, str]


def _prefix_entries(example: str, mapping: str = "") -> Parse[_Prefixes]:
    """A list of "+digits" and ``{file: NAME}`` entries; ``mapping`` says why a mapping is wrong."""
    list_file = {
        "file": _Key(_scalar_text, "the name of a list file, such as {file: lists/irsf.txt}")
    }

    def parse(r: _Reader, node: Node, path: str) -> _Prefixes | None:
        if mapping and isinstance(node, yaml.MappingNode):
            r.problem(node, path, f"{mapping}; expected a list such as {example}")
            return None
        found: dict[str, str | None] = {}  # every prefix, in order, each once -> its list or None
        lists: dict[str, str] = {}  # digits -> the first list that names them
        for n, item in enumerate(_items(r, node, path, example)):
            where = _join(path, n)
            if not isinstance(item, yaml.MappingNode):
                prefix = _e164_prefix(r, item, where)
                if prefix is not None:
                    found.setdefault(prefix)
                continue
            values = _section(r, item, where, list_file)
            listed = _prefix_list(r, item, where, values["file"]) if values else None
            if listed is not None:  # dict operations, not a loop: a list may hold a million ranges
                fresh = dict.fromkeys(listed.prefixes, listed.name)
                for prefix in found.keys() & fresh.keys():
                    del fresh[prefix]
                found.update(fresh)
                lists.update(fresh)
        return _Prefixes(tuple(found), lists)

    return parse


def _prefix_list(r: _Reader, node: Node, path: str, name: str) -> PrefixList | None:
    """The range list ``name``, read once per policy; its problems name the list file and its line."""
    if name in r.lists:
        return r.lists[name]
    where = _join(path, "file")
    label = r.read_list.where(name) if isinstance(r.read_list, ListFiles) else name
    r.lists[name] = None
    if r.list_bytes >= MAX_LIST_BYTES:  # checked before reading: naming a list costs one line
        r.problem(node, where, f"cannot read the list {name!r}: {_LISTS_TOO_LARGE}")
        return None
    try:
        text = r.read_list[name] if isinstance(r.read_list, Mapping) else r.read_list(name)
    except KeyError:
        r.problem(node, where, f"cannot read the list {name!r}: it is not among the lists given")
        return None
    except (OSError, ValueError) as exc:
        why = str(exc)
        if isinstance(exc, OSError) and exc.strerror:  # an OS error's own text has no path
            why = f"{exc.strerror}: {exc.filename}"
        r.problem(node, where, f"cannot read the list {name!r}: {why}")
        return None
    size = len(text.encode("utf-8"))
    r.list_bytes += size
    if size > prefixlists.MAX_BYTES or r.list_bytes > MAX_LIST_BYTES:  # text given is checked too
        one = size > prefixlists.MAX_BYTES
        why = f"larger than {prefixlists.MAX_BYTES:,} bytes" if one else ""
        r.problem(node, where, f"cannot read the list {name!r}: {why or _LISTS_TOO_LARGE}")
        return None
    found, problems = read_prefix_list(text, name)
    for line, message in problems:
        r.add(Problem(label, line, where, message))
    r.lists[name] = found
    return found


def _profiles(r: _Reader, node: Node, path: str) -> dict[str, Profile]:
    for name, key, value in _pairs(r, node, path, "a mapping of profile names to profiles"):
        if not _NAME.fullmatch(name):
            r.problem(
                key,
                _join(path, name),
                "expected a profile name of letters, digits, '.', '_' or '-'",
            )
        values = _section(r, value, _join(path, name), _PROFILE)
        r.profiles[name] = Profile(name, **(values or {}))
    if isinstance(node, yaml.MappingNode) and not node.value:
        r.problem(node, path, "expected at least one profile")
    return r.profiles


def _endpoints(r: _Reader, node: Node, path: str) -> dict[str, str]:
    """``endpoints: {alice-desk: "1005"}``: the extension a PJSIP endpoint is charged as."""
    out: dict[str, str] = {}
    for name, key, value in _pairs(r, node, path, "a mapping of endpoint names to extensions"):
        if not _NAME.fullmatch(name):
            r.problem(
                key,
                _join(path, name),
                "expected an endpoint name of letters, digits, '.', '_' or '-'",
            )
            continue
        extension = _scalar_text(r, value, _join(path, name), "an extension")
        if extension is not None and not _NAME.fullmatch(extension):
            r.problem(
                value,
                _join(path, name),
                "expected an extension of letters, digits, '.', '_' or '-'",
            )
        elif extension is not None:
            out[name] = extension
    return out


def _profile_ref(r: _Reader, node: Node, path: str) -> Profile | None:
    name = _scalar_text(r, node, path, "a profile name")
    if name is None or name in r.profiles:
        return None if name is None else r.profiles[name]
    r.problem(node, path, f"unknown profile {name!r}{r.hint(name, r.profiles)}")
    return None


def _extensions(r: _Reader, node: Node, path: str) -> tuple[ExtensionRule, ...]:
    items = _items(r, node, path, '[{match: "1001-1020", profile: office}]')
    if isinstance(node, yaml.SequenceNode) and not items:
        r.problem(node, path, "expected at least one entry; without one every call is refused")
    rules: list[ExtensionRule] = []
    earlier: dict[str, int] = {}  # match -> line, to find entries that can never match
    for n, item in enumerate(items):
        values = _section(r, item, _join(path, n), _RULE)
        if values is None:
            continue
        rule = ExtensionRule(
            values["match"],
            values["profile"],
            merge_limits(values["profile"].limits, values.get("limits", Limits())),
            item.start_mark.line + 1,
        )
        _reachable(r, rule, earlier, _join(_join(path, n), "match"))
        rules.append(rule)
    return tuple(rules)


def _match(r: _Reader, node: Node, path: str) -> str | None:
    what = (
        'an extension such as "2000", a range such as "1001-1020", a prefix such as "10*", or "*"'
    )
    text = _pattern(_MATCH, what)(r, node, path)
    bounds = _RANGE.fullmatch(text or "")
    if not bounds:
        return text
    low, high = bounds[1], bounds[2]
    if int(low) <= int(high) and len(low) <= len(high):
        return text
    swapped = f"{high}-{low}"
    fix = swapped if int(high) <= int(low) and len(high) <= len(low) else "1001-1020"
    r.problem(
        node, path, f'the range {text!r} is backwards: it matches no extension; write "{fix}"'
    )
    return None


def _reachable(r: _Reader, rule: ExtensionRule, earlier: dict[str, int], path: str) -> None:
    """An entry after ``"*"`` or after the same pattern can never match: a rule silently off."""
    for pattern in (rule.match, "*"):
        if pattern in earlier:
            line = earlier[pattern]
            r.problem(
                rule.line, path, f"never used: the entry at line {line} ({pattern!r}) matches first"
            )
            break
    earlier.setdefault(rule.match, rule.line)


def merge_limits(base: Limits, over: Limits) -> Limits:
    """``over``'s limits that are set, over ``base``, field by field; spend merges per period.

    Modes merge the same way: a limit that ``over`` sets takes ``over``'s mode (enforce unless it says
    ``mode: report``); every other limit keeps ``base``'s.
    """
    spend = {p: _first(getattr(over.spend, p), getattr(base.spend, p)) for p in PERIODS}
    changes = {
        name: getattr(over, name)
        for name in Limits.__dataclass_fields__
        if name not in {"spend", "report"} and getattr(over, name) is not None
    }
    overridden = {*changes, *(f"spend.{period}" for period, _ in over.spend.items())}
    report = (base.report - overridden) | over.report
    return replace(base, **changes, spend=Spend(**spend), report=frozenset(report))


def _first(over: T | None, base: T | None) -> T | None:
    return base if over is None else over


# --- the schema ---------------------------------------------------------------------------------

_count, _at_least_one = _whole(0), _whole(1)
_country = _region("country")
_RATES = {
    "default": _Key(_money),
    "increment": _Key(_whole(1, 3600)),
    "prefixes": _Key(_prefix_rates),
}
_SITE = {
    "name": _Key(_site_name, "a site name such as acme-nyc"),
    "region": _Key(_region("region"), "a libphonenumber region such as US"),
    "timezone": _Key(_zone, "an IANA time zone such as America/New_York"),
    "currency": _Key(_currency, "an ISO 4217 currency code such as USD"),
    "outside_line": _Key(_tuple(_dialled, '["9"]')),
    "on_store_error": _Key(_choice(FailMode)),
}
_NO_MODE = "allow_prefixes has no mode: it only lets calls through"
_DESTINATIONS = {
    "allow_countries": _Key(_moded(_set(_country, "[US, CA]"), "[US, CA]")),
    "deny_countries": _Key(_moded(_set(_country, "[CU]"), "[CU]")),
    "allow_number_types": _Key(
        _moded(_set(_choice(NumberType), "[fixed_line, mobile]"), "[fixed_line, mobile]")
    ),
    "deny_number_types": _Key(
        _moded(_set(_choice(NumberType), "[premium_rate]"), "[premium_rate]")
    ),
    "deny_prefixes": _Key(
        _moded(_prefix_entries('["+1900", {file: callgate:irsf-starter}]'), '["+1900"]')
    ),
    "allow_prefixes": _Key(_prefix_entries('["+18005551"]', _NO_MODE)),
    "max_rate": _Key(_moded(_money, '"0.50"')),
}
_HOURS = {
    "international": _Key(_moded(_window, '"mon-fri 08:00-18:00"')),
    "any": _Key(_moded(_window, '"mon-sun 00:00-24:00"')),
    "on_holidays": _Key(_moded(_choice(HolidayMode), "domestic_only")),
}
_WITHIN = _Key(_within, "a sliding window such as 10m")
_COUNT = _Key(_moded(_count, "4"))
_CALLS_WITHIN = {"calls": _Key(_at_least_one, "a count", "count"), "within": _WITHIN}
_NUMBERS_WITHIN = {"numbers": _Key(_at_least_one, "a count", "count"), "within": _WITHIN}
_GROUP_LIMITS = {
    "calls_per_minute": _COUNT,
    "calls_per_hour": _COUNT,
    "international_calls_per_hour": _COUNT,
    "concurrent_calls": _COUNT,
    "same_number": _Key(_moded_model(Burst, _CALLS_WITHIN)),
    "distinct_numbers": _Key(_moded_model(Burst, _NUMBERS_WITHIN)),
    "spend": _Key(_moded_model(Spend, {period: _Key(_money) for period in PERIODS})),
}
_SHORT_CALLS = {
    "calls": _Key(_at_least_one, "how many short calls"),
    "shorter_than": _Key(_seconds, "a duration such as 15s"),
    "within": _WITHIN,
    "then": _Key(_choice(ShortCallAction)),
}
_LIMITS = {
    **_GROUP_LIMITS,
    "short_calls": _Key(_moded_model(ShortCalls, _SHORT_CALLS)),
    "max_call_duration": _Key(_moded(_call_length, "2h")),
}
_PROFILE = {
    "destinations": _Key(_destinations),
    "hours": _Key(_model(Hours, _HOURS)),
    "limits": _Key(_model(Limits, _LIMITS)),
    "profile_limits": _Key(_model(Limits, _GROUP_LIMITS), attr="group_limits"),
}
_RULE = {
    "match": _Key(_match, 'an extension, a range such as "1001-1020", or "*"'),
    "profile": _Key(_profile_ref, "a profile name"),
    "limits": _Key(_model(Limits, _LIMITS)),
}
_LOCKDOWN = {
    "after_denied": _Key(_moded_model(Burst, _CALLS_WITHIN), "{calls: N, within: DURATION}"),
    "locks": _Key(_choice(LockScope)),
}
_TOP = {  # read in this order: rates (the increment) before limits, profiles before extensions
    "version": _Key(_version, "the policy format version: version: 1"),
    "site": _Key(_model(Site, _SITE), "a mapping with name, region, timezone and currency"),
    "emergency": _Key(
        _tuple(_emergency, '["911"]'), 'the emergency numbers, such as ["911"], or []'
    ),
    "rates": _Key(_rates, "a rate table with a default and/or prefixes"),
    "holidays": _Key(_set(_holiday, '["2026-12-25"]')),
    "site_limits": _Key(_model(Limits, _GROUP_LIMITS)),
    "profiles": _Key(_profiles, "a mapping of profile names to profiles"),
    "extensions": _Key(_extensions, "a list of {match, profile} entries"),
    "endpoints": _Key(_endpoints),
    "lockdown": _Key(_model(Lockdown, _LOCKDOWN)),
    "alerts": _Key(_model(Alerts, {"webhook": _Key(_webhook), "syslog": _Key(_flag)})),
}


# --- describe -----------------------------------------------------------------------------------


def describe(policy: Policy, today: date | None = None) -> list[str]:
    """A human summary, one line per item, for ``callgate policy check``.

    With ``today`` (the site's local date), range lists past their expiry date get a warning line.
    """
    site, rates = policy.site, policy.rates
    default = "no default (unrated numbers are denied)"
    if rates.default is not None:
        default = f"default {rates.default}/min"
    lines = [
        f"site {site.name}: region {site.region}, time zone {site.timezone.key}, "
        f"currency {site.currency}, outside line {', '.join(site.outside_line) or 'none'}, "
        f"store unreachable: {site.on_store_error}",
        f"emergency (always allowed, never counted): {', '.join(policy.emergency) or 'none'}",
        f"rates: {len(rates.prefixes)} prefixes, {default}, billed per {rates.increment}s",
        f"holidays: {', '.join(sorted(d.isoformat() for d in policy.holidays)) or 'none'}",
    ]
    for profile in policy.profiles.values():
        lines += _describe_profile(profile)
    lines.append("extensions (first match wins):")
    for rule in policy.extensions:
        own = _caps(_changed(rule.profile.limits, rule.limits))
        own = "" if own == "none" else f" with its own limits: {own}"
        enforced = ", ".join(sorted(rule.profile.limits.report - rule.limits.report))
        own += f"; enforces what the profile only reports: {enforced}" if enforced else ""
        lines.append(f"  {rule.match} -> {rule.profile.name}{own}")
    if not any(rule.match == "*" for rule in policy.extensions):
        lines.append("  any other extension is refused (unknown_extension)")
    lines.append(f"site limits (all extensions together): {_caps(policy.site_limits)}")
    lines += _describe_lists(policy, today)
    report = ", ".join(_report_paths(policy)) or "none"
    lines.append(f"report only (checked and logged, never denied): {report}")
    if policy.lockdown is not None:
        after = policy.lockdown.after_denied
        lines.append(
            f"lockdown: {after.count} denied calls within {format_duration(after.within)} "
            f"lock the extension ({policy.lockdown.locks})"
        )
    alerts = [f"webhook {policy.alerts.webhook}"] if policy.alerts.webhook else []
    lines.append(f"alerts: {', '.join(alerts + ['syslog'] * policy.alerts.syslog) or 'none'}")
    return lines


def _describe_profile(profile: Profile) -> list[str]:
    d, h = profile.destinations, profile.hours
    where = [
        _listed("countries", d.allow_countries),
        _listed("not countries", d.deny_countries or None),
        _listed("only types", d.allow_number_types),
        _listed("not types", d.deny_number_types or None),
        _listed_prefixes("not", d.deny_prefixes, d.prefix_lists),
        _listed_prefixes("always", d.allow_prefixes, d.prefix_lists),
        f"rate at most {d.max_rate}/min" if d.max_rate is not None else "",
    ]
    when = [
        f"international {h.international.text}" if h.international else "",
        f"any {h.any.text}" if h.any else "",
        f"holidays {h.on_holidays}",
    ]
    return [
        f"profile {profile.name}:",
        f"  destinations: {'; '.join(w for w in where if w) or 'any'}",
        f"  hours: {'; '.join(w for w in when if w)}",
        f"  limits per extension: {_caps(profile.limits, True)}",
        f"  limits over its extensions together: {_caps(profile.group_limits)}",
    ]


def _changed(base: Limits, limits: Limits) -> Limits:
    """The limits of ``limits`` that differ from ``base`` (the rest unset)."""
    spend = {p: getattr(limits.spend, p) for p in PERIODS}
    spend = {p: v for p, v in spend.items() if v != getattr(base.spend, p)}
    changes = {
        name: getattr(limits, name)
        for name in Limits.__dataclass_fields__
        if name not in {"spend", "report"} and getattr(limits, name) != getattr(base, name)
    }
    return Limits(**changes, spend=Spend(**spend))


def _listed(label: str, values: Iterable[str] | None) -> str:
    return "" if values is None else f"{label} {', '.join(sorted(values)) or 'none'}"


def _listed_prefixes(label: str, prefixes: tuple[str, ...], lists: Mapping[str, str]) -> str:
    """``not +1900, +1976, list callgate:irsf-starter (14)``: a list file is named, not spelled out."""
    inline = sorted("+" + p for p in prefixes if p not in lists)
    counts: dict[str, int] = {}
    for prefix in prefixes:
        if prefix in lists:
            counts[lists[prefix]] = counts.get(lists[prefix], 0) + 1
    named = [f"list {name} ({count})" for name, count in counts.items()]
    return f"{label} {', '.join(inline + named)}" if prefixes else ""


def _describe_lists(policy: Policy, today: date | None) -> list[str]:
    """One line per range list; a warning for each list past its expiry date (still enforced)."""
    lines = []
    for found in policy.lists:
        source = found.source if len(found.source) <= 80 else found.source[:77] + "..."
        expires = f"expires {found.expires}" if found.expires else "no expiry date"
        lines.append(
            f"range list {found.name}: {len(found.prefixes)} prefixes, {expires}; source: {source}"
        )
    for found in policy.expired_lists(today) if today is not None else ():
        lines.append(
            f"warning: range list {found.name} expired on {found.expires}; it is still enforced: "
            "update it from its source, or remove it from the policy"
        )
    return lines


def _report_paths(policy: Policy) -> list[str]:
    """The key path of every rule in ``mode: report``, in file order of the sections."""
    paths: list[str] = []
    for name, profile in policy.profiles.items():
        sections = (
            ("destinations", profile.destinations.report),
            ("hours", profile.hours.report),
            ("limits", profile.limits.report),
            ("profile_limits", profile.group_limits.report),
        )
        for part, keys in sections:
            paths += [f"profiles.{name}.{part}.{key}" for key in sorted(keys)]
    for n, rule in enumerate(policy.extensions):
        own = sorted(rule.limits.report - rule.profile.limits.report)
        paths += [f"extensions[{n}].limits.{key}" for key in own]
    paths += [f"site_limits.{key}" for key in sorted(policy.site_limits.report)]
    lockdown = policy.lockdown.report if policy.lockdown is not None else frozenset()
    return paths + [f"lockdown.{key}" for key in sorted(lockdown)]


def _caps(limits: Limits, per_call: bool = False) -> str:
    """``4/min, 3 concurrent, spend 40.00/day`` for one scope's limits."""
    fd, b, s = format_duration, limits.same_number, limits.short_calls
    d = limits.distinct_numbers
    counts = (
        ("{}/min", limits.calls_per_minute),
        ("{}/h", limits.calls_per_hour),
        ("{} international/h", limits.international_calls_per_hour),
        ("{} concurrent", limits.concurrent_calls),
    )
    parts = [text.format(n) for text, n in counts if n is not None]
    parts += [f"same number {b.count}/{fd(b.within)}"] if b else []
    parts += [f"{d.count} numbers/{fd(d.within)}"] if d else []
    parts += (
        [f"short calls {s.calls} under {fd(s.shorter_than)} in {fd(s.within)}: {s.then}"]
        if s
        else []
    )
    spend = " ".join(f"{amount}/{period}" for period, amount in limits.spend.items())
    parts += [f"spend {spend}"] if spend else []
    longest = limits.max_call_duration
    if longest is not None:
        parts.append(f"calls up to {fd(longest)}")
    elif per_call:
        parts.append(f"calls up to {fd(DEFAULT_MAX_CALL_DURATION)} (default)")
    return ", ".join(parts) or "none"
