# The two commands of the README: `make run` (the main job on embedded sample data) and `make test`.
# Both set up .venv first (idempotent: seconds once done).
VENV := .venv
BIN := $(VENV)/bin
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: setup run test bench clean
setup:
	@bash scripts/setup_env.sh

# Night street scenes with people, from the validation pairs of ../shared/data (never trained on): what the model
# is for. Without ../shared/data the demo replays the photos bundled with scikit-image.
SCENES := $(wildcard $(addprefix ../shared/data/msrs_fullres/vi/,00036N.png 00890N.png 01290N.png))

run: setup
	@$(BIN)/dcmif demo --out out/demo $(if $(SCENES),--photos $(SCENES))

test: setup
	@$(BIN)/python -m pytest -q test

bench: setup
	@$(BIN)/dcmif bench --json out/bench.json

clean:
	rm -rf $(VENV) build out
