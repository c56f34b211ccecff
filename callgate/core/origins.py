"""Where a gated leg comes from: the :class:`Origin` of a call attempt, and what a leg of an origin the
policy does not mention may reach (:data:`SAFE_DENIED_TYPES`, with the site's own country).

A phone's own call is ``dialled``. Every other origin is a leg that no phone dialled: the dialplan
(never the caller) names it, with the extension that caused it (docs/install.md). Such a leg is judged
by that extension's profile, as its own calls are, **and** by the policy's ``origins:`` block for its
origin, which can only narrow what the extension may reach, never widen it: a leg given the wrong
origin is never looser than the extension's own calls. Nor does such a leg reach a country the site
has never called, unless its block says ``new_countries: allow`` (rules: new_country).
"""

from __future__ import annotations

import enum

from callgate.core.numbers import NumberType


class Origin(enum.StrEnum):
    """Who or what caused a leg; the value is the Stasis argument ``origin=`` and the policy's key."""

    DIALLED = "dialled"  # the extension's phone dialled it (the default)
    FORWARD = "forward"  # an extension's forward (always, busy, no answer), follow-me or ring group
    TRANSFER = (
        "transfer"  # a blind or attended transfer to an outside number (a phone, the far end)
    )
    DISA = "disa"  # an outside caller given a dial tone (DISA)
    VOICEMAIL = "voicemail"  # voicemail's call-back or "press 0 for the operator" exit
    IVR = "ivr"  # an IVR option that dials out (dial by number, an outside destination)
    ORIGINATE = "originate"  # AMI or ARI Originate: click-to-call, call-backs, conference dial-out


# Number types a leg of an origin that the policy does not mention never reaches (with its
# destinations limited to the site's own country), each a way the called party is paid by the call:
# premium_rate (the pumped numbers of premium-rate fraud), shared_cost (part of the charge goes to the
# called party: UK 084/087, German 0180), uan (non-geographic "universal access" ranges, revenue
# shared in many plans), personal_number (UK 070 "follow-me" numbers that look like mobiles and bill
# like premium ones, a classic forward-fraud target). Not listed: voip, pager, voicemail, toll_free and
# the mobile and fixed types (billed like ordinary calls; a forward to a colleague's VoIP number or
# mobile is the usual case); satellite and international_network are never domestic, so the country
# rule already keeps them out.
SAFE_DENIED_TYPES = frozenset(
    {
        NumberType.PREMIUM_RATE,
        NumberType.SHARED_COST,
        NumberType.UAN,
        NumberType.PERSONAL_NUMBER,
    }
)

# The origins the policy's ``origins:`` may name: every one but ``dialled``, in the enum's order.
NARROWED = tuple(origin for origin in Origin if origin is not Origin.DIALLED)
