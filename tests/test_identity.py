"""Whom a call is charged to (callgate.asterisk.identity): a transfer's leg, from the channels Asterisk
names, never from anything the phone says."""

from __future__ import annotations

import pytest

from callgate.asterisk.identity import caller_extension
from callgate.core.origins import Origin

EXTENSIONS = {"1001", "1002", "reception"}
ENDPOINTS = {"desk-7": "reception"}


def known(name: str) -> bool:
    return name in EXTENSIONS


@pytest.mark.parametrize(
    ("endpoint", "ext", "by", "charged"),
    [
        ("", "", "PJSIP/1001-00000004", "1001"),  # a phone transferred its caller: the phone pays
        ("carrier", "", "PJSIP/1001-00000004", "1001"),  # ...whoever the caller's channel is
        ("", "", "PJSIP/desk-7-0000000b", "reception"),  # endpoints: maps the transferer too
        ("1002", "", "PJSIP/carrier-00000001", "1002"),  # the far end transferred 1002's call
        ("", "", "PJSIP/carrier-00000001", ""),  # the far end transferred a Local leg: nobody
        ("carrier", "", "PJSIP/carrier-00000001", ""),  # ...or another trunk's caller: nobody
        ("", "", "", ""),  # no transferer said, no endpoint: nobody
        ("", "", "Local/600@held-00000001;1", ""),  # a Local channel is no extension
        ("", "", "IAX2/1001-1234", ""),  # nor an IAX2 peer named like one
        ("", "", "PJSIP/1003-00000004", ""),  # an endpoint the policy does not list: nobody
        ("1002", "reception", "PJSIP/1001-00000004", "reception"),  # the dialplan's ext= wins
    ],
)
def test_a_transfer_is_charged_to_the_transferer_else_the_channels_phone(
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
