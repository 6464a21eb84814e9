# The verbs a person needs: `make demo` and `make test` (both create .venv when it is missing),
# `make test-fast`, `make lint`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Outside tools some tests run, and the Debian packages that have them.
TOOLS := prometheus promtool docker-compose
TOOL_PACKAGES := prometheus docker-compose
# 1: a test whose tool is missing fails (make test); 0: it skips, saying what to install.
REQUIRE_ALL ?= 1

.PHONY: demo test test-fast lint bench tools clean

$(STAMP): pyproject.toml
	@echo "installing convstream and its test dependencies into $(VENV) (once, about a minute)"
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/convstream demo
	@echo "the convstream command is $(BIN)/convstream; put it on PATH with:"
	@echo "  source $(VENV)/bin/activate"

# The tools are installed when they can be (root and apt-get); otherwise make test says how,
# rather than letting their tests skip and pass.
tools:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ] || [ "$(REQUIRE_ALL)" = 0 ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make test: installing$$missing with apt-get ($(TOOL_PACKAGES)): the alert-rule, live-scrape and compose tests run them"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $(TOOL_PACKAGES) >/dev/null; \
	else \
	  echo "make test: missing$$missing, which the alert-rule, live-scrape and compose tests run."; \
	  echo "  install them:  sudo apt-get install $(TOOL_PACKAGES)"; \
	  echo "  or skip those tests:  make test REQUIRE_ALL=0"; \
	  exit 1; \
	fi

test: $(STAMP) tools
	$(BIN)/ruff check convstream tests bench research
	@# Two files at a time (most integration tests wait on the broker), then the tests that
	@# load both cores themselves or need them, one at a time.
	CONVSTREAM_REQUIRE_ALL=$(REQUIRE_ALL) $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not alone"
	CONVSTREAM_REQUIRE_ALL=$(REQUIRE_ALL) $(BIN)/python -m pytest -q -m alone

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/core convstream/core

lint: $(STAMP)
	$(BIN)/ruff check convstream tests bench research
	$(BIN)/ruff format --check convstream tests bench research
	$(BIN)/mypy convstream/core

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) demo-out
