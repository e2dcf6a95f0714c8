# viewer-bridge: `make run` serves, `make test` runs every test. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fuzz bench system-deps multicast dimos-venv clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,web3d]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/viewer-bridge serve --echo text

# Debian packages for the viewer, browser and terminal tests (root: installs; else says what to run).
system-deps:
	@bash scripts/system-deps.sh

# LCM needs a multicast route; a loopback-only machine has none.
multicast:
	@bash scripts/lcm-multicast.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# DimOS 0.0.15 with viewer-bridge[dimos] installed beside it, for tests/test_dimos.py (cached).
dimos-venv:
	@bash bench/setup_dimos.sh --with-viewer-bridge

test: $(STAMP) system-deps multicast dimos-venv
	$(BIN)/pip install --quiet -c constraints.txt 'dimos-viewer==0.32.0a3'
	$(MAKE) lint
	$(BIN)/pytest -n 2 --dist loadfile

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/core/test_protocol_fuzz.py -p no:cacheprovider

# Interleaved rounds against DimOS's server and a count-only floor; writes docs/performance.md.
bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python -m bench.run --docs docs --targets dimos,floor,bridge,bridge-lcm --variant 'bridge-lcm:bridge:transports=["lcm"]'
	$(BIN)/python -m bench.fleet --docs docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
