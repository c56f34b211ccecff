"""Record ``dialplan show`` of each fixture dialplan from the real test Asterisk, for fast unit tests.

    .venv/bin/python -m tests.record_dialplans      # rewrites tests/fixtures/dialplans/*.txt

Each ``tests/fixtures/dialplans/<case>.conf`` is an extensions.conf: ``@DIALPLAN@`` stands for the
project's ``dialplan/`` folder (the shipped include and FreePBX hooks, as they are now) and
``@FIXTURES@`` for the fixtures' folder (``parts/``: FreePBX-shaped dialplans and the like). One test
Asterisk loads each in turn (``dialplan reload``), and ``asterisk -rx "dialplan show"`` is written to
``<case>.txt``, as an admin would give it to ``callgate doctor --dialplan``.
``tests/test_doctor.py`` loads the same sources into a real Asterisk again and checks that doctor finds
in the live dialplan, read both ways, what it finds in the recording.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dialplans"
CASES = tuple(sorted(p.stem for p in FIXTURES.glob("*.conf")))


def source(case: str) -> str:
    """The extensions.conf of a case, its placeholders filled in."""
    text = (FIXTURES / f"{case}.conf").read_text(encoding="utf-8")
    return text.replace("@DIALPLAN@", str(ROOT / "dialplan")).replace("@FIXTURES@", str(FIXTURES))


def load(ast: AsteriskInstance, case: str) -> str:
    """Make ``case`` the running dialplan; returns its ``dialplan show``."""
    (ast.workdir / "extensions.conf").write_text(source(case), encoding="utf-8")
    ast.rx("dialplan reload")
    return ast.rx("dialplan show")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("cases", nargs="*", default=CASES, help="default: every case")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="record-dialplans-") as work,
        asterisk(asterisk_prefix(), Path(work), dialplan=source(CASES[0])) as ast,
    ):
        for case in args.cases:
            (FIXTURES / f"{case}.txt").write_text(load(ast, case), encoding="utf-8")
            print(f"{case}.txt")


if __name__ == "__main__":
    main()
