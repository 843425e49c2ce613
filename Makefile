# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs, trains a short run on the built-in data, writes a sample grid
#   make test   -> creates .venv, installs, runs the test suite under tensorflow, jax and torch
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
BACKENDS ?= torch tensorflow jax
DEMO_BACKEND ?= torch

.PHONY: install demo test test-backend browser bench clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-cpu.txt -e '.[tensorflow,jax,torch,export,serve,grpc,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/nebula train --preset demo --out runs/demo
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/nebula sample --model runs/demo -n 64 --seed 0 -o runs/demo/grid.png
	@echo "demo: grid written to runs/demo/grid.png"

# The suite under every backend in BACKENDS, as concurrent pytest processes (tests/support/run_suite.py):
# the first backend's backend-independent tests (serving, layout, run bookkeeping), then each
# backend's other tests. torch goes first: its eager train step traces and compiles nothing, so
# the backend-independent tests that train run cheapest there. TEST_JOBS: processes at a time
# (default: all); PYTEST_ARGS go to every process.
TEST_JOBS ?= 0
test: $(STAMP)
	$(PY) tests/support/run_suite.py --backends "$(BACKENDS)" --jobs $(TEST_JOBS) -- $(PYTEST_ARGS)

# Headless Chromium + chromedriver for the gallery page's browser tests (tests/test_gallery_browser.py;
# they skip with the reason when none is installed). Debian's packages via apt (as root, or with sudo);
# nothing downloads a browser build of its own. CHROMIUM / CHROMEDRIVER point the tests at others.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "browser: $$(command -v chromium) and $$(command -v chromedriver) are installed"; \
	else \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; \
	fi

test-backend: $(STAMP)
	KERAS_BACKEND=$(BACKEND) $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
