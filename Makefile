# The two commands of the README:
#   make demo   install the runtime (and the storage emulator), then run the whole path locally
#   make test   install the development tools too, then lint, type-check and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# Where `make demo` keeps its state; a second demo at once needs its own (and its own PORT).
DEMO_DIR ?= .demo

.PHONY: demo test lint install dev tools tf kserve fuzz bench

# What running the receiver needs, nothing more (requirements-demo.txt: the runtime pins,
# the storage emulator the demo starts, the build backend), and the package itself,
# editable, so that .venv/bin/receiver runs this checkout.
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-demo.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements-demo.txt
	$(PIP) --no-build-isolation --no-deps -e .
	touch $@

# The test, lint and benchmark tools on top (requirements-dev.txt); only `make test`,
# `make fuzz` and `make bench` need them.
dev: $(VENV)/.dev-installed

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

demo: install tf
	$(BIN)/receiver demo --dir $(DEMO_DIR)

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Speed on the storage emulator and real gunicorn; numbers and chart kept in docs/.
# Not part of `make test` (tests never time anything); about an hour and a half (the 5 GiB
# rows alone take about 50 minutes), and the first run about 20 minutes more making the
# benchmark's archives (kept in $TMPDIR/bench-archives).
bench: dev tools kserve
	PYTHONPATH=. $(BIN)/python benchmarks/download.py
	PYTHONPATH=. $(BIN)/python benchmarks/install.py --sizes 100 1024 --runs 3 --out docs
	PYTHONPATH=. $(BIN)/python benchmarks/install.py --sizes 5120 --kinds weights --runs 3 --table benchmarks-install-5gib --out docs
	PYTHONPATH=. $(BIN)/python benchmarks/sliced.py --size 2048 --rate 50 --runs 3 --out docs/benchmarks-sliced.md
	PYTHONPATH=. $(BIN)/python benchmarks/history.py --jobs 50 50000 --requests 200
	PYTHONPATH=. $(BIN)/python benchmarks/push.py --seconds 10 --burst 10000
	PYTHONPATH=. $(BIN)/python benchmarks/replicas.py --size 1024 --replicas 1 2 4 8 --down 4 --runs 3

# Tools the tests drive for real, from Debian: Chromium for the status page, and the
# archivers whose archives must install (Info-ZIP, bsdtar, 7-Zip), and igzip (ISA-L), which
# the install benchmark compares against. Needs root (apt-get);
# where they cannot be installed, the tests that need them skip and say so.
DEBIAN_TOOLS := chromium:chromium zip:zip unzip:unzip bsdtar:libarchive-tools 7zz:7zip zstd:zstd wrk:wrk igzip:isal
tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" != 0 ]; then \
		echo "note: not root, so apt-get cannot install$$missing;" \
			"the tests that need them will be skipped (pytest lists each with its reason)"; \
	elif [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests:$$missing (and what they depend on)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq $$missing >/dev/null; } || \
		echo "note: could not install$$missing; the tests that need them will be skipped"; \
	fi

# Virtualenvs of their own, each from its requirements-NAME.txt: TensorFlow (the tests and
# the demo's TF Serving stand-in, about 600 MB) and KServe's storage initializer library
# (benchmarks only; it pins google-cloud-storage < 3).
tf: .venv-tf/.installed
kserve: .venv-kserve/.installed

.venv-%/.installed: requirements-%.txt
	@echo "installing $< into .venv-$* (once)"
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

# The property tests with thousands of examples each (a few minutes).
fuzz: dev
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -p no:cacheprovider tests/test_fuzz.py

test: lint tools tf kserve
	$(BIN)/python -m pytest
