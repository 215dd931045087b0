# Sentistream: `make demo` runs the whole system, `make test` runs every test. Each sets itself up.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

FAST := not kafka and not fault and not browser and not slow

.PHONY: help demo test test-fast lint fmt setup kafka-jars browser bench kafka-start kafka-stop check-gpu-pins clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

demo: setup kafka-jars ## set up, start broker + worker + replay + dashboard; Ctrl-C stops them
	$(BIN)/sentistream demo

test: setup kafka-jars browser lint ## set up, lint, then run the whole test suite
	$(BIN)/pytest

# The inner loop: no broker, no kill/restart, no browser, nothing slow (markers from tests/conftest.py).
test-fast: setup lint ## lint, then the tests that need no broker, browser or fault injection (~2 min)
	$(BIN)/pytest -m "$(FAST)"

lint: setup ## ruff (with the security rules) over the code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: setup ## format the code in place
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

setup: $(STAMP) ## the virtual environment with every Python package (quick when done)

# Re-installs only when pyproject.toml changes. torch alone is a few GB: once per environment.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ not found: install python3 (Debian: apt-get install python3 python3-venv)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --progress-bar off -e '.[dev]'
	touch $(STAMP)

kafka-jars: setup ## download Apache Kafka's jars from Maven Central once (cached)
	$(BIN)/python -c "from infra.broker import resolve_classpath; resolve_classpath()"

BROWSER_PKGS := chromium chromium-driver fonts-noto-color-emoji

browser: ## Debian's headless Chromium (+ an emoji font), for the real-browser dashboard test
	@{ command -v chromium && command -v chromedriver && dpkg -s fonts-noto-color-emoji; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(BROWSER_PKGS) >/dev/null; \
	  else echo "Chromium not found: run 'sudo apt-get install $(BROWSER_PKGS)'"; exit 1; fi; }

bench: setup kafka-jars ## run every benchmark (minutes); numbers land in benchmarks/results/
	$(BIN)/python benchmarks/engine_throughput.py
	$(BIN)/python benchmarks/producer_throughput.py
	$(BIN)/python benchmarks/stream_throughput.py
	$(BIN)/python benchmarks/dashboard_soak.py

kafka-start: setup kafka-jars ## start the local broker on 127.0.0.1:9092
	$(BIN)/sentistream kafka start

kafka-stop: setup ## stop the local broker
	$(BIN)/sentistream kafka stop

check-gpu-pins: setup ## ask PyPI which CUDA major the GPU image's torch/onnxruntime-gpu pins need (network)
	$(BIN)/python infra/check_gpu_pins.py --sizes

clean: ## remove caches and build outputs (keeps the venv and your models)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info out
