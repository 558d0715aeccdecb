# The two commands of the README: `make run` (the main job on embedded sample data) and `make test`.
# Both set up .venv first (idempotent: seconds once done).
VENV := .venv
BIN := $(VENV)/bin
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: setup run test bench clean
setup:
	@bash scripts/setup_env.sh

run: setup
	@$(BIN)/dcmif demo --out out/demo

test: setup
	@$(BIN)/python -m pytest -q test

bench: setup
	@$(BIN)/dcmif bench --json out/bench.json

clean:
	rm -rf $(VENV) build out
