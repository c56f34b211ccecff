"""callgate's exceptions.

A denial is never an exception: it is a :class:`callgate.core.decision.Decision`. Exceptions are for
broken configuration, broken policy files and dead backends. Foreign exceptions (redis, aiohttp,
OSError) are translated once, at the seam that talks to the outside system, and raised ``from`` the
original.

    CallgateError
    ├── PolicyError              a policy file that cannot be used; carries every problem found
    ├── SettingsError            a service setting that is missing or wrong
    ├── CdrError                 (callgate.offline.cdr) a Master.csv row that cannot be read
    └── BackendUnavailable       an outside system did not answer
        ├── StoreUnavailable     Redis (the counter store)
        ├── AriUnavailable       Asterisk REST Interface
        └── AmiUnavailable       Asterisk Manager Interface
"""

from __future__ import annotations

from dataclasses import dataclass


class CallgateError(Exception):
    """Base of every exception callgate raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: where it is, which key, and what was expected."""

    source: str
    line: int  # 1-based; 0 when the problem is about the file as a whole
    path: str  # dotted key path, e.g. "profiles.office.limits.spend.day"
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class PolicyError(CallgateError):
    """A policy that must not be activated. ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.source, p.line, p.path)))
        super().__init__("\n".join(str(p) for p in self.problems))


class SettingsError(CallgateError):
    """A service setting is missing or wrong (named, with what was expected)."""


class BackendUnavailable(CallgateError):
    """An outside system did not answer in time or refused the connection."""


class StoreUnavailable(BackendUnavailable):
    """The counter store (Redis) cannot be reached; the policy's ``on_store_error`` applies."""


class AriUnavailable(BackendUnavailable):
    """Asterisk's REST interface cannot be reached."""


class AmiUnavailable(BackendUnavailable):
    """Asterisk's manager interface cannot be reached."""
