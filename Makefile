# callgate: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test fast deps deb-deps deb asterisk venv lint typecheck unit bench compiled clean

DEMO_REPORT := build/demo-report.html
demo: $(STAMP)
	@mkdir -p $(dir $(DEMO_REPORT))
	$(BIN)/callgate replay --html $(DEMO_REPORT) examples/Master.csv
	@echo "the report to look at: $(DEMO_REPORT) (open file://$(CURDIR)/$(DEMO_REPORT) in a browser)"

# The README's picture of the demo's report, taken by Debian's headless Chromium (the flags keep it off
# the network it would otherwise wait for). Run it after a change to the report, and commit the PNG.
CHROMIUM := chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars
.PHONY: report-picture
report-picture: deps demo
	@mkdir -p docs/img
	profile=$$(mktemp -d) && $(CHROMIUM) --user-data-dir=$$profile --window-size=1000,1300 \
	  --screenshot=docs/img/replay-report.png file://$(CURDIR)/$(DEMO_REPORT) 2>/dev/null; \
	  status=$$?; rm -rf $$profile; exit $$status
	@ls -l docs/img/replay-report.png

test: deps $(STAMP) lint typecheck asterisk unit

# System packages the suite needs, installed with apt only when missing: redis-server (real-Redis tests),
# docker-compose (validates docker/docker-compose.yml; no engine needed), gcc and Python's headers (the
# mypyc build of the core, setup.py), chromium (renders replay's HTML report: tests/test_report_browser.py,
# make report-picture), prometheus and its promtool (tests/test_prometheus.py), and what `make deb` needs
# (DEB_NEEDS; tests/test_deb.py builds and installs the package). Asterisk's own build and run
# dependencies (sipp among them) are installed by docker/build-asterisk.sh.
APT_NEEDS := redis-server:redis-server docker-compose:docker-compose gcc:gcc chromium:chromium prometheus:prometheus
# command:package. dpkg-buildpackage is in dpkg-dev; dh-virtualenv needs python3-venv for its
# --builtin-venv (Debian's python3 makes the package's venv).
DEB_NEEDS := dh:debhelper dh_virtualenv:dh-virtualenv dpkg-buildpackage:dpkg-dev
deb-deps:
	@missing=""; for need in $(DEB_NEEDS); do \
	  command -v $${need%%:*} >/dev/null 2>&1 || missing="$$missing $${need#*:}"; done; \
	/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

deps: deb-deps
	@missing=""; for need in $(APT_NEEDS); do \
	  command -v $${need%%:*} >/dev/null 2>&1 || missing="$$missing $${need#*:}"; done; \
	$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

# The Debian package, dist/callgate_<version>_<arch>.deb (packaging/build-deb.sh, packaging/debian/):
# `make deb VERSION=0.0.1` builds another version (only a VERSION given on the command line counts, not
# one in the environment), `make deb DIST=/tmp/debs` puts it elsewhere. About 20 s.
deb: deb-deps
	VERSION=$(if $(filter command line,$(origin VERSION)),$(VERSION)) DIST=$(DIST) packaging/build-deb.sh

# A real Asterisk built from Debian's source package, cached by version outside the work tree
# (/var/cache/callgate/asterisk/<version>); minutes the first time, instant after.
asterisk:
	bash docker/build-asterisk.sh

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

# The pure unit tests: no redis-server, no Asterisk, no mypyc build, no Debian package (markers in
# pyproject.toml; the redis marker is put on every test of a Redis fixture by tests/conftest.py).
# `make test` still runs them all.
FAST := not redis and not asterisk and not compiled and not deb
fast: $(STAMP)
	$(BIN)/pytest -m "$(FAST)" --durations=5

unit: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='callgate/core/*' --fail-under=90

# The decision core compiled with mypyc from the same source (setup.py; docs/performance.md), installed
# beside the tree, not over it: tests and the editable install stay pure Python.
COMPILED := build/compiled
$(COMPILED)/.built: $(STAMP) setup.py $(shell find callgate -name '*.py')
	rm -rf $(COMPILED)
	CALLGATE_COMPILE=1 $(BIN)/pip install -q --no-build-isolation --no-deps --target $(COMPILED) . >/dev/null
	@touch $@
compiled: deps $(COMPILED)/.built

bench: deps $(STAMP) asterisk compiled
	CALLGATE_COMPILED=$(COMPILED) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
