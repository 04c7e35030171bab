.PHONY: run test lint bench mutation

# Set up (venv, install, migrate, demo data, start-up cleanup) and serve on :8000, DEBUG=1.
run:
	scripts/run

# The whole test suite (what .ci/run calls).
test:
	scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

# Mutation testing of the core modules with mutmut 3 (slow: docs/mutation.md), e.g.
# make mutation MODULES="refs policy" MUTATION_WORKERS=2
MODULES ?=
MUTATION_WORKERS ?= 1
mutation:
	.venv/bin/python -m tests.mutation $(MODULES) --workers $(MUTATION_WORKERS)
