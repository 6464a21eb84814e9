# Two verbs a new user needs: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/convstream demo

test: $(STAMP)
	$(BIN)/ruff check stream models tests bench
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/models models

lint: $(STAMP)
	$(BIN)/ruff check stream models tests bench
	$(BIN)/ruff format --check stream models tests bench

clean:
	rm -rf $(VENV) demo-out
