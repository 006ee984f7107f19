# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv inside the checkout and install the pinned set first (a no-op when it is current).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.a2i-installed
DEMO_OUT ?= outputs/demo
TEST_CACHE := $(CURDIR)/build/test-cache
STORE_CACHE ?= $(CURDIR)/build/store-cache
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=1800 \
         --nbval-sanitize-with notebooks/sanitize.cfg

.PHONY: install demo test unit nbval lint notebooks smoke browser clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 10), "a2i needs Python >= 3.10 (tested on 3.11)"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --progress-bar off -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

## The main job: run every notebook in demo mode (or A2I_MODE=full), executed copies in $(DEMO_OUT).
demo: install
	$(BIN)/python scripts/run_notebooks.py run --out $(DEMO_OUT)

## The tests: lint, unit tests and nbval over every notebook, in demo mode, with a fresh cache.
test: install lint
	$(BIN)/python scripts/run_notebooks.py check
	rm -rf $(TEST_CACHE)
	A2I_MODE=demo A2I_CACHE=$(TEST_CACHE) MPLBACKEND=Agg $(BIN)/python -m pytest tests notebooks $(NBVAL)

unit: install
	A2I_MODE=demo MPLBACKEND=Agg $(BIN)/python -m pytest tests

nbval: install
	A2I_MODE=demo A2I_CACHE=$(TEST_CACHE) $(BIN)/python -m pytest notebooks $(NBVAL)

lint: install
	$(BIN)/ruff check .

## Re-execute the notebook sources (notebooks/NN_*.py) in demo mode and store their outputs for nbval,
## on a fresh cache: the stored outputs are what the current code computes from scratch, as in `make test`.
notebooks: install
	rm -rf $(STORE_CACHE)
	A2I_MODE=demo A2I_CACHE=$(STORE_CACHE) $(BIN)/python scripts/run_notebooks.py store $(NB)

## Every notebook in A2I_MODE=full-smoke: full-size models, random weights, tiny synthetic data; executed copies in
## build/smoke, nothing stored. On a CPU SounDiff runs in float32 (as full mode loads it there);
## `make smoke SMOKE_ARGS="--dtype bfloat16"` runs it in full mode's GPU dtype (a dtype mistake fails; slow on AVX2).
SMOKE_ARGS ?=
smoke: install
	rm -rf build/smoke
	A2I_CACHE=$(CURDIR)/build/smoke/cache $(BIN)/python scripts/run_notebooks.py smoke --out build/smoke $(SMOKE_ARGS)

## The panel of notebook 06 in JupyterLab under headless Chromium (scripts/browser_check.py): Debian's chromium
## (installed with apt-get when missing; never a browser download) and Playwright from PyPI. Not part of `make test`.
## Screenshots in build/browser; `make browser BROWSER_RESULTS=bench/results/browser` also stores small copies.
browser: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/python -m pip install --quiet "playwright==1.63.0"
	$(BIN)/python scripts/browser_check.py --out build/browser $(if $(BROWSER_RESULTS),--results $(BROWSER_RESULTS))

## The miniatures that demo mode loads pretrained (scripts/pretrain_miniatures.py): trained with our recipe on the demo
## world's train split, shipped in a2i_utils/pretrained/ with their cards. Commit new weights only when the recipe changed.
.PHONY: pretrained
pretrained: install
	$(BIN)/python scripts/pretrain_miniatures.py

clean:
	rm -rf build outputs .pytest_cache .ruff_cache
