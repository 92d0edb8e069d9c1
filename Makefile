# Two commands from a fresh clone:  `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv on first use with uv (byte-compiled: imports are ~2.5x faster with .pyc files).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch: a local wheel folder where this machine has one, else PyTorch's CPU index.
TORCH_WHEELS ?= /opt/wheels
TORCH_SOURCE ?= $(if $(wildcard $(TORCH_WHEELS)/torch-2.13.0+cpu-*.whl),--find-links $(TORCH_WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
UV_INSTALL := $(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(TORCH_SOURCE) -c constraints/cpu.txt

.PHONY: install label-studio browser demo test test-fast lint lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
	$(UV_INSTALL) -e '.[dev]'
	touch $@

# Label Studio (the review queue's UI) in its own tool environment: its ~150 pins never meet the
# stack's. The project talks to it over HTTP with label-studio-sdk (flows/platform/review_server.py).
LABEL_STUDIO_VERSION ?= 1.23.2
LS_VENV ?= .venv-labelstudio

label-studio: $(LS_VENV)/.installed

$(LS_VENV)/.installed: | $(VENV)/.installed
	$(BIN)/uv venv --quiet --allow-existing --python $(PYTHON) $(LS_VENV)
	$(BIN)/uv pip install --python $(LS_VENV)/bin/python --compile-bytecode "label-studio==$(LABEL_STUDIO_VERSION)"
	# an empty, migrated database each new CASEPILOT_HOME copies (no accounts, no secret in it)
	rm -rf $(LS_VENV)/template
	COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false $(LS_VENV)/bin/python $(LS_VENV)/bin/label-studio version --data-dir $(LS_VENV)/template >/dev/null
	rm -f $(LS_VENV)/template/.env
	touch $@

demo: install label-studio
	$(BIN)/casepilot demo

test: install label-studio browser
	$(BIN)/python -m pytest

# Debian's headless Chromium for tests/integration/test_ui_screenshots.py (it skips, saying why, without one).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "browser: installing chromium failed; the UI screenshot test will skip"; \
	else echo "browser: no /usr/bin/chromium and no root apt-get to install it; the UI screenshot test will skip"; fi

test-fast: install label-studio
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

# Refresh the exact versions after changing pyproject.toml (review the diff before committing).
lock: install
	$(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable | grep -v '^casepilot' > constraints/cpu.txt

clean:
	rm -rf $(VENV) $(LS_VENV) .casepilot
