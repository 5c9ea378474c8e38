# The gateway's commands. Every target prepares what it needs (tools/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.cache/bin:$(PATH)
CONFIG ?= config/gateway.yaml
PYTEST_ARGS ?=
# `make up`: data, logs, dev key and state under VAR_DIR (git-ignored); UP_ARGS e.g.
# --free-ports, --port plant=18090, --build-dir DIR (tests run a second stack that way),
# --probe-period S --probe-timeout S --probe-failures N (liveness probes; period 0: none)
VAR_DIR ?= var
UP_ARGS ?=

.PHONY: help bootstrap up down test test-unit test-integration test-e2e lint render check protos migrate bench bench-audit token demo clean deploy-check deploy-smoke helm-render

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

bootstrap: ## install system packages, the virtualenv and OPA (done by every target)
	@tools/bootstrap.sh

render: bootstrap ## render Envoy and authz runtime configs from $(CONFIG) into build/
	$(PY) render.py --config $(CONFIG) --out build

POLICY_DIR ?= policies
check: bootstrap ## render $(CONFIG) to a temp dir, envoy --mode validate every output, opa check + test $(POLICY_DIR)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
		$(PY) render.py --config $(CONFIG) --out "$$out" --policy-dir $(POLICY_DIR) --validate
	.cache/bin/opa check $(POLICY_DIR)
	.cache/bin/opa test $(POLICY_DIR)

up: bootstrap ## run the whole gateway as local processes (Ctrl-C or `make down` stops it)
	$(PY) -m devstack --var-dir $(VAR_DIR) up --config $(CONFIG) $(UP_ARGS)

down: ## stop what `make up` started
	@if [ -x $(PY) ]; then $(PY) -m devstack --var-dir $(VAR_DIR) down; fi

test: bootstrap ## run every test (unit, integration, e2e) against real services
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: bootstrap ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: bootstrap ## integration tests only (real PostgreSQL, Redis, OPA, Envoy)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: bootstrap ## end-to-end tests only (through the real Envoy)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: bootstrap ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

protos: bootstrap ## compile protos/ with grpcio-tools
	$(PY) tools/gen_protos.py

migrate: bootstrap ## alembic upgrade head against $$AUTHZ_DATABASE_URL (the migrations login, after provisioning)
	$(VENV)/bin/alembic upgrade head

BENCH_ARGS ?=
bench: bootstrap ## run the benchmark harness (bench/), results in bench/results/ (BENCH_ARGS=--quick)
	@if [[ ! -f $(VENV)/.bench-installed || pyproject.toml -nt $(VENV)/.bench-installed ]]; then \
		$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]' && touch $(VENV)/.bench-installed; fi
	@tools/build-vegeta.sh
	@tools/build-opa-envoy.sh
	$(PY) -m bench $(BENCH_ARGS)
	@$(MAKE) --no-print-directory bench-audit

bench-audit: bootstrap ## the audit's figures: the journal's CPU per check (fsync off, batch) and the shipper's rows/s
	@for journal in none off batch; do $(PY) -m bench.pipeline_cost --journal $$journal --concurrency 32; done
	$(PY) -m bench.shipper_throughput

token: bootstrap ## sign a development token: make token ROLE=admin CUSTOMER=cust-1 [PLAN=trial TRIAL=1]
	@$(PY) -m devstack --var-dir $(VAR_DIR) token --role "$(or $(ROLE),customer)" \
		--customer "$(CUSTOMER)" $(if $(PLAN),--plan "$(PLAN)") $(if $(filter 1 true yes,$(TRIAL)),--trial)

demo: bootstrap ## a scripted walk through the running gateway (needs `make up`)
	@$(PY) -m devstack --var-dir $(VAR_DIR) demo

deploy-check: bootstrap ## static checks of deploy/: terraform fmt, checkov, actionlint, helm lint/template
	tools/deploy-check.sh

deploy-smoke: bootstrap ## build the production images (podman) and smoke-test them as Cloud Run runs them
	eval "$$(PATH=$(CURDIR)/.cache/bin:$$PATH bash ../shared/containers/setup --env)" && deploy/images/smoke.sh

TARGET_NAMESPACE ?= gateway
helm-render: bootstrap ## render the kubernetes target into deploy/helm/gateway/files/rendered (before helm install)
	$(PY) render.py --config $(CONFIG) --target kubernetes --var namespace=$(TARGET_NAMESPACE) \
		--out deploy/helm/gateway/files/rendered --envoy-dir /etc/gateway/envoy

clean: down ## remove build output, caches and local data
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache
