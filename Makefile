# Two commands run everything: `make train` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
export OPTJAX_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)

.PHONY: train test notebooks venv clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

train: venv
	$(BIN)/python -m optjax.train --dataset mnist --model mlp --optimizer adam --learning-rate 1e-3 --steps 3000 --batch-size 100

test: venv
	$(BIN)/python -m pytest -q

notebooks: venv
	$(BIN)/python notebooks/run.py

clean:
	rm -rf $(VENV)
