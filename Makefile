.PHONY: run test lint bench

# Set up (venv, install, migrate, demo data, start-up cleanup) and serve on :8000, DEBUG=1.
run:
	scripts/run

# The whole test suite (what .ci/run calls).
test:
	scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
