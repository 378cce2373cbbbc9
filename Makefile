# The README's two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
# For development: `make test-fast` (no slow tests) and `make lint` (ruff).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rsseg-installed
# python3.12 from PATH, else from pyenv's versions (its shim fails when 3.12 is not the active version)
PY312 := $(shell for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
DEMO_OUT ?= outputs/demo
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu: torch's CPU wheels (PyPI's CUDA build makes a 6.5 GB venv)
TORCH_INDEX ?=
# where test-torch-free builds the base install (no torch) it predicts with
TORCH_FREE_VENV ?= /tmp/rsseg-torch-free

.PHONY: install demo test test-fast test-torch-free lint clean

$(PY):
	@test -n "$(PY312)" || { echo "error: python3.12 not found; install Python 3.12 (torchgeo >= 0.9 needs it), e.g. pyenv install 3.12" >&2; exit 1; }
	$(PY312) -m venv $(VENV)

# dev pulls the train and dask extras: the tests train, export and run Dask
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
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

# the base install as a user gets it (`pip install .` in a fresh venv, no torch) predicts from a .onnx
# that this venv exports (tests/test_torch_free.py); the venv is removed afterwards
test-torch-free: $(STAMP)
	@test -n "$(PY312)" || { echo "error: python3.12 not found; install Python 3.12, e.g. pyenv install 3.12" >&2; exit 1; }
	rm -rf $(TORCH_FREE_VENV)
	$(PY312) -m venv $(TORCH_FREE_VENV)
	$(TORCH_FREE_VENV)/bin/python -m pip install -q .
	RSSEG_TORCH_FREE_VENV=$(TORCH_FREE_VENV) $(PY) -m pytest -q tests/test_torch_free.py -k venv; \
		status=$$?; rm -rf $(TORCH_FREE_VENV); exit $$status

# ruff's rule set lives in pyproject.toml ([tool.ruff])
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache
