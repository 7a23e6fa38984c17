# Two commands do all set-up on a fresh machine:
#   make run    set up .venv and open the series in JupyterLab   (make run-headless: execute every notebook)
#   make test   set up .venv and run the whole test suite offline (unit tests + nbval over notebooks/)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=$(CURDIR)/tests/offline

.PHONY: setup run run-headless test unit nbval clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build that lies on disk here (never a multi-GB CUDA build)
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt
	$(BIN)/pip install -q -c constraints.txt --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: setup
	$(BIN)/jupyter lab notebooks/

run-headless: setup
	HF_HUB_OFFLINE=1 $(BIN)/jupyter nbconvert --to notebook --execute --output-dir build/executed notebooks/[0-9]*.ipynb

test: setup
	$(OFFLINE) $(BIN)/python -m pytest -q tests notebooks --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env --durations=15

unit: setup
	$(OFFLINE) $(BIN)/python -m pytest -q tests

nbval: setup
	$(OFFLINE) $(BIN)/python -m pytest -q notebooks --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env

clean:
	rm -rf $(VENV) build
