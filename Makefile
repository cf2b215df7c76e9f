# Two commands do all the set-up on a fresh machine:
#   make book   builds the HTML book into _build/html (installs what it needs first)
#   make test   runs every test (installs what it needs first)
# Without an active virtual environment both create .venv/ here. The CPU build
# of torch 2.13.0 is installed only when no torch is importable, and never
# upgraded: an unpinned torch would pull a multi-GB CUDA build.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ifdef VIRTUAL_ENV
BIN :=
else
BIN := .venv/bin/
endif
PYTHON := $(BIN)python
# One stamp per interpreter, so switching environments re-installs.
STAMP := .make/installed-$(shell echo "$(VIRTUAL_ENV)" | md5sum | cut -c1-8)
BOOK_JS := book/_vendor/.stamp
# Matplotlib's font cache lives in the checkout: a cache in ~/.cache written by
# another installation can lack matplotlib's bundled fonts, and the findfont
# warnings that follow land on stderr, which nbval counts as a changed output.
export MPLCONFIGDIR := $(CURDIR)/.make/matplotlib

.PHONY: help install test test-lib test-book test-portable test-installed book vendor check-html notebooks bench bench-quick lint clean

help:
	@echo "make book   build the HTML book into _build/html"
	@echo "make test   run every test (library tests, then the notebooks with nbval)"
	@echo "make test-portable   every chapter's asserts on other seeds, old vector instructions, one thread"
	@echo "make test-installed  one chapter against the package installed from its wheel"
	@echo "make lint   ruff over the library and tests"

$(STAMP): pyproject.toml
	@if [ -z "$$VIRTUAL_ENV" ] && [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install --quiet -e ".[book,test,dev]"
	@mkdir -p .make && touch $@

# Built here, before any notebook: building it inside a kernel prints to stderr.
install: $(STAMP)
	@$(PYTHON) -c "import matplotlib.pyplot"

# book/conftest.py applies book/nbval_sanitize.cfg, so the plain command a reader
# types, `pytest --nbval book/`, is the one tested here, spread over the cores by
# pytest-xdist (one worker per core, one torch thread per worker; loadscope keeps a
# notebook's cells in order on one worker). On 2 cores this takes the chapters from
# 12.3 to 7.9 minutes.
XDIST := -n auto
test: install
	$(PYTHON) -m pytest $(XDIST) tests/
	$(PYTHON) -m pytest $(XDIST) --dist loadscope --nbval book/ -p no:cacheprovider

test-lib: install
	$(PYTHON) -m pytest $(XDIST) tests/

test-book: install
	$(PYTHON) -m pytest $(XDIST) --dist loadscope --nbval book/ -p no:cacheprovider

# Another machine amounts to another seed: every chapter's cells run and asserts
# checked (--nbval-lax: outputs not compared), once on other seeds with the oldest
# vector instructions and the chapters' own thread counts (one process, as a reader runs
# them), once on other seeds with one torch thread (spread over the cores).
# PORTABLE_NB picks chapters (default: all of them).
PORTABLE_NB ?= book/
test-portable: install
	BOOK_SEED=1 ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default \
		$(PYTHON) -m pytest --nbval-lax $(PORTABLE_NB) -p no:cacheprovider
	BOOK_SEED=2 BOOK_THREADS=1 $(PYTHON) -m pytest $(XDIST) --dist loadscope --nbval-lax $(PORTABLE_NB) \
		-p no:cacheprovider

# As Colab installs it: the wheel in a fresh virtual environment, one chapter
# run against it (not against this checkout). NB_INSTALLED=book/NN_slug.ipynb picks another.
test-installed: install
	PYTHON="$$($(PYTHON) -c 'import sys; print(sys.executable)')" bash scripts/test_installed_chapter.sh $(NB_INSTALLED)

# Chapters are written as jupytext percent scripts in book/src/ (readable diffs);
# this regenerates book/*.ipynb and executes them so they carry their outputs.
# One chapter: make notebooks NB=02_forward_noising
NB ?= $(notdir $(basename $(wildcard book/src/[0-9]*.py)))
notebooks: install
	@for n in $(NB); do $(BIN)jupytext --quiet --to ipynb --output book/$$n.ipynb book/src/$$n.py || exit 1; done
	$(PYTHON) scripts/execute_notebooks.py $(addprefix book/,$(addsuffix .ipynb,$(NB)))

# MathJax and the ipywidgets HTML manager, pinned, copied from npm so the
# built pages need no CDN.
$(BOOK_JS): scripts/vendor_js.sh book/widgets-setup.js
	bash scripts/vendor_js.sh book/_vendor
	@touch $@

vendor: $(BOOK_JS)

book: install $(BOOK_JS)
	$(BIN)jupyter-book build . --builder html -W -n --keep-going --all

# The built book in headless Chromium (Debian's package), network blocked:
# math typeset, no error outputs, no broken links, every t-scrubber works.
check-html: install
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@[ -d scripts/node_modules/playwright-core ] || npm ci --prefix scripts --no-audit --no-fund
	REQUIRE_BOOK_HTML=1 $(PYTHON) -m pytest tests/test_book_html.py -v

# Time to quality and speed beside diffusers and lucidrains (own venv in bench/.venv), then
# the quality yardstick of the shipped digits models (the project's venv) -> bench/RESULTS.md
bench:
	bash bench/run.sh

# A smoke run of the same (short budgets, one speed round) into bench/quick/ (git-ignored)
bench-quick:
	bash bench/run.sh quick

lint: install
	$(PYTHON) -m ruff check diffusion_core tests

clean:
	rm -rf _build .make .jupyter_cache book/_vendor
