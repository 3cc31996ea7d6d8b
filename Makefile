# Set-up and everyday commands. Each target creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a plain `torch` requirement can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The embedded default study on the phantom cohort (about 20 minutes on 2 cores); running it
# again continues an interrupted study and skips finished stages. Report: runs/phantom-default/report.html
demo: install
	$(BIN)/cardiofair run

test: install
	$(BIN)/python -m pytest

# Slow tests too (GPU tests still need a GPU).
test-all: install
	$(BIN)/python -m pytest -m "not gpu"

bench: install
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_generator.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
