# viewer-bridge: `make run` serves, `make test` runs every test. Both set up what they need.
#
# `make run` installs only what serving needs (the viewer endpoint, the browser
# page, --echo): a small venv, quick to build. `make test` installs every extra
# and the test tools into the same venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# The real viewer the interop tests drive (a pre-release; DimOS 0.0.15 itself pins 0.32.0a2).
DIMOS_VIEWER := dimos-viewer==0.32.0a3

.PHONY: run test test-random lint fuzz bench dist docs system-deps multicast dimos-venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	@touch $@

$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,test]' '$(DIMOS_VIEWER)'
	@touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/viewer-bridge serve --echo text

# Debian packages for the viewer, browser and terminal tests (root: installs; else says what to run).
system-deps:
	@bash scripts/system-deps.sh

# LCM needs a multicast route; a loopback-only machine has none.
multicast:
	@bash scripts/lcm-multicast.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# DimOS 0.0.15 with viewer-bridge[dimos] installed beside it, for tests/test_dimos.py (cached).
dimos-venv:
	@bash bench/setup_dimos.sh --with-viewer-bridge

test: $(TEST_STAMP) system-deps multicast dimos-venv
	$(MAKE) lint
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

# The whole suite in a random order (pytest-randomly prints the seed; replay one with --randomly-seed=N).
test-random: $(TEST_STAMP) system-deps multicast dimos-venv
	$(BIN)/pytest -n 2 --dist loadfile -p randomly

# 100k examples per property, two properties at a time; prints examples/s. About 25 minutes on 2 busy
# cores, most of it the JSON-object property (75-270 examples/s); the timeout only catches a hang.
fuzz: $(TEST_STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/core/test_protocol_fuzz.py -p no:cacheprovider -n 2 --timeout 3600 -q

# sdist + wheel in dist/, checked as PyPI would check them.
dist: $(TEST_STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist
	$(BIN)/twine check --strict dist/*

# The settings tables in README.md and docs/ from the settings' help in src/viewer_bridge/config.py.
docs: $(RUN_STAMP)
	$(BIN)/python scripts/update-docs.py

# Interleaved rounds against DimOS's server and a count-only floor, then the bridge under attack
# (floods and stalls, timed on a private LCM bus); writes docs/performance.md.
bench: $(TEST_STAMP) multicast
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,bench]'
	$(BIN)/python -m bench.run --docs docs --targets dimos,floor,floor-iso,bridge,bridge-lcm,bridge-rerun --variant 'bridge-lcm:bridge:transports=["lcm"]' --scenarios default,attack
	$(BIN)/python -m bench.fleet --docs docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build
