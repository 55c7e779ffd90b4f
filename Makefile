# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist processes for `make test`, one thread each (tests/conftest.py); 0: one process
TEST_WORKERS ?= 2

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e '.[test]'
	@# pip byte-compiles one file at a time (53 s of its 2 min here); compileall on every core, and like pip
	@# it passes over the few files that are not Python 3 (some packages ship such test data)
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/alexnet demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build src/*.egg-info
