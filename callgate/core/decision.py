"""A decision as the dialplan, the audit trail and the reports see it: the :class:`Decision` value and
the channel variables it sets. The engine (:mod:`callgate.core.engine`) makes it; nothing here decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from callgate.core.numbers import NumberInfo
from callgate.core.origins import Origin
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import REPORT, RuleResult

RESERVATION_VARIABLE = "CALLGATE_CALL"  # an admitted call's reservation id (see Decision.variables)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason
    rule: str  # the rule that gave the reason
    call_id: str
    extension: str
    profile: str | None
    number: NumberInfo
    at: datetime
    allowed_seconds: int
    rate: Decimal | None  # per minute
    reserved: Decimal
    rules: tuple[RuleResult, ...]
    policy_digest: str
    replayed: bool = False
    policy_revision: int = 0  # the Redis version of the policy that decided; 0: a local file
    reservation: str = (
        ""  # the id the store holds this call's reservation under (plan.reservation_id)
    )
    dial: str = ""  # what the dialplan dials: the E.164 number, or the emergency number as listed
    # who caused the leg (core.origins); ``extension`` is whom it is charged to
    origin: Origin = Origin.DIALLED
    via: str = ""  # the inbound DID or trunk that brought the call in, as the dialplan said

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def reported(self) -> tuple[RuleResult, ...]:
        """The rules in mode: report that would have denied this call."""
        return tuple(r for r in self.rules if r.outcome == REPORT)

    def variables(self) -> dict[str, str]:
        """The channel variables the dialplan reads (product.md).

        An emergency call is dialled as the emergency number itself (``CALLGATE_NUMBER`` is then the
        policy's entry, e.g. ``112``, without the outside-line digit) and gets no length limit: for
        ``CALLGATE_REASON=emergency`` the shipped dialplan dials without ``L()`` and the gate sets no
        ``TIMEOUT(absolute)``.
        ``CALLGATE_CALL`` is the reservation id of an admitted call (the gate also writes it to
        ``CDR(callgate)``), so that the spend feed settles this leg and no other. Any other decision
        leaves the variable alone: a refused call holds no reservation, so its hang-up settles nothing
        and costs the store nothing; and a trunk channel that a transfer sends back into the gate keeps
        the id of the call it carries.
        """
        variables = {
            "CALLGATE_VERDICT": self.verdict.value,
            "CALLGATE_REASON": self.reason.value,
            "CALLGATE_NUMBER": self.dial,
            "CALLGATE_MAX_SECONDS": str(self.allowed_seconds),
        }
        if self.reason is Reason.ALLOWED:
            variables[RESERVATION_VARIABLE] = self.reservation
        return variables
