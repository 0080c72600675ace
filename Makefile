# Two commands: `make run` serves the app on 127.0.0.1:$(PORT); `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The wasm build, and the WebGPU build (with its asyncify wasm) for machines with a GPU.
ORT_FILES := ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm \
	ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm

# The suite always runs against the real Postgres and Redis (see DESIGN.md).
TEST_ENV := DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/samlabel} \
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/14} \
	SECRET_KEY=test-secret DEBUG=0 CHECKPOINT_DIR=$(CURDIR)/data/checkpoints

.PHONY: run test lint typecheck pytest setup-run setup-test clean

run: setup-run
	PORT=$(PORT) scripts/run-dev.sh

test: setup-test lint typecheck pytest

lint:
	$(BIN)/ruff check .
typecheck:
	$(TEST_ENV) $(BIN)/mypy .
pytest:
	$(TEST_ENV) $(BIN)/pytest

setup-run: $(VENV)/.run-installed static/vendor/ort/.installed
setup-test: $(VENV)/.test-installed static/vendor/ort/.installed /usr/bin/chromium

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU wheel; the GPU image installs CUDA's.
$(VENV)/.run-installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.run-installed

# onnxruntime-web from package-lock.json, copied into the static files the app serves itself.
static/vendor/ort/.installed: package.json package-lock.json Makefile
	npm ci --no-audit --no-fund
	mkdir -p static/vendor/ort
	cd node_modules/onnxruntime-web/dist && cp $(ORT_FILES) $(CURDIR)/static/vendor/ort/
	touch $@

# Debian's Chromium for the end-to-end tests (never a downloaded browser).
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core

clean:
	rm -rf $(VENV) node_modules static/vendor staticfiles
