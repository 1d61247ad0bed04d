# PerfHub: `make run` serves it, `make test` checks it. Both set everything up
# on first use and reuse it afterwards.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest setup static lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

static: $(STAMP)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

run: static
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin
	@echo "PerfHub: http://$${PERFHUB_BIND:-127.0.0.1:8000}/  (Ctrl-C stops it)"
	bin/serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: static
	$(BIN)/pytest

test: lint typecheck pytest

# Re-pin the transitive dependencies after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
