"""Every ``yaml`` example in the docs loads, so the docs cannot rot; ``# invalid`` examples must fail.

An example whose first line is ``# invalid`` is a policy callgate must refuse; ``# invalid: KEY.PATH``
also names the key path that one of its problems must carry.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callgate.core.policyfile import load_policy
from callgate.errors import PolicyError

ROOT = Path(__file__).resolve().parents[1]
# The shared spec sits beside the repository in development; CI clones only the repository.
SOURCES = (
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    ROOT.parent / "shared" / "spec" / "policy.md",
)
BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INVALID = re.compile(r"#\s*invalid\b:?\s*(\S*)")


def examples() -> list[tuple[str, str]]:
    """(the block's text, where it is: ``file:line``) for every yaml block of every source."""
    found = []
    for path in SOURCES:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        for block in BLOCK.finditer(text):
            line = text.count("\n", 0, block.start()) + 2  # the block's first line
            found.append((block[1], f"{name}:{line}"))
    return found


EXAMPLES = examples()


def test_the_docs_have_examples() -> None:
    """docs/policy.md is in the repository and has examples, valid and invalid."""
    assert any(where.startswith("docs/policy.md") for _, where in EXAMPLES)
    assert any(INVALID.match(text) for text, _ in EXAMPLES)


@pytest.mark.parametrize(("text", "where"), EXAMPLES, ids=[where for _, where in EXAMPLES])
def test_example(text: str, where: str) -> None:
    """A documented example loads, unless it says it is invalid; then it is refused as it says."""
    invalid = INVALID.match(text.partition("\n")[0])
    if invalid is None:
        load_policy(text, where)
        return
    with pytest.raises(PolicyError) as caught:
        load_policy(text, where)
    if invalid[1]:
        assert invalid[1] in {p.path for p in caught.value.problems}, caught.value.problems
