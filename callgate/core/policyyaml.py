"""The policy's YAML as nodes, within bounds, and the :class:`Reader` that collects its problems.

The first layer of reading a policy (``policyfile`` has the schema and the entry points): the text is
composed, not constructed, with libyaml, so every value keeps its line and the text exactly as written.
Before anything is composed, libyaml's events are checked against the bounds below (size, nodes with
each alias counted as all it repeats, depth, aliases inside their own anchor, tags): a hostile file is
refused while it has cost little (docs/policy.md, "Limits").

Every reader of a value, here and in ``policyvalues``, ``policyshapes``, ``policyprefixes`` and
``policyfile``, is a :data:`Parse`: it takes the :class:`Reader`, a node and its key path, records what
is wrong as a :class:`~callgate.errors.Problem` with the node's line, and returns the value or None.
This module also holds the readers of nodes as such: a mapping's entries, a list's items, a scalar's text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import yaml

from callgate.core.policy import PrefixList, Profile
from callgate.core.prefixlists import ListFiles, ListSource
from callgate.errors import PolicyError, Problem

T = TypeVar("T")
Node = yaml.Node

# Limits on what a policy may be (docs/policy.md, "Limits"): a hostile or broken file is refused
# before it costs more than a few megabytes and seconds, with problems that name it.
MAX_BYTES = 2 * 1024 * 1024  # a policy is a few kilobytes; long prefix lists belong in list files
MAX_NODES = 200_000  # keys, values, lists and mappings, each alias counted as all it repeats
MAX_DEPTH = 32  # libyaml's composer recurses in C: a file nested thousands deep would crash it
MAX_PROBLEMS = 100  # listed; the rest are counted
_YAML_TAG = "tag:yaml.org,2002:"
_PLAIN = ("str", "int", "float", "bool", "null", "timestamp", "seq", "map")
_TAGS = frozenset({"!", *(_YAML_TAG + t for t in _PLAIN)})  # what plain YAML resolves to
_QUOTED = 400  # the longest source or message of a problem
_NO_TAGS = "a policy is plain YAML; remove the tag (quote the value to keep it as text)"
_NULL, _MERGE = "tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class Reader:
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


Parse = Callable[[Reader, Node, str], T | None]  # reads one value; None when it is wrong


# --- YAML to nodes ------------------------------------------------------------------------------


def compose(r: Reader, text: str) -> Node | None:
    """The document's root node, or None (the problem recorded) when the text is not usable YAML.

    Nothing is composed until :func:`_shape` has read libyaml's events and found the text within
    bounds: composing keeps every node (about 400 bytes each), reading events keeps none.
    """
    try:
        if len(text.encode("utf-8")) > MAX_BYTES:
            r.problem(0, "", too_large())
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


def too_large() -> str:
    """The problem of a policy past MAX_BYTES, as text or as a file."""
    return (
        f"larger than {MAX_BYTES:,} bytes, the most a policy may be; "
        "a policy is a few kilobytes: keep long prefix lists in list files ({file: ...})"
    )


@dataclass(slots=True)
class _Open:
    """A list or mapping whose events are being read: where it is and what it holds so far."""

    path: str
    mapping: bool
    anchor: str | None
    start: int  # the nodes counted before it
    children: int = 0  # keys and values of a mapping, items of a list
    key: str = ""  # a mapping's last key


def _shape(r: Reader, text: str) -> bool:
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
            named = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
            named = named if len(named) <= 60 else named[:57] + "..."
            r.problem(line, path, f"unsupported tag {named}: {_NO_TAGS}")
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
        return join(parent.path, n)
    if n % 2 == 0:  # a key: its path is the key's own
        parent.key = str(event.value) if isinstance(event, yaml.ScalarEvent) else "?"
    return join(parent.path, parent.key)


def _too_many(why: str) -> str:
    return (
        f"too many YAML nodes: {why}a policy may hold {MAX_NODES:,} (each key, value, list and "
        "mapping counts one; an alias counts every node it repeats)"
    )


# --- nodes and what a problem says of them ------------------------------------------------------


def join(path: str, key: str | int) -> str:
    """``path.key`` or ``path[n]``. A long key is clipped: every node below it has this path, and a
    key of a megabyte (``? ...`` may be that long) must not be copied for each of them."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key if len(key) <= 64 else key[:61] + "..."
    return f"{path}.{key}" if path else key


def _clipped(text: str) -> str:
    return text if len(text) <= _QUOTED else text[: _QUOTED - 3] + "..."


def shown(node: Node) -> str:
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


def pairs(r: Reader, node: Node, path: str, what: str) -> list[tuple[str, Node, Node]]:
    """(name, key node, value node) of each entry; duplicate keys and merge keys are problems."""
    if not isinstance(node, yaml.MappingNode):
        r.problem(node, path, f"expected {what}, got {shown(node)}")
        return []
    seen: dict[str, int] = {}
    out: list[tuple[str, Node, Node]] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            r.problem(key, path, f"expected a key name, got {shown(key)}")
        elif key.tag == _MERGE:
            r.problem(key, path, "merge keys (<<) are not supported; reuse a mapping with *alias")
        elif key.value in seen:
            where = f"first at line {seen[key.value]}"
            r.problem(key, join(path, key.value), f"duplicate key ({where}); write each key once")
        else:
            seen[key.value] = key.start_mark.line + 1
            out.append((str(key.value), key, value))
    return out


def items_of(r: Reader, node: Node, path: str, example: str) -> list[Node]:
    """The items of a list; anything else is a problem that shows ``example``."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    r.problem(node, path, f"expected a list such as {example}, got {shown(node)}")
    return []


def scalar_text(r: Reader, node: Node, path: str, what: str = "text") -> str | None:
    """The scalar as written, quoted or not; nothing, lists and mappings are problems."""
    if isinstance(node, yaml.ScalarNode) and node.tag != _NULL:
        return str(node.value)
    r.problem(node, path, f"expected {what}, got {shown(node)}")
    return None
