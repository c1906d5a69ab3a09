# The two commands of a fresh machine: `make demo` and `make test`. Both set up what they need.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test lint typecheck unit proto bench clean dev-up dev-down

setup:
	@bash deploy/bootstrap.sh

demo: setup
	$(PY) -m services.cli.demo

test: setup lint typecheck unit

lint:
	.venv/bin/ruff check services workflows tests bench proto
	.venv/bin/ruff format --check services workflows tests bench proto

typecheck:
	.venv/bin/mypy

unit:
	.venv/bin/pytest -q

proto: setup
	$(PY) proto/generate.py

bench: setup
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

dev-up: setup
	$(PY) -m services.cli.main dev up

dev-down:
	$(PY) -m services.cli.main dev down

clean:
	rm -rf .custos .make .mypy_cache .ruff_cache .pytest_cache
