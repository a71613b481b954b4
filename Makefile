# Commands a new user needs: `make demo` (set up + quickstart), `make test-fast` (the tests a developer
# runs while working: all but those marked slow) and `make test` (everything; what CI runs via .ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast clean

$(BIN)/locosim: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A CPU torch first where it is available locally; elsewhere pip picks the platform's torch.
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q "torch>=2.1"
	$(BIN)/pip install -q -e ".[test,browser,ray,notebooks,triton]"
	touch $(BIN)/locosim

setup: $(BIN)/locosim

demo: setup
	$(BIN)/locosim run scenarios/quickstart.yaml --out runs/quickstart-$$(date +%Y%m%d-%H%M%S)

test: setup
	$(BIN)/python -m pytest -q

# --durations: the slowest tests named at the end, so a slow one is seen, not guessed.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" --durations=5

clean:
	rm -rf runs .pytest_cache
