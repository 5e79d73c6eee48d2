# One entry point for the README's commands:
#   make book            build the book at SCALE (default cpu), creating .venv when missing
#   make book SCALE=paper DRY_RUN=1   the paper path with every loop capped, on CPU, into executed/dry-run/ and a
#                        cache of its own (SSD_CACHE_DIR, default ~/.cache/ssdlib-dry-run/SCALE); builds no html
#   make test            run the test suite
# Variables: SCALE=smoke|cpu|paper, GRID=0|1, GRID_WORKERS, PAGE_JOBS, RUN_ARGS="--only solver -p batch 512",
# PYTEST_ARGS="-m 'not slow'", TORCH_SPEC,
# TORCH_INDEX (a CPU-only user: https://download.pytorch.org/whl/cpu) and EXTRAS (GPU users: see README: a CUDA
# torch brings its own triton, so they drop the "kernels" extra; "grid" is Dask for python -m ssdlib.grid; "art" is
# IBM's Adversarial Robustness Toolbox for ssdlib.integrations.art and tests/test_art.py, "dp" Opacus for DP-SGD).
PYTHON ?= python3
VENV ?= .venv
SCALE ?= cpu
TORCH_SPEC ?= torch==2.13.0
# The package index torch comes from (empty: PyPI, whose Linux wheel is a multi-GB CUDA build unless a CPU wheel
# is already at hand). CPU-only users elsewhere: TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
EXTRAS ?= book,test,faces,kernels,grid,art,dp
RUN_ARGS ?=
# A first build at cpu (no page executed at that scale yet) computes the book's cached work (targets, prior,
# evaluators, attack runs) with the grid on GRID_WORKERS single-threaded processes (python -m ssdlib.grid run) before
# the runner renders the pages from the cache: on 2 cores the fastest cold build. Later builds skip it: the grid
# loads every cached artifact to check it (about a second per job), the runner only re-executes what changed.
# GRID=0 skips it, GRID=1 forces it; it is skipped as well with RUN_ARGS (one page) and for the dry run.
GRID ?= $(if $(wildcard executed/$(SCALE)/*.ipynb),0,1)
GRID_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
# Notebooks the runner executes at once (each in a process of its own, after the pages it `needs`; a page marked
# `exclusive` in notebooks/scales.yml, one that times itself, runs alone): one per core at cpu, where a page mostly
# loads cached runs on one core; one at a time at smoke (minutes in all) and paper (the pages share one GPU).
PAGE_JOBS ?= $(if $(filter cpu,$(SCALE)),$(GRID_WORKERS),1)
PREFILL := $(if $(DRY)$(RUN_ARGS),,$(filter 1,$(GRID)))
DRY_RUN ?=
DRY := $(filter 1 yes true,$(DRY_RUN))
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MATHJAX_VERSION ?= 3.2.2
NPM ?= npm
MATHJAX := _mathjax/static/mathjax/tex-svg-full.js

.PHONY: install mathjax notebooks html book test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

mathjax: $(MATHJAX)

# MathJax 3 for the offline build, from the npm registry (never a CDN, never committed: _mathjax/ is git-ignored).
# SVG output draws every glyph as a path from fonts built into tex-svg-full.js, so no web font can go missing.
# Only _mathjax/static/ is published (html_static_path): the one page script and what MathJax's menu loads lazily.
$(MATHJAX):
	@command -v $(NPM) >/dev/null 2>&1 || { echo "make mathjax needs npm (Debian: apt-get install npm)" >&2; exit 1; }
	rm -rf _mathjax && mkdir -p _mathjax/npm _mathjax/static/mathjax
	cd _mathjax/npm && $(NPM) pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar -xzf _mathjax/npm/mathjax-$(MATHJAX_VERSION).tgz -C _mathjax/npm
	cp -r _mathjax/npm/package/es5/tex-svg-full.js _mathjax/npm/package/es5/ui _mathjax/npm/package/es5/a11y \
	  _mathjax/npm/package/es5/sre _mathjax/npm/package/LICENSE _mathjax/static/mathjax/
	rm -rf _mathjax/npm

notebooks: $(STAMP)
	$(if $(and $(PREFILL),$(filter cpu,$(SCALE))),$(BIN)/python -m ssdlib.grid run --scale $(SCALE) \
	  --executor processes --workers $(GRID_WORKERS) --threads 1)
	$(BIN)/python -m ssdlib.reporting.runner --scale $(SCALE) $(if $(DRY),--dry-run,--jobs $(PAGE_JOBS)) $(RUN_ARGS)

html: $(STAMP) $(MATHJAX)
	$(BIN)/jupyter-book build . -W --keep-going

# A dry run checks the notebooks only: nothing of it is rendered or published.
book: notebooks $(if $(DRY),,html)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_solver.py

clean:
	rm -rf _build executed _mathjax
