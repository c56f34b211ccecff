"""Destination range lists: the files of E.164 prefixes that ``{file: ...}`` in a policy names.

A list is UTF-8 text, one prefix a line::

    # source: Example Telecom IRSF advisory, 2026-11 (https://example.com/irsf)
    # expires: 2027-11-30
    +88213          # a comment may follow a prefix
    +979

    # blank lines and comment lines are ignored
    +2392

* A prefix is ``+`` then 1 to 15 digits, nothing else on the line but spaces and a ``# comment``.
* The header is the comment lines before the first prefix. In it, ``# source: TEXT`` is required (where
  the list comes from; several ``source`` lines are joined) and ``# expires: YYYY-MM-DD`` is optional
  (the last day the list is vouched for). Other comments, in the header or anywhere, are free text.
* An expired list is still enforced: a stale list of fraud ranges is better than none. ``policy check``
  names it, and :meth:`~callgate.core.policy.Policy.expired_lists` lets the running gate alert.

:func:`read_prefix_list` is pure (text in, list and problems out). Where the text comes from is the
caller's choice: :class:`ListFiles` reads files (the default of ``load_policy``), a mapping of name to
text (a policy stored in Redis with its lists) reads nothing from disk. A name ``callgate:NAME`` is a
list shipped in the package (``callgate/data/lists/NAME.txt``), such as ``callgate:irsf-starter``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path

from callgate.core.policy import PrefixList
from callgate.core.windows import parse_date

BUILTIN = "callgate:"
MAX_BYTES = 16 * 1024 * 1024  # a provider's list of 100,000 ranges is under 2 MB
MAX_PROBLEMS = 20  # per list: a wrong file (a CSV, a PDF) is named, not listed line by line

# How the policy reader gets a list's text by the name the policy writes: a function that raises
# OSError, KeyError or ValueError when it cannot, or a mapping of name to text.
ListSource = Callable[[str], str] | Mapping[str, str]

_PREFIX = re.compile(r"\+[0-9]{1,15}", re.ASCII)
_HEADER = re.compile(r"#\s*([A-Za-z][A-Za-z_-]*)\s*:(.*)", re.ASCII)
_BUILTIN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_HEADER_KEYS = ("source", "expires")
# The quick reading (``_quick``): the header's comment and blank lines; a line of the body that is a
# prefix, a blank or a comment; the characters that send a text to the line-by-line reading.
_HEAD = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\r?\n)*", re.ASCII)
_BODY_LINE = re.compile(
    r"^[ \t]*(?:\+([0-9]{1,15})[ \t]*)?(?:#[^\n]*)?\r?$", re.ASCII | re.MULTILINE
)
_ODD = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")  # str.splitlines and str.strip know these


def read_prefix_list(text: str, name: str) -> tuple[PrefixList | None, list[tuple[int, str]]]:
    """The list in ``text`` and its problems as (line, message); the list is None when any is found.

    A list of a million ranges is read in well under a second: when every line after the header is a
    prefix, a blank or a comment (the usual case), the body is read by one regular expression rather
    than line by line; anything else is read line by line, and its problems are named.
    """
    body = text.removeprefix("\ufeff")
    quick = _quick(body)
    if quick is None:
        read = _read_lines(body.splitlines())
    else:
        header, prefixes = quick
        read = _read_lines(header.splitlines())
        unique = set(prefixes)  # a set is built faster than a dict: keep the list when all differ
        read.prefixes = prefixes if len(unique) == len(prefixes) else list(dict.fromkeys(prefixes))
    problems = read.problems
    if read.bad_lines > MAX_PROBLEMS:
        problems.append((0, f"{read.bad_lines - MAX_PROBLEMS} more lines that are not prefixes"))
    if not read.sources:
        problems.append(
            (0, "no '# source: ...' line before the first prefix: say where the list comes from")
        )
    if not read.prefixes and not read.bad_lines:
        problems.append((0, "no prefixes: expected one E.164 prefix a line, such as +88213"))
    if problems:
        return None, problems
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    found = PrefixList(name, "; ".join(read.sources), tuple(read.prefixes), read.expires, digest)
    return found, []


@dataclass(slots=True)
class _Read:
    """What reading a list's lines found so far."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    expires: date | None = None
    prefixes: list[str] = field(default_factory=list)  # digits, in file order, each once
    seen: set[str] = field(default_factory=set)
    bad_lines: int = 0


def _quick(text: str) -> tuple[str, list[str]] | None:
    """(the header's text, the prefixes) when every line after the header is a prefix, a blank or a
    comment, in plain ASCII with ``\\n`` or ``\\r\\n`` line ends; else None (read line by line)."""
    if (
        not text.isascii()
        or any(odd in text for odd in _ODD)
        or text.count("\r") != text.count("\r\n")
    ):
        return None
    head = _HEAD.match(text)
    end = head.end() if head else 0
    body = text[end:]
    lines = _BODY_LINE.findall(body)  # one item per line that is a prefix ("" for blanks, comments)
    if len(lines) != body.count("\n") + 1:  # some line is not: read line by line to name it
        return None
    prefixes = list(filter(None, lines))
    return (text[:end], prefixes) if prefixes else None


def _read_lines(lines: list[str]) -> _Read:
    """Read a list line by line (``lines`` from ``str.splitlines``, counted from 1)."""
    read = _Read()
    problems = read.problems
    expires_line = 0
    in_header = True  # until the first line that is not a comment
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header = _HEADER.fullmatch(line) if in_header else None
            if header is None:
                continue
            key, value = header[1].lower(), header[2].strip()
            if key == "source" and value:
                read.sources.append(value)
            elif key == "source":
                problems.append((number, "the source is empty: say where the list comes from"))
            elif key == "expires" and expires_line:
                problems.append((number, f"a second expires line (first at line {expires_line})"))
            elif key == "expires":
                read.expires, expires_line = _expiry(value, number, problems), number
            elif close := difflib.get_close_matches(key, _HEADER_KEYS, n=1, cutoff=0.75):
                problems.append((number, f"unknown header {key!r}; did you mean {close[0]!r}?"))
            continue
        in_header = False
        prefix = line.partition("#")[0].strip()
        if _PREFIX.fullmatch(prefix):
            if prefix[1:] not in read.seen:
                read.seen.add(prefix[1:])
                read.prefixes.append(prefix[1:])
            continue
        read.bad_lines += 1
        if read.bad_lines <= MAX_PROBLEMS:
            shown = prefix if len(prefix) <= 40 else prefix[:37] + "..."
            problems.append(
                (
                    number,
                    f'expected an E.164 prefix: "+" then digits, such as +88213; got {shown!r}',
                )
            )
    return read


def _expiry(text: str, line: int, problems: list[tuple[int, str]]) -> date | None:
    try:
        return parse_date(text)
    except ValueError:
        problems.append(
            (line, f"expires: expected a date YYYY-MM-DD such as 2027-11-30, got {text!r}")
        )
        return None


def builtin_names() -> list[str]:
    """The lists shipped with callgate, as a policy names them (``callgate:irsf-starter``)."""
    folder = resources.files("callgate").joinpath("data/lists")
    return sorted(
        BUILTIN + item.name.removesuffix(".txt")
        for item in folder.iterdir()
        if item.name.endswith(".txt")
    )


def read_builtin(name: str) -> str:
    """The text of a shipped list; ``FileNotFoundError`` naming the shipped lists when it is not one."""
    short = name.removeprefix(BUILTIN)
    item = resources.files("callgate").joinpath(f"data/lists/{short}.txt")
    if not _BUILTIN_NAME.fullmatch(short) or not item.is_file():
        shipped = ", ".join(builtin_names()) or "none"
        raise FileNotFoundError(f"callgate ships no list {name!r}; it ships: {shipped}")
    return item.read_text(encoding="utf-8")


class ListFiles:
    """Reads lists from files: ``callgate:NAME`` from the package, other paths against ``base``.

    ``base`` is the policy file's directory (``None``: the current directory). Only regular files up to
    ``MAX_BYTES`` are read, so a name such as ``/dev/zero`` is refused, not read forever.
    """

    def __init__(self, base: Path | None = None) -> None:
        self.base = base

    def where(self, name: str) -> str:
        """Where the list named ``name`` is read from, for messages."""
        if name.startswith(BUILTIN):
            return name
        path = Path(name)
        return str(path if self.base is None or path.is_absolute() else self.base / path)

    def __call__(self, name: str) -> str:
        if name.startswith(BUILTIN):
            return read_builtin(name)
        path = Path(self.where(name))
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        if not path.is_file():
            raise ValueError(f"not a regular file: {path}")
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES:,} bytes: {path}")
        data = path.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ValueError(f"not UTF-8 text (line {line}): {path}") from None
