"""What happens in a running gate, as one stream of typed events.

The gate and ``serve`` emit; the audit trail, the metrics and the alerting subscribe. An event is a
frozen value; a subscriber matches on its type (``match event: case Decided(...)``), so a new kind of
event is a new class that mypy follows to every reader, not a string that one reader misspells.

A subscriber runs inline (the gate does not wait for I/O here: the audit and the alerts queue what they
send) and must never break the gate: its exception is logged and the next subscriber runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from callgate.core.decision import Decision

log = logging.getLogger("callgate.events")


@dataclass(frozen=True, slots=True)
class Decided:
    """A call was decided and Asterisk told (or the channel had gone)."""

    decision: Decision
    channel_id: str
    seconds: float  # StasisStart to continue or hang-up, as the gate measured it
    endpoint: str = ""  # the PJSIP endpoint of the channel, charged or not (asterisk.identity)
    by: str = ""  # a transfer's leg: the channel that transferred it


@dataclass(frozen=True, slots=True)
class Locked:
    """A burst rule (lockdown.after_denied, limits.short_calls) reached its threshold.

    ``report``: the rule is in ``mode: report``; nothing was locked, an admin is told it would have been.
    """

    extension: str
    rule: str
    count: int
    within: int  # seconds
    scope: str  # international | all
    last_reason: str
    report: bool = False


@dataclass(frozen=True, slots=True)
class SpendCommitted:
    """An admitted call committed money under a cap: ``used`` of ``cap`` micro-units, this period."""

    key: str  # the cap's counter key: one per scope and period
    rule: str
    used: int
    cap: int


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The counter store stopped answering; ``mode`` (on_store_error) now decides every call."""

    error: str
    mode: str


@dataclass(frozen=True, slots=True)
class StoreRecovered:
    """The counter store answers again."""


@dataclass(frozen=True, slots=True)
class PanicStarted:
    """The site's panic switch went on; this gate hung up ``hung_up`` international calls."""

    hung_up: int


@dataclass(frozen=True, slots=True)
class PanicEnded:
    """The site's panic switch went off."""


@dataclass(frozen=True, slots=True)
class AlertRaised:
    """An alert was raised (before its rate limit): ``kind`` is an :class:`~callgate.ops.alerts.AlertKind`."""

    kind: str
    subject: str


@dataclass(frozen=True, slots=True)
class Unrouted:
    """A call no gate decides: the site its dialplan named (``site=``, "" for none) is not one this
    callgate serves, or that tenant has no policy loaded. It was refused (``unknown_site``)."""

    channel_id: str
    site: str
    dialled: str
    seconds: float


Event = (
    Decided
    | Unrouted
    | Locked
    | SpendCommitted
    | StoreFailed
    | StoreRecovered
    | PanicStarted
    | PanicEnded
    | AlertRaised
)
Subscriber = Callable[[Event], None]


class Events:
    """The stream: ``emit`` hands each event to every subscriber, in the order they subscribed."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception:  # a subscriber must never break the gate
                log.exception("subscriber failed on %s", type(event).__name__)
