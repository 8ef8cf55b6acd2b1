# The two commands: `make run` and `make test`. `make help` lists the rest.
SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help run deps build build-all smoke test fmt fmt-check lint cargo-test e2e-test deploy-check bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: deps build ## Create and migrate the local databases, start all five services, Ctrl-C stops them
	@exec scripts/run-local.sh

deps: ## Check (or start) Postgres and RabbitMQ before anything is built; say how to get them if missing
	@scripts/check-deps.sh

build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

build-all: ## Build every target: binaries, tests, benchmarks (debug)
	$(CARGO) build --workspace --all-targets

# `make test` lints while it builds: clippy-driver is rustc with clippy's lints added, so as the workspace's
# wrapper it compiles every target once, for clippy, the binaries and the tests alike (`cargo clippy` and then a
# build compile every dependency twice, once in check mode). The walkthrough then runs the binaries built with
# the tests: `cargo build --bins` alone unifies features without the dev-dependencies and would build again.
CLIPPY_DRIVER ?= $(shell command -v clippy-driver 2>/dev/null)
LINTED := RUSTC_WORKSPACE_WRAPPER="$(CLIPPY_DRIVER)" CLIPPY_ARGS=-Dwarnings

# The deploy checks need nothing built: they run alongside the tests, which leave part of the CPUs waiting, and
# report at the end.
test: fmt-check ## Formatting, clippy, every test, the README walkthrough; the deploy checks when their tools are here
	@if [ -z "$(CLIPPY_DRIVER)" ]; then echo "clippy-driver not found: rustup component add clippy" >&2; exit 1; fi
	@$(MAKE) --no-print-directory $(LINTED) build-all
	@report=$$(mktemp); trap 'rm -f "$$report"' EXIT; checks=; \
	if deploy/check.sh --tools-present; then \
		deploy/check.sh >"$$report" 2>&1 & checks=$$!; \
	elif [ -n "$${CI:-}" ]; then \
		echo "deploy checks: validators missing; CI installs them (deploy/install-tools.sh)" >&2; exit 1; \
	else \
		echo "deploy checks skipped: their validators are not installed (deploy/install-tools.sh installs them; make deploy-check runs them)" >"$$report"; \
	fi; \
	$(MAKE) --no-print-directory $(LINTED) cargo-test && scripts/smoke-local.sh; status=$$?; \
	if [ -n "$$checks" ] && ! wait "$$checks"; then status=1; fi; \
	cat "$$report"; exit $$status

smoke: build ## The README walkthrough (scripts/smoke.sh) against make run's native stack, started and stopped here
	@scripts/smoke-local.sh

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check: ## Fail on unformatted code
	$(CARGO) fmt --all -- --check

lint: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The end-to-end tests mostly wait (for processes to start, for events to arrive): two per CPU keep the CPUs busy
# (on 2 CPUs, 70 s instead of 114 s); no more than 8 at once, so the stacks' connections stay well within
# Postgres's default max_connections.
TEST_THREADS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2); t=$$((n * 2)); [ $$t -gt 8 ] && t=8; echo $$t)

cargo-test: ## Every test: unit, service and end-to-end (needs local Postgres and RabbitMQ)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast --test-threads $(TEST_THREADS); \
	else \
		$(CARGO) test --workspace --all-targets --no-fail-fast; \
	fi

bench: ## Signups/s vs the argon2 bound, latency, memory, 2x overload; suggestions at 1M users (release build)
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p e2e --bench signup
	$(CARGO) bench -p e2e --bench friends

deploy-check: ## Validate the compose file, images, Kubernetes, ECS and pipeline definitions offline
	deploy/check.sh

clean: ## Remove build output
	$(CARGO) clean
