# Two commands do all set-up on a fresh machine:
#   make run    set up .venv and open the series in JupyterLab   (make run-headless: execute every notebook)
#   make test   set up .venv and run the whole test suite offline (unit tests + nbval over the solutions
#               edition, notebooks/solutions/, which proves every exercise's answer)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=$(CURDIR)/tests/offline

.PHONY: setup run run-headless test unit nbval test-packaged refresh-notebooks test-browser book notebooks clean

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

# the unit tests and nbval as two one-thread pytest runs side by side (tools/test.sh says why)
test: setup
	$(OFFLINE) tools/test.sh $(BIN)/python

unit: setup
	$(OFFLINE) $(BIN)/python -m pytest -q tests

nbval: setup
	$(OFFLINE) $(BIN)/python -m pytest -q notebooks/solutions --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env

# The series from the package alone, as on Colab: the wheel installed into a fresh venv with the colab
# extra and ipywidgets 7.7, only notebooks/*.ipynb copied into an empty folder, nbval there (about 15 min)
test-packaged: setup
	PY=$(PY) BUILD_PY=$(BIN)/python tools/packaged_run.sh

# Rebuild every notebook's badge, setup cell and embedded pictures from pyproject.toml, keeping every
# stored output (no execution): the one command after pointing [project.urls] Homepage at a fork
refresh-notebooks: setup
	$(BIN)/python tools/nb.py --keep-outputs notebooks/src/[0-9]*.py

# JupyterLab in headless Chromium: run notebooks 01, 08 and 09 (copies), check no cell fails, and move
# each widget panel's slider with the keyboard until its image redraws; screenshots in build/browser/.
# Installs Playwright (requirements-browser.txt) and Debian's chromium when missing (about 3 min on 2 idle cores, 5 on busy ones)
test-browser: setup
	$(BIN)/python -c "import playwright.sync_api" 2>/dev/null || $(BIN)/pip install -q -c constraints.txt -r requirements-browser.txt
	test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(OFFLINE) $(BIN)/python -m pytest -q -s --tb=short --confcutdir=tests/browser tests/browser/check_widgets.py

# Execute both editions of every notebook from notebooks/src/ (student: notebooks/, solutions:
# notebooks/solutions/); figures are written to images/ only here
notebooks: setup
	$(BIN)/python tools/nb.py notebooks/src/[0-9]*.py

# Both editions as a static HTML book with every figure inline, checked (build/book/index.html).
# Formulas use Debian's MathJax (libjs-mathjax), installed when missing, so the book reads offline
book: setup
	test -f /usr/share/javascript/mathjax/MathJax.js || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjs-mathjax; }
	$(BIN)/python tools/book.py --out build/book

clean:
	rm -rf $(VENV) build
