# PartyPilot: `make run` serves the product on http://127.0.0.1:8080; `make test` checks everything.
VENV ?= .venv
PY := $(VENV)/bin/python
SIMULATE ?= 1

.PHONY: help install system-deps system-deps-test run serve seed test lint typecheck pytest fuzz bench sim services-stop vendor clean

help:
	@echo "make run     install what is missing, start Redis + nx-27017, seed, serve on :8080"
	@echo "make test    install, then lint, types and the whole test suite"
	@echo "make fuzz    schemathesis over /api/openapi.json: every check, all phases, 5,000+ cases"
	@echo "make bench   benchmarks with figures and ratios against same-run baselines"
	@echo "make sim     dispatch-quality simulation of a city day, strategies side by side (docs/quality.md)"

install:
	@scripts/install.sh

system-deps:
	@scripts/system-deps.sh run

system-deps-test:
	@scripts/system-deps.sh test

run: install system-deps
	@$(PY) -m partypilot run $(if $(filter 0,$(SIMULATE)),--no-simulate,)

serve: install
	@$(PY) -m partypilot serve

seed: install
	@$(PY) -m partypilot seed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

pytest: install system-deps-test
	$(PY) -m pytest $(PYTEST_ARGS)

test: install system-deps-test lint typecheck pytest

# The long run of tests/test_fuzz.py (make test runs a short one). FUZZ_SEED=N replays a run.
FUZZ_MAX_EXAMPLES ?= 120
FUZZ_MIN_CASES ?= 5000
fuzz: install system-deps-test
	FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) FUZZ_MIN_CASES=$(FUZZ_MIN_CASES) \
	FUZZ_PHASES=examples,coverage,fuzzing,stateful FUZZ_TIMEOUT_S=3000 \
	$(PY) -m pytest tests/test_fuzz.py -s -p no:cacheprovider -o timeout=3600 $(PYTEST_ARGS)

bench: install system-deps
	$(PY) -m loadtests.bench $(BENCH_ARGS)

SCENARIO ?= loadtests/data/city_day.yaml
sim: install system-deps
	$(PY) -m partypilot simulate --scenario $(SCENARIO) $(SIM_ARGS)

services-stop: install
	$(PY) -m partypilot services stop

vendor:
	@scripts/vendor.sh

clean:
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache
