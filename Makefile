# Two commands run everything: `make train` and `make test`. Each builds .venv on first use.
# CI (.ci/run) runs `make lint`, then `make test` beside `make typecheck` and `make docs`;
# `make test-min` checks the lower bounds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MIN_VENV ?= .venv-min
SHARED_DATA := $(abspath ../shared/data)
export OPTJAX_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)
LINT_PATHS := optjax tests benchmarks notebooks/run.py docs
# Python writes the bytecode of what it imports, under .venv: the suite starts dozens of
# processes (xdist's workers, notebook kernels, the command line, the benchmarks), and each
# would otherwise compile JAX's sources again (4 of the 8 s that importing it takes), as it
# does where the environment sets PYTHONDONTWRITEBYTECODE.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX ?= $(abspath $(VENV))/pycache

.PHONY: train test notebooks lint typecheck docs test-min venv clean

# A changed pyproject.toml reinstalls. uv installs the packages (resolving and fetching them in
# parallel: 9 s where pip took 30, with empty caches, the same versions); it compiles no
# bytecode, so the thousands of modules that nothing imports are never compiled.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

train: venv
	$(BIN)/python -m optjax.train --dataset mnist --model mlp --optimizer adam --learning-rate 1e-3 --steps 3000 --batch-size 100

# The suite on one worker per core and, alongside, the tests on 8 simulated devices (a process
# of their own: JAX fixes its device count when it starts), whose report follows the suite's.
test: venv
	@log=$$(mktemp); \
	$(BIN)/python -m pytest -q tests/multidevice > $$log 2>&1 & multi=$$!; \
	$(BIN)/python -m pytest -q -n auto --dist worksteal; main=$$?; \
	wait $$multi; status=$$?; \
	echo "== tests/multidevice (8 simulated devices)"; cat $$log; rm -f $$log; \
	exit $$(( main || status ))

notebooks: venv
	$(BIN)/python notebooks/run.py

# Both checks run and report; either failing fails the target.
lint: venv
	@status=0; \
	$(BIN)/ruff check $(LINT_PATHS) || status=1; \
	$(BIN)/ruff format --check $(LINT_PATHS) || status=1; \
	exit $$status

typecheck: venv
	$(BIN)/mypy

# The API reference, from the docstrings; any warning is an error.
docs: venv
	$(BIN)/sphinx-build -W --keep-going -E -q -b html docs docs/_build/html

# The whole suite on the lowest declared versions (constraints-min.txt), in a fresh venv.
test-min:
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install --quiet uv
	$(MIN_VENV)/bin/uv pip install --quiet --python $(MIN_VENV)/bin/python -c constraints-min.txt -e '.[dev]'
	$(MIN_VENV)/bin/python -m pytest -q -n auto
	$(MIN_VENV)/bin/python -m pytest -q tests/multidevice

clean:
	rm -rf $(VENV) $(MIN_VENV) docs/_build
