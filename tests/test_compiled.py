"""The core compiled by mypyc (setup.py, ``make compiled``) decides exactly as the pure Python source.

The build is installed into a temporary directory beside nothing else; then the same replays and
explanations run both ways and must agree byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A policy that puts every counted scope and a mode: report limit to work on the shipped example.
TIGHT = (
    (ROOT / "callgate" / "data" / "default-policy.yaml")
    .read_text(encoding="utf-8")
    .replace("site_limits:", "site_limits:\n  calls_per_minute: {value: 2, mode: report}", 1)
)

pytestmark = pytest.mark.compiled


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("compiled")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
         "--target", str(target), str(ROOT)],
        env={**os.environ, "CALLGATE_COMPILE": "1"}, check=True, capture_output=True,
    )  # fmt: skip
    assert list((target / "callgate" / "core").glob("engine.*.so")), "mypyc built no engine module"
    return target


def callgate(path: Path, *args: str) -> str:
    """Run the CLI with ``path`` (the source tree or the compiled install) first on sys.path."""
    code = "import sys, callgate.cli as c; sys.exit(c.main())"
    run = subprocess.run(
        [sys.executable, "-P", "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True, text=True, cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    return run.stdout


def engine_file(path: Path) -> str:
    code = "import callgate.core.engine as e; print(e.__file__)"
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run(
        [sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_compiled_is_what_runs(compiled: Path) -> None:
    """The compiled install really is compiled, and the source tree really is not."""
    assert engine_file(compiled).strip().endswith(".so")
    assert engine_file(ROOT).strip().endswith("engine.py")


@pytest.mark.parametrize(
    "args",
    [
        ("replay", "--format", "jsonl", "examples/Master.csv"),
        ("replay", "--all", "examples/Master.csv"),
        ("replay", "--format", "jsonl", "--policy", "TIGHT", "examples/Master.csv"),
        ("explain", "--json", "--from", "1001", "--at", "2026-11-17T10:00", "011442079460000"),
        ("explain", "--from", "1001", "--at", "2026-11-21T03:00", "0118816123456789"),
    ],
)
def test_compiled_decides_as_pure_python(
    compiled: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Replays and explanations agree byte for byte between the compiled core and the source."""
    policy = tmp_path / "tight.yaml"
    policy.write_text(TIGHT, encoding="utf-8")
    args = tuple(str(policy) if a == "TIGHT" else a for a in args)
    pure = callgate(ROOT, *args)
    assert pure
    assert callgate(compiled, *args) == pure
