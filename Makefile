# Set-up and everyday commands. Each target creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-frd demo app test test-slow test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a plain `torch` requirement can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# The app extra too: the suite drives `cardiofair app` (gradio) in a real server and browser.
	$(BIN)/python -m pip install --quiet -e '.[test,app]'
	touch $@

# The optional Fréchet Radiomics Distance (`quality.frd`, docs/quality.md): pyradiomics 3.0.1, which
# frd-score needs but does not declare, built without build isolation (its setup imports numpy and
# versioneer; 3.1.0 does not build), then the frd extra (frd-score, SimpleITK, OpenCV headless).
install-frd: install
	$(BIN)/python -m pip install --quiet numpy versioneer setuptools wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation pyradiomics==3.0.1
	$(BIN)/python -m pip install --quiet -e '.[frd]'

# The embedded default study on the phantom cohort (8-14 minutes on 2 cores); running it
# again continues an interrupted study and skips finished stages. Report: runs/phantom-default/report.html
demo: install
	$(BIN)/cardiofair run

# The browser explorer on the default study's model, dataset and synthetic data (after `make demo`).
app: install
	$(BIN)/cardiofair app --model runs/phantom-default/train --dataset runs/phantom-default/prepare \
		--synthetic runs/phantom-default/generate --quality runs/phantom-default/quality

# The fast suite: every test but those marked slow or gpu (pyproject.toml), a few minutes on 2 cores.
test: install
	$(BIN)/python -m pytest

# The slow tests alone: whole studies (the smoke study and every shipped real-cohort study on a
# small cohort in its layout), generation killed and resumed, training with two processes.
test-slow: install
	$(BIN)/python -m pytest -m "slow and not gpu"

# Everything a CPU machine can run (GPU tests still need a GPU).
test-all: test test-slow

bench: install
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_generator.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
