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
	$(BIN)/ruff check convstream tests bench research
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/core convstream/core

lint: $(STAMP)
	$(BIN)/ruff check convstream tests bench research
	$(BIN)/ruff format --check convstream tests bench research

clean:
	rm -rf $(VENV) demo-out
