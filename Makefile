# Everything installs into the project: .venv/ (Python, from the hashed lock) and
# toolchain/node_modules/ (Foundry 1.7.1 native binaries, solc, protocol artifacts, pinned).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NM := toolchain/node_modules
FOUNDRY_BINS := $(CURDIR)/$(NM)/@foundry-rs/anvil-linux-amd64/bin:$(CURDIR)/$(NM)/@foundry-rs/cast-linux-amd64/bin:$(CURDIR)/$(NM)/@foundry-rs/forge-linux-amd64/bin
# Native binaries first on PATH: the npm launchers set TARGET_TOOL and break cast-inside-forge.
export PATH := $(FOUNDRY_BINS):$(CURDIR)/$(BIN):$(PATH)
MULTI_CONFIG ?= config/devnet-multi.toml
SCENARIO ?= stress

.PHONY: install toolchain contracts lint test faults demo abis clean

install: $(VENV)/.installed toolchain contracts

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

toolchain: $(NM)/.installed

$(NM)/.installed: toolchain/package.json toolchain/package-lock.json
	cd toolchain && npm ci --no-audit --no-fund --loglevel=error
	touch $@

contracts: out/forge/.built

out/forge/.built: $(NM)/.installed $(wildcard contracts/*.sol) foundry.toml scripts/solc-wrapper
	forge build --offline
	touch $@

# Regenerate contracts_abi/ from the pinned packages and our build (outputs are committed).
abis: install
	$(BIN)/python scripts/sync_abis.py

lint: $(VENV)/.installed
	$(BIN)/ruff check agent tests scripts
	$(BIN)/ruff format --check agent tests scripts
	$(BIN)/mypy --strict agent
	$(BIN)/hadolint Dockerfile

# Two workers (2 cores; many tests wait on an anvil or a subprocess). Work units (tests/conftest.py):
# the e2e modules together (one stressed devnet), the integration modules together (one deployed
# devnet), any other module whole. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
test: install lint
	$(BIN)/pytest -q -m "not faults" -n $(PYTEST_WORKERS) --dist loadscope

# The fault matrix: each fault injected for real against the daemon (tests/faults/).
faults: install
	$(BIN)/pytest -q -m faults tests/faults

demo: install
	@set -e; trap '$(BIN)/hedge-agent devnet down >/dev/null 2>&1 || true' EXIT; \
	rm -rf var/demo-multi; $(BIN)/hedge-agent devnet down >/dev/null 2>&1 || true; \
	$(BIN)/hedge-agent devnet up --chains 2; \
	$(BIN)/hedge-agent devnet play $(SCENARIO); \
	echo; echo "==== one tick: two positions on two chains, one budget ($(MULTI_CONFIG)) ===="; \
	HEDGE_AGENT_AGENT__LOG_FORMAT=console $(BIN)/hedge-agent run --config $(MULTI_CONFIG) --once; \
	echo; echo "==== proposals ===="; \
	$(BIN)/hedge-agent proposals list --config $(MULTI_CONFIG); \
	echo; echo "==== hedge-agent status: every position, its liquidation and guard price ===="; \
	$(BIN)/hedge-agent status --config $(MULTI_CONFIG); \
	echo; echo "Safe Transaction Builder files:"; ls -1 var/demo-multi/safe-tx-builder 2>/dev/null || true; \
	echo; echo "S&P 500 put ticket (advisory, for your broker):"; cat var/demo-multi/spx_tickets.csv 2>/dev/null || echo "(none this run)"

clean:
	rm -rf out var .pytest_cache .mypy_cache .ruff_cache
