# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs, trains a short run on the built-in data, writes a sample grid
#   make test   -> creates .venv, installs, runs the test suite under tensorflow, jax and torch
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
BACKENDS ?= tensorflow jax torch
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

# The whole suite under the first backend; backend-independent tests (serving, layout)
# are not repeated under the others. TEST_WORKERS pytest-xdist processes, one test file each
# at a time (module fixtures stay in one process), the longest files first (tests/conftest.py,
# LONG_FILES_FIRST); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	@set -e; first=1; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b"; \
	  if [ $$first = 1 ]; then sel=""; else sel="not backend_independent"; fi; \
	  KERAS_BACKEND=$$b $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	    $${sel:+-m "$$sel"} $(PYTEST_ARGS) || exit $$?; \
	  first=0; \
	done

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
