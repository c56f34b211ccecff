# callgate: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test deps venv lint typecheck unit bench clean

demo: $(STAMP)
	$(BIN)/callgate replay examples/Master.csv

test: deps $(STAMP) lint typecheck unit

# System packages the suite needs (redis-server for the real-Redis tests); installed only when missing.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server with apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='callgate/admission.py,callgate/engine.py,callgate/policy.py,callgate/policyfile.py,callgate/numbers.py,callgate/memstore.py,callgate/windows.py' --fail-under=90

bench: deps $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
