# The two commands of the README:
#   make demo   install what is needed, then run the whole path locally
#   make test   install what is needed, then lint, type-check and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install browser bench

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: install
	$(BIN)/python -m receiver demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Download speed on the storage emulator (numbers kept in docs/benchmarks.md).
bench: install
	PYTHONPATH=. $(BIN)/python benchmarks/download.py

# The status page is tested in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: could not install chromium; the browser test will be skipped"

test: lint browser
	$(BIN)/python -m pytest
