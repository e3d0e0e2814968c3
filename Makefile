# Gravity: `make help` lists the targets. Everything runs in .venv, created on first use.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard proto/gravity/v1/*.proto)
ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/gravity: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/gravity ## create .venv and install Gravity with its dev tools

serve: $(BIN)/gravity ## run the service with embedded defaults (memory store, local Ray, default catalog)
	$(BIN)/gravity serve $(ARGS)

test: $(BIN)/gravity ## run the whole test suite (needs Redis at 127.0.0.1:6379)
	$(BIN)/python -m pytest $(ARGS)

gen: $(BIN)/gravity ## regenerate the protobuf/gRPC code from proto/
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc -I proto \
	  --python_out=proto --grpc_python_out=proto --mypy_out=proto --mypy_grpc_out=proto $(PROTOS)

gen-check: $(BIN)/gravity ## fail if the committed generated code differs from a fresh generation
	@tmp=$$(mktemp -d); PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc -I proto \
	  --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) && \
	for f in $$(cd $$tmp && find . -name '*_pb2*'); do \
	  diff -q $$tmp/$$f proto/$$f >/dev/null || { echo "stale generated code: proto/$$f (run make gen)"; exit 1; }; \
	done; echo "generated code is up to date"

lint: $(BIN)/gravity ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(BIN)/gravity ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/gravity ## run every benchmark and print figures
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b $(ARGS) || exit 1; done

sim: $(BIN)/gravity ## replay the default scenario through the scheduler
	$(BIN)/gravity simulate simulations/scenarios/philly_hybrid.yaml $(ARGS)

.PHONY: help install serve test gen gen-check lint fmt bench sim
