# Every target makes its own virtual environment when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration test-faults bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash scripts/check-unsafe-yaml

typecheck: $(STAMP)
	$(BIN)/mypy orchestrator participants contracts tests bench scripts/mutation_check.py

test: lint typecheck
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

# Every fault campaign at full size (and those that restart the shared RabbitMQ and
# PostgreSQL), then the mutation checks; the scoreboard goes to .faults/scoreboard.jsonl.
test-faults: $(STAMP)
	mkdir -p .faults
	SAGA_FAULTS_SCALE=full SAGA_FAULTS_REPORT=.faults/scoreboard.jsonl \
		$(BIN)/pytest -q -s -m '' tests/faults
	$(BIN)/pytest -q -s -m faults tests/integration
	$(BIN)/python scripts/mutation_check.py

demo: $(STAMP)
	$(BIN)/python -m orchestrator.demo

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# The standard saga workload on this product, the floor, DBOS and Celery (bench/), sized
# to finish in under ten minutes; BENCH_ARGS= (empty) runs python -m bench's defaults
# (N=2000, C=100 and 10), or pass options, e.g. make bench BENCH_ARGS='--runs 5'.
BENCH_ARGS ?= --sagas 400 --concurrency 100
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
