# The two commands: `make run` and `make test`. `make help` lists the rest.
SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help run build test fmt fmt-check lint cargo-test e2e-test deploy-check bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: build ## Create and migrate the local databases, start all five services, Ctrl-C stops them
	@exec scripts/run-local.sh

build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

test: fmt-check lint build cargo-test ## Formatting, clippy with warnings as errors, and every test
	@if [ -x deploy/check.sh ]; then $(MAKE) --no-print-directory deploy-check; fi

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check: ## Fail on unformatted code
	$(CARGO) fmt --all -- --check

lint: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cargo-test: ## Every test: unit, service and end-to-end (needs local Postgres and RabbitMQ)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
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
