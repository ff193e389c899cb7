# ORConsole: everything a fresh machine needs is done by these targets.
#   make demo   - the main job against the built-in simulators (window if a display, else headless)
#   make test   - venv, install, the whole suite headless (offscreen, and UI tests again under Xvfb)
#   make bundle - one-folder PyInstaller bundle, then start the built binary headless to check it
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT := out
export QT_QPA_PLATFORM ?= offscreen

.PHONY: all demo demo-window test test-fast test-ui-xvfb system-deps venv bundle bench clean screenshots

all: test

system-deps:
	@bash .ci/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: system-deps venv
	@if [ -n "$$DISPLAY" ] && [ -z "$$CI" ]; then \
		$(MAKE) --no-print-directory demo-window; \
	else \
		mkdir -p $(OUT); $(VENV)/bin/orconsole demo --headless --artifacts $(OUT); \
	fi

# the bedside window on the simulators: demo users, calibration and today's output check are set up
# first (passwords in out/demo-credentials.json), then the console opens in developer mode
demo-window: venv
	@mkdir -p $(OUT)
	@rm -f $(OUT)/demo-state.json
	$(VENV)/bin/orconsole demo --headless --setup-only --artifacts $(OUT)
	ORCONSOLE_HOME=$(OUT) ORCONSOLE_INSTALLATION_KEY=$(OUT)/installation-key.pem QT_QPA_PLATFORM=xcb \
		$(VENV)/bin/orconsole --dev --config orconsole/data/site-simulator.toml \
		--db "$$($(PY) -c 'import json,sys; print(json.load(open(sys.argv[1]))["db"])' $(OUT)/demo-state.json)"

test: system-deps venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=20
	@if [ -d tests/ui ]; then $(MAKE) --no-print-directory test-ui-xvfb; fi

test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

# the widget-driven workflow again on a real X server (xcb) — the whole tests/ui already ran offscreen
test-ui-xvfb: venv
	QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" $(PY) -m pytest -q -p no:cacheprovider \
		tests/ui/test_workflow.py tests/ui/test_treatment_screen.py

bench: venv
	$(PY) -m benchmarks.link --json
	$(PY) -m benchmarks.records --json
	@if [ -f benchmarks/treatment.py ]; then $(PY) -m benchmarks.treatment --json; fi

bundle: system-deps venv
	$(VENV)/bin/pyinstaller --noconfirm --clean --distpath dist --workpath build pyinstaller.spec
	$(PY) scripts/check_bundle.py dist/orconsole

screenshots: venv
	$(PY) scripts/screenshots.py

clean:
	rm -rf build dist $(OUT) .pytest_cache
