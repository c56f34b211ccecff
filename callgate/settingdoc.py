"""The settings table written out for people: the samples ``packaging/callgate.toml`` (the settings)
and ``packaging/callgate.env`` (the secrets), and the settings reference in ``docs/operations.md``. All
are made here from :data:`callgate.settingtable.TABLE` and nothing else; tests hold the shipped copies
equal to what this module writes. To regenerate::

    python -m callgate.settings --sample > packaging/callgate.toml
    python -m callgate.settings --env-file > packaging/callgate.env
    python -m callgate.settings --update-guide  # the block between the markers in the guide

``--reference`` prints that block.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path
from typing import Final

from callgate.settingtable import (
    FALSE_WORDS,
    SECTIONS,
    TABLE,
    TRUE_WORDS,
    Form,
    Setting,
    one_of,
    toml_value,
)

WIDTH = 100
GUIDE: Final = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
BEGIN = "<!-- settings reference: made by `python -m callgate.settings --update-guide` from callgate/settingtable.py; edit the table, not this -->"
END = "<!-- end of the settings reference -->"


def _row(section: str, key: str) -> Setting:
    return next(s for s in TABLE if (s.section, s.key) == (section, key))


def _comment(text: str) -> list[str]:
    """``text`` as TOML comment lines; paragraphs apart by a blank line stay apart."""
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        lines += ["#"] if lines else []
        lines += textwrap.wrap(
            " ".join(paragraph.split()),
            WIDTH,
            initial_indent="# ",
            subsequent_indent="# ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return lines


def _range(setting: Setting) -> str:
    """``0.01 to 30 seconds``: a number's limits."""
    low, high = setting.limits or (0, 0)
    return f"{low:g} to {high:g}" + (f" {setting.unit}" if setting.unit else "")


def facts(setting: Setting) -> str:
    """What the table says of a setting beyond its doc: required, limits. Sentences, or ""."""
    said = []
    if setting.required:
        said.append("Required.")
    if setting.required_while:
        said.append(f"Required while {setting.required_while}.")
    if setting.limits:
        said.append(f"{_range(setting)}.")
    elif setting.unit:
        said.append(f"In {setting.unit}.")
    return " ".join(said)


def sample() -> str:
    """``packaging/callgate.toml``: every setting, set, shown with its default, or (a secret) pointed
    to callgate.env."""
    url, cause = _row("ari", "url"), _row("gate", "deny_cause")
    secrets = ", ".join(f"[{s.section}] {s.key}" for s in TABLE if s.secret)
    header = (
        "/etc/callgate/callgate.toml: the settings of `callgate serve` (owner root, group callgate, "
        f"mode 0640).\n\nEvery key has a second name in the environment: [{url.section}] {url.key} is "
        f"{url.env}, [{cause.section}] {cause.key} is {cause.env}, and so on; the environment wins. "
        f"The secrets ({secrets}, and a Redis URL with a password) are not in this file: they are "
        "in /etc/callgate/callgate.env (mode 0600), which the systemd unit loads into the "
        "environment. See packaging/callgate.env.\n\n"
        'Lines starting with "#key = value" are optional settings shown with their default: remove '
        'the "#" to change one. A missing, misspelt or mistyped setting stops callgate at start '
        "with a message naming each one, so a typo never goes unnoticed. docs/operations.md "
        "explains each choice.\n\n"
        "This file is made from callgate/settingtable.py by `python -m callgate.settings --sample`."
    )
    lines = _comment(header)
    for section, intro in SECTIONS.items():
        lines += ["", f"[{section}]", *_comment(intro), ""]
        for setting in (s for s in TABLE if s.section == section):
            lines += _comment(f"{setting.doc} {facts(setting)}".strip())
            if setting.secret:
                lines.append(
                    f"# {setting.key}: set {setting.env} in callgate.env rather than here."
                )
                continue
            value = setting.default if setting.example is None else setting.example
            live = setting.required or setting.set_in_sample
            lines.append(f"{'' if live else '#'}{setting.key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def _needed(setting: Setting) -> bool:
    """Whether callgate cannot start without it while the settings it depends on keep their defaults."""
    when = setting.required_while
    if when is None:
        return setting.required
    other = _row(when.section, when.key)
    sampled = other.set_in_sample and other.example is not None
    return when.holds(other.example if sampled else other.default)


def env_file() -> str:
    """``packaging/callgate.env``: a ``NAME=value`` line, with its placeholder, for each secret and
    each setting whose value may hold one; a "#" line for one callgate can start without."""
    header = (
        "/etc/callgate/callgate.env: callgate's secrets (owner root, mode 0600).\n\n"
        "systemd reads this file (EnvironmentFile= in callgate.service) as root before it starts "
        "callgate, so callgate.toml, which more people may read, holds no secret. Any setting can be "
        "given here as CALLGATE_<SECTION>_<KEY>; a value here wins over callgate.toml.\n\n"
        'Format: one NAME=value a line, no spaces around "=", no "export". Keep values free of '
        'spaces, quotes, "$" and backslashes, and the same file can be read by a shell too '
        "(docs/operations.md does, for the admin commands).\n\n"
        "This file is made from callgate/settingtable.py by "
        "`python -m callgate.settings --env-file`."
    )
    lines = _comment(header)
    for setting in (s for s in TABLE if s.env_example is not None):
        if setting.secret:
            about = f"{setting.doc} {facts(setting)}".strip()
        else:
            about = (
                "when it holds a password, set the whole value here rather than in callgate.toml."
            )
        lines += ["", *_comment(f"[{setting.section}] {setting.key}: {about}")]
        lines.append(f"{'' if _needed(setting) else '#'}{setting.env}={setting.env_example}")
    return "\n".join(lines) + "\n"


def _values(setting: Setting) -> str:
    """The Values column: the type, the choices or the limits, the form of a text."""
    if setting.choices:
        return one_of(tuple(f"`{c}`" for c in setting.choices))
    if setting.limits:
        return _range(setting)
    words = {int: "a whole number", float: "a number", bool: "`true` or `false`"}
    if setting.kind is str:
        text = "text" if setting.form is Form.TEXT else setting.form.value
    else:
        text = words[setting.kind]
    return f"{text}, in {setting.unit}" if setting.unit else text


def _cell(text: str) -> str:
    """``text`` in one table cell: one line, paragraphs apart by a line break, no stray ``|``."""
    paragraphs = (" ".join(p.split()).replace("|", "\\|") for p in text.split("\n\n"))
    return "<br>".join(paragraphs)


def reference() -> str:
    """The settings reference of the operations guide, as Markdown: one table per section."""
    intro = (
        "Every setting of `/etc/callgate/callgate.toml`, and its name in the environment, which wins "
        "over the file. In the environment, true is also written "
        f"{one_of(tuple(f'`{w}`' for w in TRUE_WORDS[1:]))} and false "
        f"{one_of(tuple(f'`{w}`' for w in FALSE_WORDS[1:]))}. A secret belongs in "
        "`/etc/callgate/callgate.env`, never in the settings file."
    )
    lines = [BEGIN, "", *textwrap.wrap(intro, WIDTH, break_on_hyphens=False)]
    for section, about in SECTIONS.items():
        text = f"**`[{section}]`** {' '.join(about.split())}"
        lines += ["", *textwrap.wrap(text, WIDTH, break_on_hyphens=False), ""]
        lines += [
            "| Key | Environment | Default | Values | What it is for |",
            "|---|---|---|---|---|",
        ]
        for s in (s for s in TABLE if s.section == section):
            default = "required" if s.required else f"`{toml_value(s.default)}`"
            if s.required_while:
                default += f", required while `{s.required_while}`"
            values = _values(s) + (" (a secret: keep it in callgate.env)" if s.secret else "")
            doc = _cell(s.doc)
            lines.append(f"| `{s.key}` | `{s.env}` | {default} | {values} | {doc} |")
    return "\n".join([*lines, "", END])


def guide_block(text: str) -> str:
    """The reference as it stands between the markers in the guide's ``text`` ("" without them)."""
    found = re.search(rf"^{re.escape(BEGIN)}$.*?^{re.escape(END)}$", text, re.MULTILINE | re.DOTALL)
    return found[0] if found else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m callgate.settings", description="Write out the settings table."
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--sample", action="store_true", help="print packaging/callgate.toml")
    what.add_argument("--env-file", action="store_true", help="print packaging/callgate.env")
    what.add_argument("--reference", action="store_true", help="print the guide's reference")
    what.add_argument(
        "--update-guide", action="store_true", help=f"replace the reference in {GUIDE.name}"
    )
    args = parser.parse_args(argv)
    if args.sample:
        print(sample(), end="")
    elif args.env_file:
        print(env_file(), end="")
    elif args.reference:
        print(reference())
    else:
        text = GUIDE.read_text(encoding="utf-8")
        old = guide_block(text)
        if not old:
            parser.error(f"{GUIDE}: no settings reference markers")
        GUIDE.write_text(text.replace(old, reference()), encoding="utf-8")
    return 0
