"""Optional: the decision core compiled with mypyc, for ``replay`` of very large CDR files.

``CALLGATE_COMPILE=1 pip install --no-build-isolation .`` (mypy installed) compiles the modules below
from the very same source; without the variable (the default, and every test's way) callgate is pure
Python. Why and what it buys: docs/performance.md. Everything else about the package is in pyproject.toml.
"""

import os

from setuptools import setup

# The modules replay spends its time in: reading the CDR, the rules, the judgement and the store.
COMPILED = [
    "callgate/admission.py",
    "callgate/cdr.py",
    "callgate/engine.py",
    "callgate/keys.py",
    "callgate/memstore.py",
    "callgate/reasons.py",
    "callgate/replay.py",
    "callgate/rules.py",
    "callgate/store.py",
]

ext_modules = []
if os.environ.get("CALLGATE_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
