# `make test` is the whole check (CI runs it); `make demo` streams from a local model.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: test lint venv clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check llmstreamer.py test_llmstreamer.py examples
	$(VENV)/bin/mypy --strict llmstreamer.py
	$(VENV)/bin/vermin --target=3.9- --violations --no-tips --eval-annotations llmstreamer.py test_llmstreamer.py examples

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis
