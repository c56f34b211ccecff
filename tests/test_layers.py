"""The folders are the layers: each one imports only the layers below it (docs/design.md's picture).

    core      pure decision code: numbers, policy, rules, engine, admission, keys
    store     the counter store: its Protocol, memory, Redis and the Lua scripts        -> core
    asterisk  ARI, AMI, Stasis routing, the gate, the spend feed, the event stream      -> store, core
    offline   CDR files, replay, its report                                             -> store, core
    ops       policy versions and holder, admin commands, status, metrics, alerts, audit, logs
                                                                                        -> asterisk, store, core
    (top)     cli, serve (the composition root), settings (settingtable, the table of them;
              settingdoc, what is written from it), errors                              -> anything

``errors`` (the exception tree) is open to every layer. ``settingtable`` (plain data, the standard
library only) is open to the layers whose behaviour a setting's mode picks: asterisk (``[ami]
settle_from``) and ops (``[log] format``). ruff keeps the core pure of I/O and clocks
(callgate/core/ruff.toml); this keeps the direction between folders.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "callgate"
LAYERS = ("core", "store", "asterisk", "offline", "ops")
MAY_IMPORT = {
    "core": {"core"},
    "store": {"store", "core"},
    "asterisk": {"asterisk", "store", "core", "settingtable"},
    "offline": {"offline", "store", "core"},
    # the alert triggers read the [alerts] settings; settings reads nothing of ops
    "ops": {"ops", "asterisk", "store", "core", "settings", "settingtable"},
}
OPEN_TO_ALL = {"errors"}


def _imports(path: Path) -> set[str]:
    """The callgate modules ``path`` imports, as their first name below ``callgate``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "callgate":
                names = [f"callgate.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "callgate" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    """Every module of a folder imports callgate modules of its own or lower layers only."""
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"callgate/{layer}/ is empty"
    wrong = {
        f"{m.relative_to(PACKAGE)} imports callgate.{name}"
        for m in modules
        for name in _imports(m) - MAY_IMPORT[layer] - OPEN_TO_ALL
    }
    assert not wrong, sorted(wrong)


def test_the_top_level_is_only_the_composition_root_and_its_settings() -> None:
    """Beside the layer folders, the package holds only the command line, the composition root
    (serve, and tenants: serve for many tenants, from serve's parts), the settings and the exception
    tree: a newcomer sees the architecture in the folder names."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == {"cli", "serve", "tenants", "settings", "settingtable", "settingdoc", "errors"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == {*LAYERS, "data"}
