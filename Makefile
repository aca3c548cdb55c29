# One command per task. Everything runs from the project's own virtual environment in .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run up test lint bench bench-ping bench-idle bench-fleet bench-console smoke install clean

# Recipes are silent (@) so that `make bench` prints nothing but its JSON on stdout.
$(STAMP): pyproject.toml
	@echo "installing IKOMA into $(VENV) ..." >&2
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip >&2
	@$(BIN)/pip install --quiet -e '.[dev]' >&2
	@touch $(STAMP)

install: $(STAMP)

# `make run &` works once installed: `ikoma up` reads no input, and prints a `ready:` line when serving.
run: $(STAMP) ## start IKOMA on http://127.0.0.1:$PORT (3000; SQLite in ./data unless DATABASE_URL is set)
	$(BIN)/ikoma up

# e2e tests mostly wait on the processes they start: 4 workers keep two cores busy (TEST_WORKERS=0: serial)
TEST_WORKERS ?= 4

test: $(STAMP) ## the whole suite: unit, integration (SQLite + PostgreSQL), e2e, migrations
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=25

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# the `bench` extra holds the peers (procrastinate, pgqueuer) that bench/peers.py compares with
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) pyproject.toml
	@$(BIN)/pip install --quiet -e '.[bench]' >&2
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## issue 11 benchmarks, one JSON document each: dispatch (+ yardstick), costs, peers (PostgreSQL)
	@$(BIN)/python bench/dispatch.py
	@$(BIN)/python bench/costs.py
	@$(BIN)/python bench/peers.py

bench-fleet: $(STAMP) ## largest fleet of simulated runners one `ikoma serve` keeps up with (SQLite, JSON)
	@$(BIN)/python bench/fleet.py

bench-ping: $(STAMP) ## create→SUCCEEDED latency of 200 pings through `ikoma up`'s local runner (JSON)
	@$(BIN)/python bench/ping.py

# the server at API_URL, else IKOMA_API_URL, else http://127.0.0.1:$PORT (as `ikoma up` and the CLI)
bench-idle: $(STAMP) ## server CPU and RSS of 1,000 runners long-polling with nothing to do, create→claim among them (JSON)
	@$(BIN)/python bench/idle.py

bench-console: $(STAMP) ## fleet and machine page render time and page/asset sizes with 500 servers and 24 h of metrics (JSON)
	@$(BIN)/python bench/console.py

smoke: ## walk Playbook → Server → Runner → Order → Claim → Start → Complete against a running server
	bash scripts/smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
