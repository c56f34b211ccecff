"""Whom a call is charged to (callgate.asterisk.identity): a transfer's leg, from the channels Asterisk
names, never from anything the phone says."""

from __future__ import annotations

import pytest

from callgate.asterisk.identity import caller_extension
from callgate.core.origins import Origin

EXTENSIONS = {"1001", "1002", "reception"}  # as the policy names them (never through match: "*")
ENDPOINTS = {"desk-7": "reception"}


def known(name: str) -> bool:
    return name in EXTENSIONS


@pytest.mark.parametrize(
    ("endpoint", "ext", "by", "charged"),
    [
        ("", "", "PJSIP/1001-00000004", "1001"),  # a phone transferred its caller: the phone pays
        ("carrier", "", "PJSIP/1001-00000004", "1001"),  # ...whoever the caller's channel is
        ("", "", "PJSIP/desk-7-0000000b", "reception"),  # endpoints: maps the transferer too
        ("1002", "", "PJSIP/carrier-00000001", ""),  # a trunk transferred 1002's channel: nobody
        ("", "", "PJSIP/carrier-00000001", ""),  # the far end transferred a Local leg: nobody
        ("carrier", "", "PJSIP/carrier-00000001", ""),  # ...or another trunk's caller: nobody
        ("", "", "", ""),  # no transferer said, no endpoint: nobody
        ("", "", "Local/600@held-00000001;1", ""),  # a Local channel is no extension
        ("", "", "IAX2/1001-1234", ""),  # nor an IAX2 peer named like one
        ("", "", "PJSIP/1003-00000004", ""),  # an endpoint the policy does not list: nobody
        ("1002", "reception", "PJSIP/1001-00000004", "reception"),  # the dialplan's ext= wins
    ],
)
def test_a_transfer_is_charged_to_the_transferer_or_nobody(
    endpoint: str, ext: str, by: str, charged: str
) -> None:
    assert (
        caller_extension(ENDPOINTS, endpoint, ext, Origin.TRANSFER, by=by, known=known) == charged
    )


def test_a_phones_own_forward_is_charged_to_the_forwarding_phone_or_nobody() -> None:
    """A forward the dialplan names no extension for, made by a phone's 302 (FORWARDERNAME as by=):
    the forwarding phone's extension; never the leg's own channel; the dialplan's ext= first."""
    by = "PJSIP/1001-00000004"
    assert caller_extension({}, "1002", "", Origin.FORWARD, by=by, known=known) == "1001"
    assert caller_extension({}, "1002", "", Origin.FORWARD, by="", known=known) == ""
    carrier = "PJSIP/carrier-00000001"
    assert caller_extension({}, "1002", "", Origin.FORWARD, by=carrier, known=known) == ""
    assert caller_extension({}, "", "1002", Origin.FORWARD, by=by, known=known) == "1002"


def test_by_changes_nothing_for_a_dialled_call() -> None:
    """A dialled call is its endpoint's, whatever ``by`` says."""
    by = "PJSIP/1001-00000004"
    assert caller_extension({}, "1002", "", Origin.DIALLED, by=by, known=known) == "1002"


async def test_a_catch_all_entry_does_not_make_a_trunk_the_transferer() -> None:
    """With `match: "*"` every name is an extension, the carrier's endpoint too: a transfer or a 302
    forward by the carrier's channel must still be nobody's, never charged to "carrier"; a phone the
    policy names explicitly still pays for its own transfer."""
    from callgate.asterisk.gate import Gate
    from callgate.core.memo import Memo
    from callgate.core.policyfile import load_policy
    from callgate.core.reasons import Reason
    from callgate.core.rules import CallAttempt
    from callgate.store.memory import MemoryStore
    from tests.fakes import FakeAudit, FakeChannels
    from tests.test_origins import TUE

    policy = load_policy(
        "version: 1\n"
        "site: {name: s, region: US, timezone: America/New_York, currency: USD}\n"
        'emergency: ["911"]\n'
        'rates: {default: "0.01"}\n'
        "profiles: {staff: {destinations: {allow_countries: [US]}}}\n"
        'extensions: [{match: "1001", profile: staff}, {match: "*", profile: staff}]\n',
        "p.yaml",
    )
    memo = Memo(policy)
    g = Gate(lambda: memo, MemoryStore(), FakeChannels(), FakeAudit(), clock=lambda: TUE)
    for n, (origin, by) in enumerate(
        [(Origin.TRANSFER, "PJSIP/carrier-00000001"), (Origin.FORWARD, "PJSIP/carrier-00000002")]
    ):
        attempt = CallAttempt(f"c{n}", "", "2125550142", leg=f"ch{n}", origin=origin)
        decision = await g.decide(attempt, endpoint="carrier", by=by)
        assert (decision.reason, decision.extension) == (Reason.UNKNOWN_EXTENSION, "")
    attempt = CallAttempt("c9", "", "2125550142", leg="ch9", origin=Origin.TRANSFER)
    decision = await g.decide(attempt, by="PJSIP/1001-00000009")
    assert (decision.allowed, decision.extension) == (True, "1001")
