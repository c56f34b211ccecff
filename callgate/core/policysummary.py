"""A policy in words: :func:`describe`, the summary ``callgate policy check`` prints.

It reads only the built :class:`~callgate.core.policy.Policy` (never the YAML), one line per item: the
site, emergency numbers, rates, each profile's destinations, hours and limits, the extensions in match
order, the site's limits, what a leg of each origin that no phone dialled may reach, the range lists
(and any past their expiry date), the rules in ``mode: report`` by their key paths in the file,
lockdown and alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from callgate.core.keys import PERIODS
from callgate.core.origins import NARROWED
from callgate.core.policy import (
    DEFAULT_MAX_CALL_DURATION,
    Destinations,
    Limits,
    Policy,
    Profile,
    Spend,
)
from callgate.core.windows import format_duration


def describe(policy: Policy, today: date | None = None) -> list[str]:
    """A human summary, one line per item, for ``callgate policy check``.

    With ``today`` (the site's local date), range lists past their expiry date get a warning line.
    """
    site, rates = policy.site, policy.rates
    default = "no default (unrated numbers are denied)"
    if rates.default is not None:
        default = f"default {rates.default}/min"
    lines = [
        f"site {site.name}: region {site.region}, time zone {site.timezone.key}, "
        f"currency {site.currency}, outside line {', '.join(site.outside_line) or 'none'}, "
        f"store unreachable: {site.on_store_error}",
        f"emergency (always allowed, never counted): {', '.join(policy.emergency) or 'none'}",
        f"rates: {len(rates.prefixes)} prefixes, {default}, billed per {rates.increment}s",
        f"holidays: {', '.join(sorted(d.isoformat() for d in policy.holidays)) or 'none'}",
        "countries the site knows (legs no phone dialled may reach them): "
        + ", ".join([f"{site.region} (its own)", *sorted(site.known_countries - {site.region})])
        + ", and each that an answered call reached",
    ]
    for profile in policy.profiles.values():
        lines += _describe_profile(profile)
    lines.append("extensions (first match wins):")
    for rule in policy.extensions:
        own = _caps(_changed(rule.profile.limits, rule.limits))
        own = "" if own == "none" else f" with its own limits: {own}"
        enforced = ", ".join(sorted(rule.profile.limits.report - rule.limits.report))
        own += f"; enforces what the profile only reports: {enforced}" if enforced else ""
        lines.append(f"  {rule.match} -> {rule.profile.name}{own}")
    if not any(rule.match == "*" for rule in policy.extensions):
        lines.append("  any other extension is refused (unknown_extension)")
    lines.append(f"site limits (all extensions together): {_caps(policy.site_limits)}")
    lines += _describe_origins(policy)
    lines += _describe_lists(policy, today)
    report = ", ".join(_report_paths(policy)) or "none"
    lines.append(f"report only (checked and logged, never denied): {report}")
    if policy.lockdown is not None:
        after = policy.lockdown.after_denied
        lines.append(
            f"lockdown: {after.count} denied calls within {format_duration(after.within)} "
            f"lock the extension ({policy.lockdown.locks})"
        )
    alerts = [f"webhook {policy.alerts.webhook}"] if policy.alerts.webhook else []
    lines.append(f"alerts: {', '.join(alerts + ['syslog'] * policy.alerts.syslog) or 'none'}")
    return lines


def _describe_profile(profile: Profile) -> list[str]:
    h = profile.hours
    when = [
        f"international {h.international.text}" if h.international else "",
        f"any {h.any.text}" if h.any else "",
        f"holidays {h.on_holidays}",
    ]
    return [
        f"profile {profile.name}:",
        f"  destinations: {_where(profile.destinations)}",
        f"  hours: {'; '.join(w for w in when if w)}",
        f"  limits per extension: {_caps(profile.limits, True)}",
        f"  limits over its extensions together: {_caps(profile.group_limits)}",
    ]


def _where(d: Destinations) -> str:
    """``countries US, CA; not types premium_rate`` for a profile's destinations or an origin's block."""
    where = [
        _listed("countries", d.allow_countries),
        _listed("not countries", d.deny_countries or None),
        _listed("only types", d.allow_number_types),
        _listed("not types", d.deny_number_types or None),
        _listed_prefixes("not", d.deny_prefixes, d.prefix_lists),
        _listed_prefixes("always", d.allow_prefixes, d.prefix_lists),
        f"rate at most {d.max_rate}/min" if d.max_rate is not None else "",
    ]
    return "; ".join(w for w in where if w) or "any"


def _describe_origins(policy: Policy) -> list[str]:
    """One line per origin a leg that no phone dialled may have: its block, or the safe default."""
    lines = ["legs no phone dialled (each also within its extension's profile):"]
    for origin in NARROWED:
        block, written = policy.origin_block(origin)
        new = f"new countries: {block.new_countries}"
        lines.append(f"  {origin}: {_where(block)}; {new}{'' if written else ' (the default)'}")
    return lines


def _changed(base: Limits, limits: Limits) -> Limits:
    """The limits of ``limits`` that differ from ``base`` (the rest unset)."""
    spend = {p: getattr(limits.spend, p) for p in PERIODS}
    spend = {p: v for p, v in spend.items() if v != getattr(base.spend, p)}
    changes = {
        name: getattr(limits, name)
        for name in Limits.__dataclass_fields__
        if name not in {"spend", "report"} and getattr(limits, name) != getattr(base, name)
    }
    return Limits(**changes, spend=Spend(**spend))


def _listed(label: str, values: Iterable[str] | None) -> str:
    return "" if values is None else f"{label} {', '.join(sorted(values)) or 'none'}"


def _listed_prefixes(label: str, prefixes: tuple[str, ...], lists: Mapping[str, str]) -> str:
    """``not +1900, +1976, list callgate:irsf-starter (14)``: a list file is named, not spelled out."""
    inline = sorted("+" + p for p in prefixes if p not in lists)
    counts: dict[str, int] = {}
    for prefix in prefixes:
        if prefix in lists:
            counts[lists[prefix]] = counts.get(lists[prefix], 0) + 1
    named = [f"list {name} ({count})" for name, count in counts.items()]
    return f"{label} {', '.join(inline + named)}" if prefixes else ""


def _describe_lists(policy: Policy, today: date | None) -> list[str]:
    """One line per range list; a warning for each list past its expiry date (still enforced)."""
    lines = []
    for found in policy.lists:
        source = found.source if len(found.source) <= 80 else found.source[:77] + "..."
        expires = f"expires {found.expires}" if found.expires else "no expiry date"
        lines.append(
            f"range list {found.name}: {len(found.prefixes)} prefixes, {expires}; source: {source}"
        )
    for found in policy.expired_lists(today) if today is not None else ():
        lines.append(
            f"warning: range list {found.name} expired on {found.expires}; it is still enforced: "
            "update it from its source, or remove it from the policy"
        )
    return lines


def _report_paths(policy: Policy) -> list[str]:
    """The key path of every rule in ``mode: report``, in file order of the sections."""
    paths: list[str] = []
    for name, profile in policy.profiles.items():
        sections = (
            ("destinations", profile.destinations.report),
            ("hours", profile.hours.report),
            ("limits", profile.limits.report),
            ("profile_limits", profile.group_limits.report),
        )
        for part, keys in sections:
            paths += [f"profiles.{name}.{part}.{key}" for key in sorted(keys)]
    for n, rule in enumerate(policy.extensions):
        own = sorted(rule.limits.report - rule.profile.limits.report)
        paths += [f"extensions[{n}].limits.{key}" for key in own]
    paths += [f"site_limits.{key}" for key in sorted(policy.site_limits.report)]
    for origin, block in policy.origins.items():
        paths += [f"origins.{origin}.{key}" for key in sorted(block.report)]
    lockdown = policy.lockdown.report if policy.lockdown is not None else frozenset()
    return paths + [f"lockdown.{key}" for key in sorted(lockdown)]


def _caps(limits: Limits, per_call: bool = False) -> str:
    """``4/min, 3 concurrent, spend 40.00/day`` for one scope's limits."""
    fd, b, s = format_duration, limits.same_number, limits.short_calls
    d = limits.distinct_numbers
    counts = (
        ("{}/min", limits.calls_per_minute),
        ("{}/h", limits.calls_per_hour),
        ("{} international/h", limits.international_calls_per_hour),
        ("{} concurrent", limits.concurrent_calls),
    )
    parts = [text.format(n) for text, n in counts if n is not None]
    parts += [f"same number {b.count}/{fd(b.within)}"] if b else []
    parts += [f"{d.count} numbers/{fd(d.within)}"] if d else []
    parts += (
        [f"short calls {s.calls} under {fd(s.shorter_than)} in {fd(s.within)}: {s.then}"]
        if s
        else []
    )
    spend = " ".join(f"{amount}/{period}" for period, amount in limits.spend.items())
    parts += [f"spend {spend}"] if spend else []
    longest = limits.max_call_duration
    if longest is not None:
        parts.append(f"calls up to {fd(longest)}")
    elif per_call:
        parts.append(f"calls up to {fd(DEFAULT_MAX_CALL_DURATION)} (default)")
    return ", ".join(parts) or "none"
