"""The shapes a policy's values take: a mapping read by a schema of :class:`Field`, a list, a rule's mode.

``policyfile`` writes the schema as tables of :class:`Field` (one per key: its reader, whether it is
required, the model's field) and builds each section with :func:`model`; :func:`section` reads a
mapping by such a table, in the table's order, naming unknown, misplaced, duplicate and missing keys.
:func:`list_of`, :func:`set_of` and :func:`tuple_of` read lists of one reader's items. A rule may be
written as its value or in long form with ``mode: report`` (:func:`moded`, :func:`moded_model`); the
section that holds it names it in its ``report`` field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import yaml

from callgate.core.policy import RuleMode, Spend
from callgate.core.policyvalues import choice
from callgate.core.policyyaml import Node, Parse, Reader, items_of, join, pairs

T = TypeVar("T")

_PER_EXTENSION = "set it in a profile's limits or an extension's limits"
_MISPLACED = {  # keys that exist, but not where they were written
    "max_call_duration": f"not allowed here: it limits each call; {_PER_EXTENSION}",
    "short_calls": f"not allowed here: it watches each extension; {_PER_EXTENSION}",
    "profile_limits": "not allowed here: it belongs in a profile, beside its limits",
    "new_countries": "not allowed here: it belongs in a block of origins: (forward: {new_countries: "
    "allow}); a phone's own calls reach any country its profile allows",
    "known_countries": "not allowed here: it belongs in site: (site: {known_countries: [CA, GB]})",
    "mode": "not allowed here: a mode belongs to one rule, such as "
    "calls_per_minute: {value: 4, mode: report} or same_number: {calls: 3, within: 10m, mode: report}",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a schema: how its value is read, what it must be when required, the model's name."""

    parse: Parse[Any]
    need: str = ""  # set: the key is required, and this says what is expected
    attr: str = ""  # the dataclass field, when it is not the key


# --- mappings -----------------------------------------------------------------------------------


def section(
    r: Reader, node: Node, path: str, schema: Mapping[str, Field], *, line: int | None = None
) -> dict[str, Any] | None:
    """Read a mapping by its schema: the model's keyword arguments, or None when it cannot be built.

    Keys are read in schema order (rates before profiles before extensions), whatever the file's order.
    The keys whose rule is in ``mode: report`` are named in the ``report`` argument.
    """
    found: dict[str, Node] = {}
    for name, key, value in pairs(r, node, path, f"a mapping with keys {', '.join(schema)}"):
        if name in schema:
            found[name] = value
        else:
            message = _MISPLACED.get(name) or f"unknown key {name!r}{r.hint(name, schema)}"
            r.problem(key, join(path, name), message)
    if not isinstance(node, yaml.MappingNode):
        return None
    values: dict[str, Any] = {}
    report: set[str] = set()
    complete = True
    for name, spec in schema.items():
        if name not in found:
            if spec.need:
                where = node.start_mark.line + 1 if line is None else line
                r.problem(where, join(path, name), f"missing; expected {spec.need}")
                complete = False
            continue
        parsed = spec.parse(r, found[name], join(path, name))
        if isinstance(parsed, Moded):
            report |= _report_names(name, parsed.value) if parsed.report else set()
            parsed = parsed.value
        if parsed is not None:
            values[spec.attr or name] = parsed
        complete = complete and (parsed is not None or not spec.need)
    if report:
        values["report"] = frozenset(report)
    return values if complete else None


def model(build: Callable[..., T], schema: Mapping[str, Field]) -> Parse[T]:
    """A parser that reads a mapping by ``schema`` and builds the model ``build`` from it."""

    def parse(r: Reader, node: Node, path: str) -> T | None:
        values = section(r, node, path, schema)
        return None if values is None else build(**values)

    return parse


# --- report mode --------------------------------------------------------------------------------


class Moded(NamedTuple, Generic[T]):  # a NamedTuple: mypyc cannot build a generic dataclass
    """A rule's value and whether it is in ``mode: report``; :func:`section` unwraps it."""

    value: T
    report: bool


def _report_names(key: str, value: object) -> set[str]:
    """The names a rule in report mode adds to its section's ``report``: spend names each period."""
    if isinstance(value, Spend):
        return {f"{key}.{period}" for period, _ in value.items()}
    return {key}


def moded(parse: Parse[T], example: str) -> Parse[Moded[T]]:
    """A rule written as its value, or in long form ``{value: ..., mode: report}``."""
    schema = {
        "value": Field(parse, f"the rule's value: {example}"),
        "mode": Field(choice(RuleMode)),
    }

    def read(r: Reader, node: Node, path: str) -> Moded[T] | None:
        if not isinstance(node, yaml.MappingNode):
            value = parse(r, node, path)
            return None if value is None else Moded(value, False)
        values = section(r, node, path, schema)
        if values is None:
            return None
        return Moded(values["value"], values.get("mode") is RuleMode.REPORT)

    return read


def moded_model(build: Callable[..., T], schema: Mapping[str, Field]) -> Parse[Moded[T]]:
    """A rule whose value is a mapping: ``mode: report`` is one more key of it."""
    with_mode = {**schema, "mode": Field(choice(RuleMode))}

    def read(r: Reader, node: Node, path: str) -> Moded[T] | None:
        values = section(r, node, path, with_mode)
        if values is None:
            return None
        report = values.pop("mode", RuleMode.ENFORCE) is RuleMode.REPORT
        return Moded(build(**values), report)

    return read


# --- lists --------------------------------------------------------------------------------------


def list_of(item: Parse[T], example: str) -> Parse[list[T]]:
    """A parser of a list whose items ``item`` reads; the readable items are kept."""

    def parse(r: Reader, node: Node, path: str) -> list[T]:
        items = items_of(r, node, path, example)
        values = (item(r, one, join(path, n)) for n, one in enumerate(items))
        return [v for v in values if v is not None]

    return parse


def set_of(item: Parse[T], example: str) -> Parse[frozenset[T]]:
    many = list_of(item, example)
    return lambda r, node, path: frozenset(many(r, node, path) or ())


def tuple_of(item: Parse[T], example: str, *, at_most: int = 0) -> Parse[tuple[T, ...]]:
    """A list as a tuple; ``at_most`` (when set): a longer list is a problem, and none is kept."""
    many = list_of(item, example)

    def parse(r: Reader, node: Node, path: str) -> tuple[T, ...]:
        found = tuple(many(r, node, path) or ())
        if at_most and len(found) > at_most:
            r.problem(node, path, f"at most {at_most} entries, not {len(found)}")
            return ()
        return found

    return parse
