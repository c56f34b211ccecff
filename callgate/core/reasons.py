"""Verdicts and reasons: the strings written to ``CALLGATE_VERDICT`` and ``CALLGATE_REASON``."""

from __future__ import annotations

import enum

from callgate.core.numbers import NumberType
from callgate.core.origins import Origin


class Verdict(enum.StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class Reason(enum.StrEnum):
    """Why a call was allowed or denied; the value is what the dialplan sees."""

    ALLOWED = "allowed"
    EMERGENCY = "emergency"
    UNKNOWN_EXTENSION = "unknown_extension"
    EXTENSION_LOCKED = "extension_locked"
    SITE_PANIC = "site_panic"
    UNPARSEABLE_NUMBER = "unparseable_number"
    COUNTRY_NOT_ALLOWED = "country_not_allowed"
    NUMBER_TYPE_FIXED_LINE = "number_type_fixed_line"
    NUMBER_TYPE_MOBILE = "number_type_mobile"
    NUMBER_TYPE_FIXED_LINE_OR_MOBILE = "number_type_fixed_line_or_mobile"
    NUMBER_TYPE_TOLL_FREE = "number_type_toll_free"
    NUMBER_TYPE_PREMIUM_RATE = "number_type_premium_rate"
    NUMBER_TYPE_SHARED_COST = "number_type_shared_cost"
    NUMBER_TYPE_VOIP = "number_type_voip"
    NUMBER_TYPE_PERSONAL_NUMBER = "number_type_personal_number"
    NUMBER_TYPE_PAGER = "number_type_pager"
    NUMBER_TYPE_UAN = "number_type_uan"
    NUMBER_TYPE_VOICEMAIL = "number_type_voicemail"
    NUMBER_TYPE_SATELLITE = "number_type_satellite"
    NUMBER_TYPE_INTERNATIONAL_NETWORK = "number_type_international_network"
    NUMBER_TYPE_UNKNOWN = "number_type_unknown"
    PREFIX_DENIED = "prefix_denied"
    NO_RATE = "no_rate"
    RATE_ABOVE_MAX = "rate_above_max"
    # a leg that no phone dialled, refused by its origin's block (policy ``origins:``): one per origin
    FORWARD_NOT_ALLOWED = "forward_not_allowed"
    TRANSFER_NOT_ALLOWED = "transfer_not_allowed"
    DISA_NOT_ALLOWED = "disa_not_allowed"
    VOICEMAIL_NOT_ALLOWED = "voicemail_not_allowed"
    IVR_NOT_ALLOWED = "ivr_not_allowed"
    ORIGINATE_NOT_ALLOWED = "originate_not_allowed"
    HOLIDAY = "holiday"
    OUTSIDE_HOURS = "outside_hours"
    VELOCITY_MINUTE = "velocity_minute"
    VELOCITY_HOUR = "velocity_hour"
    VELOCITY_INTERNATIONAL_HOUR = "velocity_international_hour"
    CONCURRENT_CALLS = "concurrent_calls"
    SAME_NUMBER = "same_number"
    DISTINCT_NUMBERS = "distinct_numbers"
    SPEND_CAP_HOUR = "spend_cap_hour"
    SPEND_CAP_DAY = "spend_cap_day"
    SPEND_CAP_MONTH = "spend_cap_month"
    # any cap of a tenant's provider (its site_limits, counted over all its tenants: rules.PROVIDER_LIMITS)
    PROVIDER_LIMIT = "provider_limit"
    STORE_UNAVAILABLE = "store_unavailable"
    # many tenants behind one callgate: the call's site= names no tenant served (or none at all)
    UNKNOWN_SITE = "unknown_site"


def number_type_reason(kind: NumberType) -> Reason:
    """The reason for a call refused because of its number type."""
    return Reason(f"number_type_{kind.value}")


def origin_reason(origin: Origin) -> Reason:
    """The reason for a leg refused by its origin's block (``forward_not_allowed``); there is none for
    ``dialled``, which has no block (ValueError)."""
    if origin is Origin.DIALLED:
        raise ValueError("a dialled call is judged by its extension's profile alone")
    return Reason(f"{origin.value}_not_allowed")
