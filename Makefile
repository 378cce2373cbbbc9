# The README's two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
# For development: `make test-fast` (no slow tests) and `make lint` (ruff).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rsseg-installed
# python3.12 from PATH, else from pyenv's versions (its shim fails when 3.12 is not the active version)
PY312 := $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
DEMO_OUT ?= outputs/demo
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu: torch's CPU wheels first (PyPI's CUDA build makes a 6.5 GB venv)
TORCH_INDEX ?=

.PHONY: install demo test test-fast lint clean

$(PY):
	@test -n "$(PY312)" || { echo "error: python3.12 not found; install Python 3.12 (torchgeo >= 0.9 needs it)" >&2; exit 1; }
	$(PY312) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev,onnx,dask,viewer,regularize]"
	touch $(STAMP)

install: $(STAMP)

# --overwrite: `make demo` again replaces the previous demo run (`rsseg demo` alone refuses to)
demo: $(STAMP)
	$(VENV)/bin/rsseg demo --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(PY) -m pytest

# the inner loop: everything but the tests marked slow (training end to end, the browser, big CLI runs)
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# ruff's rule set lives in pyproject.toml ([tool.ruff])
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache
