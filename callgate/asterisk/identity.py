"""Who is calling: the caller is what Asterisk authenticated, never what the phone says it is.

A phone chooses its own caller id (an endpoint without a fixed ``callerid`` takes the ``From:`` header),
so caller id is shown, never trusted. The identity of a call comes from, in this order:

1. The PJSIP endpoint that authenticated the channel. Asterisk names a PJSIP channel
   ``PJSIP/<endpoint>-<sequence>`` (the same value as ``${CHANNEL(endpoint)}``), so the gate reads it
   from the channel's name in ``StasisStart``; the dialplan cannot get it wrong and a phone cannot
   change it. The policy's ``endpoints:`` maps endpoint names to extensions where the two differ.
2. For every other channel (Local channels of FreePBX's follow-me and ring groups, IAX2, DAHDI): the
   ``ext=`` argument the dialplan passes, which the admin sets from something Asterisk knows (FreePBX's
   ``AMPUSER``; a ``CALLGATE_EXTENSION`` set by the context or by the endpoint's ``set_var``).

When both exist and disagree, the call is charged to nobody: it is refused as an unknown extension.

A leg that no phone dialled (an ``origin=`` other than ``dialled``: a forward, a transfer, DISA...) is
charged to the extension that caused it, which only the dialplan knows: ``ext=``, and nothing else.
Its channel is usually not that extension's: the inbound trunk's PJSIP channel, a Local channel, or the
phone of whoever called the forwarding extension. So the endpoint is not required to agree (it is
recorded in the audit), and without ``ext=`` the leg is charged to nobody and refused.

Why a phone cannot use this to escape its endpoint: the origin and ``ext=`` come only from the Stasis
arguments the dialplan builds from variables the admin sets (``CALLGATE_ORIGIN``,
``CALLGATE_EXTENSION``); a phone sets no channel variable, and what it dials cannot add or change an
argument (the dialplan's filter, and callgate.asterisk.stasis refusing unknown, repeated and
split-from-the-extension arguments). And an origin only narrows what the extension may call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from callgate.core.origins import Origin


def channel_endpoint(channel_name: str) -> str:
    """The PJSIP endpoint of a channel named ``PJSIP/<endpoint>-<sequence>``; "" for other channels."""
    tech, sep, rest = channel_name.partition("/")
    if tech != "PJSIP" or not sep:
        return ""
    endpoint, dash, sequence = rest.rpartition("-")
    if not dash or not sequence or "/" in endpoint or ";" in rest:
        return ""
    return endpoint


def transfer_extension(endpoints: Mapping[str, str], by: str, known: Callable[[str], bool]) -> str:
    """Whom a transfer's or a phone's own forward's leg is charged to when the dialplan names nobody:
    the transferring (forwarding) channel's extension (``by``: the channel Asterisk wrote to
    BLINDTRANSFER, ATTENDEDTRANSFER or FORWARDERNAME on the channel it sent on), if that is a PJSIP
    endpoint the policy names as an extension (``known``: never through the catch-all ``*``, which
    would make a trunk's endpoint one). Else nobody: refused as an unknown extension.

    Never the leg's own channel's phone: when the transferer is a trunk, callgate cannot tell the far
    end of a phone's own call from an outside caller who transferred the phone that answered him, and
    charging that phone would let anyone who can call the company spend its extensions' money. ``by``
    is a channel name Asterisk chose; a phone cannot set it (a SIP REFER names the target, not the
    transferer), and being judged as a transfer or forward only narrows what an extension may call."""
    candidate = channel_endpoint(by)
    extension = endpoints.get(candidate, candidate) if candidate else ""
    return extension if extension and known(extension) else ""


def caller_extension(
    endpoints: Mapping[str, str],
    endpoint: str,
    ext: str,
    origin: Origin = Origin.DIALLED,
    *,
    by: str = "",
    known: Callable[[str], bool] = lambda _: False,
) -> str:
    """The extension a call is charged to; "" (refused as unknown) when it cannot be told.

    ``by``: for a transfer or a forward with no ``ext=``, the transferring or forwarding channel
    (:func:`transfer_extension`); ``known`` tells an extension the policy names from one it does not."""
    if origin in (Origin.TRANSFER, Origin.FORWARD) and not ext:  # Asterisk's own facts: by=
        return transfer_extension(endpoints, by, known)
    if origin is not Origin.DIALLED:  # the causing extension, as the dialplan names it
        return ext
    if not endpoint:
        return ext
    extension = endpoints.get(endpoint, endpoint)
    if ext and ext != extension:
        return ""
    return extension
