"""A policy's prefix entries (``deny_prefixes``, ``allow_prefixes``) and the range lists they name.

An entry is ``"+digits"`` or ``{file: NAME}``: a range list, whose format ``prefixlists`` reads. Each
list is read once per policy, through the reading's ``read_list`` (files beside the policy, lists
shipped with callgate, or texts given with a stored policy), and all of one policy's lists together are
held to ``MAX_LIST_BYTES``. A list's problems name the list file and its line; ``policyfile`` folds the
lists read into the policy's digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from callgate.core import prefixlists
from callgate.core.policy import PrefixList
from callgate.core.policyshapes import Field, section
from callgate.core.policyvalues import e164_prefix
from callgate.core.policyyaml import Node, Parse, Reader, items_of, join, scalar_text
from callgate.core.prefixlists import ListFiles, read_prefix_list
from callgate.errors import Problem

MAX_LIST_BYTES = 64 * 1024 * 1024  # all the range lists of one policy together
_LISTS_TOO_LARGE = f"the range lists of one policy may hold {MAX_LIST_BYTES:,} bytes together"


@dataclass(frozen=True, slots=True)
class Prefixes:
    """``deny_prefixes`` or ``allow_prefixes``: every prefix, and the list each file-read one is from."""

    prefixes: tuple[str, ...]
    lists: dict[str, str]


def prefix_entries(example: str, mapping: str = "") -> Parse[Prefixes]:
    """A list of "+digits" and ``{file: NAME}`` entries; ``mapping`` says why a mapping is wrong."""
    list_file = {
        "file": Field(scalar_text, "the name of a list file, such as {file: lists/irsf.txt}")
    }

    def parse(r: Reader, node: Node, path: str) -> Prefixes | None:
        if mapping and isinstance(node, yaml.MappingNode):
            r.problem(node, path, f"{mapping}; expected a list such as {example}")
            return None
        found: dict[str, str | None] = {}  # every prefix, in order, each once -> its list or None
        lists: dict[str, str] = {}  # digits -> the first list that names them
        for n, item in enumerate(items_of(r, node, path, example)):
            where = join(path, n)
            if not isinstance(item, yaml.MappingNode):
                prefix = e164_prefix(r, item, where)
                if prefix is not None:
                    found.setdefault(prefix)
                continue
            values = section(r, item, where, list_file)
            listed = _prefix_list(r, item, where, values["file"]) if values else None
            if listed is not None:  # dict operations, not a loop: a list may hold a million ranges
                fresh = dict.fromkeys(listed.prefixes, listed.name)
                for prefix in found.keys() & fresh.keys():
                    del fresh[prefix]
                found.update(fresh)
                lists.update(fresh)
        return Prefixes(tuple(found), lists)

    return parse


def _prefix_list(r: Reader, node: Node, path: str, name: str) -> PrefixList | None:
    """The range list ``name``, read once per policy; its problems name the list file and its line."""
    if name in r.lists:
        return r.lists[name]
    where = join(path, "file")
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
