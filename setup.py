"""Optional: the decision core compiled with mypyc, for ``replay`` of very large CDR files.

``CALLGATE_COMPILE=1 pip install --no-build-isolation .`` (mypy installed) compiles the core and replay's
path from the very same source; without the variable (the default, and every test's way) callgate is pure
Python. Why and what it buys: docs/performance.md. Everything else about the package is in pyproject.toml.
"""

import os
from pathlib import Path

from setuptools import setup

# The core (every module of callgate/core/, the folder that defines it) and the rest of replay's path:
# the store's values and the in-memory store, reading the CDR, the replay loop.
REPLAY_PATH = [
    "callgate/store/protocol.py",
    "callgate/store/memory.py",
    "callgate/offline/cdr.py",
    "callgate/offline/replay.py",
]
COMPILED = sorted(str(p) for p in Path("callgate/core").glob("*.py")) + REPLAY_PATH

ext_modules = []
if os.environ.get("CALLGATE_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
