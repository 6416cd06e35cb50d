# From DDPM to DDIM: the two commands.
#
#   make book   set up .venv and the data, then build the book (executing the notebooks) into _build/html
#   make test   set up .venv, the data and the browser, then run every test (scripts/run_tests.sh):
#               unit tests, the notebooks under nbval against the built wheel, the strict
#               build (warnings are errors), and the browser check of the built pages
#
# Both start from a fresh clone: they create .venv with `python3 -m venv`, install
# requirements.txt and the library, ship MathJax (npm registry) with the book, and install Debian's
# dataset-fashion-mnist (chapter 10; apt-get, root or passwordless sudo). Set-up is
# skipped when nothing it depends on has changed (stamp files inside .venv).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MATHJAX_VERSION := 3.2.2

.PHONY: help book test setup setup-browser setup-data mathjax clean

help:
	@echo "make book   build the book into _build/html (executes the notebooks, cached)"
	@echo "make test   run every test: unit tests, nbval on the notebooks, strict build, browser check"
	@echo "make clean  remove _build (keeps .venv)"

## Set-up ------------------------------------------------------------------------------------

# The virtual environment and requirements.txt; redone only when requirements.txt changes.
$(VENV)/.requirements.stamp: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed, found " + sys.version)'
	@test -x $(BIN)/python || { echo "Creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

# The library, installed in editable mode: the book and the unit tests see the working tree.
# (make test also builds a wheel and runs the notebooks against that, outside the repository.)
$(VENV)/.ddpm_lib.stamp: pyproject.toml $(VENV)/.requirements.stamp
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	@touch $@

# MathJax 3 from the npm registry, copied into book/_static/mathjax (git-ignored); the script
# returns at once when that version is already in place.
mathjax:
	@bash scripts/install_mathjax.sh $(MATHJAX_VERSION)

setup: $(VENV)/.requirements.stamp $(VENV)/.ddpm_lib.stamp mathjax

# Debian's chromium for the browser check (apt-get; needs root or passwordless sudo).
setup-browser:
	bash scripts/install_browser.sh

# Debian's dataset-fashion-mnist for chapter 10 (apt-get; needs root or passwordless sudo).
setup-data:
	bash scripts/install_data.sh

## The two commands ------------------------------------------------------------------------

book: setup setup-data
	$(BIN)/jupyter-book build .
	@test -f _build/html/index.html
	@echo "The book is in _build/html/index.html"

test: setup setup-data setup-browser
	VENV=$(VENV) bash scripts/run_tests.sh

clean:
	rm -rf _build
