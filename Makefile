# PartyPilot: `make run` serves the product on http://127.0.0.1:8080; `make test` checks everything.
VENV ?= .venv
PY := $(VENV)/bin/python
SIMULATE ?= 1

.PHONY: help install install-runtime install-local install-load install-dev system-deps system-deps-test run serve seed \
	test lint typecheck pytest fuzz bench sim services-stop vendor lock clean

help:
	@echo "make run     install what is missing (runtime + nx-27017), start Redis + nx-27017, seed, serve on :8080"
	@echo "make test    install the dev tools too, then lint, types and the whole test suite"
	@echo "make fuzz    schemathesis over /api/openapi.json: every check, all phases, 5,000+ cases"
	@echo "make bench   benchmarks with figures and ratios against same-run baselines"
	@echo "make sim     dispatch-quality simulation of a city day, strategies side by side (docs/quality.md)"
	@echo "make lock    after a dependency change in pyproject.toml: re-resolve uv.lock and requirements/"

# Python packages from uv.lock: the runtime dependencies plus what each target needs (extras of
# pyproject.toml). A stamp per set makes a second run instant; dev includes local and load.
install: install-dev
install-runtime:
	@scripts/install.sh
install-local:
	@scripts/install.sh local
install-load:
	@scripts/install.sh local load
install-dev:
	@scripts/install.sh dev

# After editing dependencies in pyproject.toml (or the uv pin in requirements/bootstrap.in):
# re-resolve uv.lock, the image's requirements/runtime.txt and uv's own pin, all with hashes.
lock:
	@scripts/install.sh --bootstrap
	$(VENV)/bin/uv lock
	$(VENV)/bin/uv export --frozen --no-emit-project --format requirements-txt -o requirements/runtime.txt
	$(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 requirements/bootstrap.in \
		-o requirements/bootstrap.txt

system-deps:
	@scripts/system-deps.sh run

system-deps-test:
	@scripts/system-deps.sh test

run: system-deps install-local
	@$(PY) -m partypilot run $(if $(filter 0,$(SIMULATE)),--no-simulate,)

serve: install-runtime
	@$(PY) -m partypilot serve

seed: install-runtime
	@$(PY) -m partypilot seed

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: install-dev
	$(VENV)/bin/mypy

pytest: system-deps-test install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test: system-deps-test install-dev lint typecheck pytest

# The long run of tests/test_fuzz.py (make test runs a short one). FUZZ_SEED=N replays a run.
FUZZ_MAX_EXAMPLES ?= 120
FUZZ_MIN_CASES ?= 5000
fuzz: system-deps-test install-dev
	FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) FUZZ_MIN_CASES=$(FUZZ_MIN_CASES) \
	FUZZ_PHASES=examples,coverage,fuzzing,stateful FUZZ_TIMEOUT_S=3000 \
	$(PY) -m pytest tests/test_fuzz.py -s -p no:cacheprovider -o timeout=3600 $(PYTEST_ARGS)

bench: system-deps install-load
	$(PY) -m loadtests.bench $(BENCH_ARGS)

SCENARIO ?= loadtests/data/city_day.yaml
sim: system-deps install-load
	$(PY) -m partypilot simulate --scenario $(SCENARIO) $(SIM_ARGS)

services-stop: install-runtime
	$(PY) -m partypilot services stop

vendor:
	@scripts/vendor.sh

clean:
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache
