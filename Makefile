# The gateway's commands. Every target prepares what it needs (tools/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.cache/bin:$(PATH)
CONFIG ?= config/gateway.yaml
PYTEST_ARGS ?=

.PHONY: help bootstrap up down test test-unit test-integration test-e2e lint render check protos migrate bench token demo clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

bootstrap: ## install system packages, the virtualenv and OPA (done by every target)
	@tools/bootstrap.sh

render: bootstrap ## render Envoy and authz runtime configs from $(CONFIG) into build/
	$(PY) render.py --config $(CONFIG) --out build

up: bootstrap ## run the whole gateway as local processes (Ctrl-C or `make down` stops it)
	$(PY) -m devstack up --config $(CONFIG)

down: ## stop what `make up` started
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

test: bootstrap ## run every test (unit, integration, e2e) against real services
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: bootstrap ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: bootstrap ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

protos: bootstrap ## compile protos/ with grpcio-tools
	$(PY) tools/gen_protos.py

migrate: bootstrap ## alembic upgrade head against $$AUTHZ_DATABASE_URL
	$(VENV)/bin/alembic upgrade head

bench: bootstrap ## run the benchmark harness (bench/), results in bench/results/
	$(PY) -m bench

token: bootstrap ## sign a development token: make token ROLE=admin CUSTOMER=cust-1
	@$(PY) -m devstack token --role "$(or $(ROLE),customer)" --customer "$(CUSTOMER)"

demo: bootstrap ## a scripted walk through the running gateway (needs `make up`)
	$(PY) -m devstack demo

clean: down ## remove build output, caches and local data
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache
