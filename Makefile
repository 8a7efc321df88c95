# parleyd — the front door: make setup | run | test | lint | proto | bench
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTO_FILES := $(sort $(wildcard proto/parley/v1/*.proto))
GEN_DIR := generated
NODE_DIR := tests/clients/node

.PHONY: setup run test lint proto proto-check bench fuzz system-deps speech-deps node-deps browser-deps clean

# Idempotent: the venv is made once and reinstalled only when pyproject.toml changes.
setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || PYTHON=python3; \
	  test -x $(PY) || $${PYTHON:-$(PYTHON)} -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup speech-deps
	$(BIN)/parleyd serve

# System packages: espeak-ng (the built-in engine's voice) for run and test, Node.js and the C++
# gRPC toolchain for the polyglot client tests. Installed with apt-get only when missing.
speech-deps:
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng; }

system-deps: speech-deps
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "installing nodejs/npm with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
	fi
	@if ! command -v protoc >/dev/null || ! command -v grpc_cpp_plugin >/dev/null || \
	    ! command -v g++ >/dev/null || ! command -v pkg-config >/dev/null || \
	    ! pkg-config --exists grpc++ protobuf; then \
	  echo "installing protoc, grpc_cpp_plugin and libgrpc++-dev with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    protobuf-compiler protobuf-compiler-grpc libgrpc++-dev g++ pkg-config; \
	fi

# The WebRTC bridge's browser tests drive Debian's Chromium through playwright (executable_path);
# no browser is ever downloaded by playwright itself.
browser-deps:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Exact versions from package-lock.json (npm ci); re-run when the lock changes.
node-deps: system-deps
	@if [ ! -d $(NODE_DIR)/node_modules/@grpc/grpc-js ] || [ ! -d $(NODE_DIR)/node_modules/@grpc/proto-loader ] || \
	    [ $(NODE_DIR)/package-lock.json -nt $(NODE_DIR)/node_modules/.package-lock.json ]; then \
	  cd $(NODE_DIR) && npm ci --no-audit --no-fund --silent; \
	fi

test: setup node-deps browser-deps proto-check lint
	$(PY) -m pytest -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

# Regenerates generated/ from proto/ (python, pyi, grpc and typed grpc stubs, and parley.binpb: a
# FileDescriptorSet with imports and source info, served by reflection). Never edit generated/.
proto: setup
	rm -rf $(GEN_DIR)/parley
	$(MAKE) --no-print-directory _gen OUT=$(GEN_DIR)

_gen:
	mkdir -p $(OUT)
	$(PY) -m grpc_tools.protoc -Iproto \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  --python_out=$(OUT) --pyi_out=$(OUT) --grpc_python_out=$(OUT) --mypy_grpc_out=$(OUT) \
	  $(PROTO_FILES)
	$(PY) -m grpc_tools.protoc -Iproto --include_imports --include_source_info \
	  --descriptor_set_out=$(OUT)/parley/v1/parley.binpb $(PROTO_FILES)
	touch $(OUT)/parley/__init__.py $(OUT)/parley/v1/__init__.py $(OUT)/parley/py.typed

# Fails when generated/ no longer matches what proto/ generates.
proto-check: setup
	@tmp=$$(mktemp -d); $(MAKE) --no-print-directory _gen OUT=$$tmp >/dev/null; \
	  if diff -r -x __pycache__ $$tmp/parley $(GEN_DIR)/parley; then rm -rf $$tmp; echo "generated/ is up to date"; \
	  else rm -rf $$tmp; echo "generated/ is stale: run 'make proto' and commit"; exit 1; fi

bench: setup speech-deps
	$(PY) bench/unary.py
	$(PY) bench/interact.py
	$(PY) bench/voice.py
	$(PY) bench/asr_accuracy.py
	$(PY) bench/webrtc.py
	$(PY) bench/avatar.py

# The fuzzers with the long budget (about five minutes; the suite runs them short). Failing
# examples are kept in .hypothesis/ and replayed first next time; see tests/fuzz/profiles.py.
fuzz: setup
	PARLEYD_FUZZ_PROFILE=long $(PY) -m pytest -q tests/fuzz tests/domain/test_lifecycle_machine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(NODE_DIR)/node_modules
