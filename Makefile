# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-stamp

.PHONY: run test lint install clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

install: $(INSTALLED)

# Migrate var/tayori.db, load the demo clinic if the database is empty, start the
# worker. `make run NOW=2026-12-01T10:00` starts the worker's clock at that moment.
run: $(INSTALLED)
	$(BIN)/tayori db upgrade
	$(BIN)/tayori demo load --if-empty $(if $(NOW),--now $(NOW))
	$(BIN)/tayori run $(if $(NOW),--now $(NOW))

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var
