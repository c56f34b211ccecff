"""Reading the admin's policy YAML into a :class:`~callgate.core.policy.Policy`, naming every problem.

The schema of a policy file is the tables of :class:`~callgate.core.policyshapes.Field` at the end of
this module, section by section; the entry points :func:`load_policy`, :func:`load_policy_file` and
:func:`read_policy_text` read a file by them. Reading never stops at the first problem: the whole file
is checked, and one :class:`~callgate.errors.PolicyError` carries every
:class:`~callgate.errors.Problem`, with its line and key path.

Required: ``version`` (1), ``site`` (``name``, ``region``, ``timezone``, ``currency``), ``emergency`` (may
be ``[]``: forgetting 911 must not be silent), ``rates``, ``profiles`` and ``extensions``. Every other key
is optional; ``docs/policy.md`` gives each default.

How the reading is layered, each module using the ones before it:

- ``policyyaml``: the text to YAML nodes within bounds, the :class:`Reader` that collects problems;
- ``policyvalues``: the scalars (money, counts, durations, windows, names, codes, dates);
- ``policyshapes``: a mapping read by a schema, lists, a rule in ``mode: report``;
- ``policyprefixes``: prefix entries and the range lists they name;
- this module: the sections a table alone cannot read (a check across keys, what a later section
  needs), the schema tables, and the entry points.

``policysummary`` describes the built policy in words.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import yaml

from callgate.core.keys import PERIODS
from callgate.core.numbers import NumberType
from callgate.core.origins import NARROWED, Origin
from callgate.core.policy import (
    Alerts,
    Burst,
    Destinations,
    ExtensionRule,
    FailMode,
    HolidayMode,
    Hours,
    Limits,
    Lockdown,
    LockScope,
    NewCountries,
    Policy,
    Profile,
    Rates,
    ShortCallAction,
    ShortCalls,
    Site,
    Spend,
)
from callgate.core.policyprefixes import prefix_entries
from callgate.core.policyshapes import Field, moded, moded_model, model, section, set_of, tuple_of
from callgate.core.policyvalues import (
    NAME,
    amount,
    call_length,
    choice,
    currency,
    dialled,
    emergency,
    extension_match,
    flag,
    holiday,
    rate_prefix,
    region,
    seconds,
    site_name,
    version,
    webhook,
    whole,
    window,
    within,
    zone,
)
from callgate.core.policyyaml import (
    MAX_BYTES,
    Node,
    Reader,
    compose,
    items_of,
    join,
    pairs,
    scalar_text,
    too_large,
)
from callgate.core.prefixlists import ListFiles, ListSource
from callgate.errors import PolicyError, Problem

T = TypeVar("T")
# Emergency numbers a policy may list: a country has a handful; each goes around the gate, and Asterisk
# holds them all (and their outside-line forms) in one global variable the dialplan searches per call.
MAX_EMERGENCY = 32

# --- entry points -------------------------------------------------------------------------------


def load_policy(text: str, source: str, *, read_list: ListSource | None = None) -> Policy:
    """The policy in ``text``; raises :class:`PolicyError` with every problem (``source`` names the file).

    ``read_list`` gives the text of each range list the policy names (``{file: NAME}``): a mapping of
    name to text (a policy stored with its lists reads nothing from disk), or a function. By default
    ``callgate:NAME`` is a list shipped with callgate and any other name a file, relative to the current
    directory. The digest covers the lists' texts too: a changed list is a changed policy.

    Hostile text is refused before it costs much (docs/policy.md, "Limits"): more than ``MAX_BYTES``
    of text, more than ``MAX_NODES`` YAML nodes counting each alias as all it repeats, nesting deeper
    than ``MAX_DEPTH``, tags other than YAML's own. At most ``MAX_PROBLEMS`` problems are listed.
    """
    r = Reader(source, read_list=ListFiles() if read_list is None else read_list)
    root = compose(r, text)
    values = section(r, root, "", _TOP, line=0) if root is not None else None
    if values is None or r.found:
        raise r.refused()
    lists = tuple(sorted((found for found in r.lists.values() if found), key=lambda f: f.name))
    digest = hashlib.sha256(text.encode("utf-8"))
    for found in lists:
        digest.update(f"\0{found.name}\0{found.digest}".encode())
    return Policy(**values, source=source, digest=digest.hexdigest(), lists=lists)


def load_policy_file(path: str | Path, *, read_list: ListSource | None = None) -> Policy:
    """The policy in the UTF-8 file at ``path``; ``OSError`` when it cannot be read.

    Range lists named by a relative path are read from the policy file's directory.
    """
    text = read_policy_text(path)
    lists = ListFiles(Path(path).parent) if read_list is None else read_list
    return load_policy(text, str(path), read_list=lists)


def read_policy_text(path: str | Path) -> str:
    """The text of the policy file at ``path``: at most ``MAX_BYTES + 1`` bytes are read, so a huge
    file, or ``/dev/zero``, is refused at once. :class:`PolicyError` names the file when it is too
    large or not UTF-8; ``OSError`` when it cannot be read."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise PolicyError([Problem(str(path), 0, "", too_large())])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError([Problem(str(path), line, "", "not UTF-8 text")]) from None


# --- sections -----------------------------------------------------------------------------------


def _rates(r: Reader, node: Node, path: str) -> Rates | None:
    before = r.found
    values = section(r, node, path, _RATES)
    if values is None:
        return None
    if r.found == before and "default" not in values and not values.get("prefixes"):
        r.problem(
            node, path, "expected a default and/or prefixes; without either every call is denied"
        )
    r.increment = values.get("increment", 1)
    prefixes: dict[str, Decimal] = values.get("prefixes", {})
    return Rates(**{"default": None, **values}, longest=max(map(len, prefixes), default=0))


def _prefix_rates(r: Reader, node: Node, path: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for name, key, value in pairs(
        r, node, path, 'a mapping of prefixes to rates, such as {"44": 0.02}'
    ):
        prefix, rate = rate_prefix(r, key, join(path, name)), amount(r, value, join(path, name))
        if prefix is not None and rate is not None:
            out[prefix] = rate
    return out


def _destinations(r: Reader, node: Node, path: str) -> Destinations | None:
    """A profile's destination rules; an allow list and a deny list of the same thing cannot be mixed."""
    return _destinations_by(r, node, path, _DESTINATIONS)


def _origin_block(r: Reader, node: Node, path: str) -> Destinations | None:
    """An ``origins:`` block: a profile's destination rules and ``new_countries``."""
    return _destinations_by(r, node, path, _ORIGIN_BLOCK)


def _destinations_by(
    r: Reader, node: Node, path: str, schema: dict[str, Field]
) -> Destinations | None:
    entries = node.value if isinstance(node, yaml.MappingNode) else []
    keys = {key.value: key for key, _ in entries if isinstance(key, yaml.ScalarNode)}
    for kind in ("countries", "number_types"):
        allow, deny = f"allow_{kind}", f"deny_{kind}"
        if allow in keys and deny in keys:
            message = f"{allow} and {deny} cannot both be set; keep one"
            r.problem(keys[deny], join(path, deny), message)
    values = section(r, node, path, schema)
    if values is None:
        return None
    lists: dict[str, str] = {}
    for key in ("deny_prefixes", "allow_prefixes"):
        if key in values:
            lists.update(values[key].lists)
            values[key] = values[key].prefixes
    return Destinations(**values, prefix_lists=lists)


def _profiles(r: Reader, node: Node, path: str) -> dict[str, Profile]:
    for name, key, value in pairs(r, node, path, "a mapping of profile names to profiles"):
        if not NAME.fullmatch(name):
            r.problem(
                key,
                join(path, name),
                "expected a profile name of letters, digits, '.', '_' or '-'",
            )
        values = section(r, value, join(path, name), _PROFILE)
        r.profiles[name] = Profile(name, **(values or {}))
    if isinstance(node, yaml.MappingNode) and not node.value:
        r.problem(node, path, "expected at least one profile")
    return r.profiles


def _endpoints(r: Reader, node: Node, path: str) -> dict[str, str]:
    """``endpoints: {alice-desk: "1005"}``: the extension a PJSIP endpoint is charged as."""
    out: dict[str, str] = {}
    for name, key, value in pairs(r, node, path, "a mapping of endpoint names to extensions"):
        if not NAME.fullmatch(name):
            r.problem(
                key,
                join(path, name),
                "expected an endpoint name of letters, digits, '.', '_' or '-'",
            )
            continue
        extension = scalar_text(r, value, join(path, name), "an extension")
        if extension is not None and not NAME.fullmatch(extension):
            r.problem(
                value,
                join(path, name),
                "expected an extension of letters, digits, '.', '_' or '-'",
            )
        elif extension is not None:
            out[name] = extension
    return out


_ORIGIN_NAMES = tuple(origin.value for origin in NARROWED)


def _origins(r: Reader, node: Node, path: str) -> dict[Origin, Destinations]:
    """``origins: {forward: {allow_countries: [US]}}``: what a leg that no phone dialled may reach,
    each origin's block read as a profile's ``destinations`` (report mode too), with
    ``new_countries``."""
    out: dict[Origin, Destinations] = {}
    what = f"a mapping of origins ({', '.join(_ORIGIN_NAMES)}) to destinations"
    for name, key, value in pairs(r, node, path, what):
        if name == Origin.DIALLED.value:
            r.problem(
                key,
                join(path, name),
                "not an origin to narrow: a dialled call is judged by its extension's profile; "
                "say where it may call in the profile's destinations",
            )
        elif name not in _ORIGIN_NAMES:
            expected = f"expected one of {', '.join(_ORIGIN_NAMES)}"
            hint = r.hint(name, _ORIGIN_NAMES)
            r.problem(key, join(path, name), f"unknown origin {name!r}: {expected}{hint}")
        else:
            block = _origin_block(r, value, join(path, name))
            if block is not None:
                out[Origin(name)] = block
    return out


def _profile_ref(r: Reader, node: Node, path: str) -> Profile | None:
    name = scalar_text(r, node, path, "a profile name")
    if name is None or name in r.profiles:
        return None if name is None else r.profiles[name]
    r.problem(node, path, f"unknown profile {name!r}{r.hint(name, r.profiles)}")
    return None


def _extensions(r: Reader, node: Node, path: str) -> tuple[ExtensionRule, ...]:
    items = items_of(r, node, path, '[{match: "1001-1020", profile: office}]')
    if isinstance(node, yaml.SequenceNode) and not items:
        r.problem(node, path, "expected at least one entry; without one every call is refused")
    rules: list[ExtensionRule] = []
    earlier: dict[str, int] = {}  # match -> line, to find entries that can never match
    for n, item in enumerate(items):
        values = section(r, item, join(path, n), _RULE)
        if values is None:
            continue
        rule = ExtensionRule(
            values["match"],
            values["profile"],
            merge_limits(values["profile"].limits, values.get("limits", Limits())),
            item.start_mark.line + 1,
        )
        _reachable(r, rule, earlier, join(join(path, n), "match"))
        rules.append(rule)
    return tuple(rules)


def _reachable(r: Reader, rule: ExtensionRule, earlier: dict[str, int], path: str) -> None:
    """An entry after ``"*"`` or after the same pattern can never match: a rule silently off."""
    for pattern in (rule.match, "*"):
        if pattern in earlier:
            line = earlier[pattern]
            r.problem(
                rule.line, path, f"never used: the entry at line {line} ({pattern!r}) matches first"
            )
            break
    earlier.setdefault(rule.match, rule.line)


def merge_limits(base: Limits, over: Limits) -> Limits:
    """``over``'s limits that are set, over ``base``, field by field; spend merges per period.

    Modes merge the same way: a limit that ``over`` sets takes ``over``'s mode (enforce unless it says
    ``mode: report``); every other limit keeps ``base``'s.
    """
    spend = {p: _first(getattr(over.spend, p), getattr(base.spend, p)) for p in PERIODS}
    changes = {
        name: getattr(over, name)
        for name in Limits.__dataclass_fields__
        if name not in {"spend", "report"} and getattr(over, name) is not None
    }
    overridden = {*changes, *(f"spend.{period}" for period, _ in over.spend.items())}
    report = (base.report - overridden) | over.report
    return replace(base, **changes, spend=Spend(**spend), report=frozenset(report))


def _first(over: T | None, base: T | None) -> T | None:
    return base if over is None else over


# --- the schema ---------------------------------------------------------------------------------

_count, _at_least_one = whole(0), whole(1)
_country = region("country")
_RATES = {
    "default": Field(amount),
    "increment": Field(whole(1, 3600)),
    "prefixes": Field(_prefix_rates),
}
_SITE = {
    "name": Field(site_name, "a site name such as acme-nyc"),
    "region": Field(region("region"), "a libphonenumber region such as US"),
    "timezone": Field(zone, "an IANA time zone such as America/New_York"),
    "currency": Field(currency, "an ISO 4217 currency code such as USD"),
    "outside_line": Field(tuple_of(dialled, '["9"]')),
    "on_store_error": Field(choice(FailMode)),
    "known_countries": Field(set_of(_country, "[CA, GB]")),
}
_NO_MODE = "allow_prefixes has no mode: it only lets calls through"
_DESTINATIONS = {
    "allow_countries": Field(moded(set_of(_country, "[US, CA]"), "[US, CA]")),
    "deny_countries": Field(moded(set_of(_country, "[CU]"), "[CU]")),
    "allow_number_types": Field(
        moded(set_of(choice(NumberType), "[fixed_line, mobile]"), "[fixed_line, mobile]")
    ),
    "deny_number_types": Field(
        moded(set_of(choice(NumberType), "[premium_rate]"), "[premium_rate]")
    ),
    "deny_prefixes": Field(
        moded(prefix_entries('["+1900", {file: callgate:irsf-starter}]'), '["+1900"]')
    ),
    "allow_prefixes": Field(prefix_entries('["+18005551"]', _NO_MODE)),
    "max_rate": Field(moded(amount, '"0.50"')),
}
_ORIGIN_BLOCK = {**_DESTINATIONS, "new_countries": Field(moded(choice(NewCountries), "deny"))}
_HOURS = {
    "international": Field(moded(window, '"mon-fri 08:00-18:00"')),
    "any": Field(moded(window, '"mon-sun 00:00-24:00"')),
    "on_holidays": Field(moded(choice(HolidayMode), "domestic_only")),
}
_WITHIN = Field(within, "a sliding window such as 10m")
_COUNT = Field(moded(_count, "4"))
_CALLS_WITHIN = {"calls": Field(_at_least_one, "a count", "count"), "within": _WITHIN}
_NUMBERS_WITHIN = {"numbers": Field(_at_least_one, "a count", "count"), "within": _WITHIN}
_GROUP_LIMITS = {
    "calls_per_minute": _COUNT,
    "calls_per_hour": _COUNT,
    "international_calls_per_hour": _COUNT,
    "concurrent_calls": _COUNT,
    "same_number": Field(moded_model(Burst, _CALLS_WITHIN)),
    "distinct_numbers": Field(moded_model(Burst, _NUMBERS_WITHIN)),
    "spend": Field(moded_model(Spend, {period: Field(amount) for period in PERIODS})),
}
_SHORT_CALLS = {
    "calls": Field(_at_least_one, "how many short calls"),
    "shorter_than": Field(seconds, "a duration such as 15s"),
    "within": _WITHIN,
    "then": Field(choice(ShortCallAction)),
}
_LIMITS = {
    **_GROUP_LIMITS,
    "short_calls": Field(moded_model(ShortCalls, _SHORT_CALLS)),
    "max_call_duration": Field(moded(call_length, "2h")),
}
_PROFILE = {
    "destinations": Field(_destinations),
    "hours": Field(model(Hours, _HOURS)),
    "limits": Field(model(Limits, _LIMITS)),
    "profile_limits": Field(model(Limits, _GROUP_LIMITS), attr="group_limits"),
}
_RULE = {
    "match": Field(extension_match, 'an extension, a range such as "1001-1020", or "*"'),
    "profile": Field(_profile_ref, "a profile name"),
    "limits": Field(model(Limits, _LIMITS)),
}
_LOCKDOWN = {
    "after_denied": Field(moded_model(Burst, _CALLS_WITHIN), "{calls: N, within: DURATION}"),
    "locks": Field(choice(LockScope)),
}
_TOP = {  # read in this order: rates (the increment) before limits, profiles before extensions
    "version": Field(version, "the policy format version: version: 1"),
    "site": Field(model(Site, _SITE), "a mapping with name, region, timezone and currency"),
    "emergency": Field(
        tuple_of(emergency, '["911"]', at_most=MAX_EMERGENCY),
        'the emergency numbers, such as ["911"], or []',
    ),
    "rates": Field(_rates, "a rate table with a default and/or prefixes"),
    "holidays": Field(set_of(holiday, '["2026-12-25"]')),
    "site_limits": Field(model(Limits, _GROUP_LIMITS)),
    "profiles": Field(_profiles, "a mapping of profile names to profiles"),
    "extensions": Field(_extensions, "a list of {match, profile} entries"),
    "endpoints": Field(_endpoints),
    "origins": Field(_origins),
    "lockdown": Field(model(Lockdown, _LOCKDOWN)),
    "alerts": Field(model(Alerts, {"webhook": Field(webhook), "syslog": Field(flag)})),
}
