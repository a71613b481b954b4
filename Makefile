# Commands a new user needs: `make demo` (set up the core package + run the quickstart), `make test-fast`
# (the tests a developer runs while working: all but those marked slow) and `make test` (everything; what CI
# runs via .ci/run). `make demo` installs only locosim's own dependencies; `make test` adds the extras the
# tests use (TEST_EXTRAS). PIP_FLAGS is passed to every pip call (e.g. --no-index for an offline install).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?=
TEST_EXTRAS ?= test,browser,ray,notebooks,triton,fast

.PHONY: setup setup-test demo test test-fast clean

$(BIN)/locosim: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_FLAGS) --upgrade pip
	# A CPU torch first where it is available locally; elsewhere pip picks the platform's torch.
	$(BIN)/pip install -q $(PIP_FLAGS) torch==2.13.0 || $(BIN)/pip install -q $(PIP_FLAGS) "torch>=2.1"
	$(BIN)/pip install -q $(PIP_FLAGS) -e .
	touch $(BIN)/locosim

# The test extras (pytest, hypothesis, Playwright and kaleido for the browser tests, Ray, the notebook
# runner, Triton, numba for the compiled network kernel), on top of the core install; the stamp records
# which extras were installed.
$(VENV)/.test-extras: $(BIN)/locosim pyproject.toml
	$(BIN)/pip install -q $(PIP_FLAGS) -e ".[$(TEST_EXTRAS)]"
	echo "$(TEST_EXTRAS)" > $@

setup: $(BIN)/locosim

setup-test: $(VENV)/.test-extras

demo: setup
	$(BIN)/locosim run scenarios/quickstart.yaml --out runs/quickstart-$$(date +%Y%m%d-%H%M%S)
	@echo "Next: source $(VENV)/bin/activate   (puts locosim on PATH; the README's commands assume it)"

test: setup-test
	$(BIN)/python -m pytest -q

# --durations: the slowest tests named at the end, so a slow one is seen, not guessed.
test-fast: setup-test
	$(BIN)/python -m pytest -q -m "not slow" --durations=5

clean:
	rm -rf runs .pytest_cache
