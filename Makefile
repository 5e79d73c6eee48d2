# One entry point for the README's commands:
#   make book            build the book at SCALE (default cpu), creating .venv when missing
#   make test            run the test suite
# Variables: SCALE=smoke|cpu|paper, RUN_ARGS="--only solver -p batch 512", TORCH_SPEC and EXTRAS (GPU users: see
# README: a CUDA torch brings its own triton, so they drop the "kernels" extra).
PYTHON ?= python3
VENV ?= .venv
SCALE ?= cpu
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= book,test,faces,kernels
RUN_ARGS ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MATHJAX := _mathjax/mathjax/MathJax.js

.PHONY: install mathjax notebooks html book test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

mathjax: $(MATHJAX)

# MathJax for the offline build, copied from the jupyter-server-mathjax wheel (never committed).
$(MATHJAX): $(STAMP)
	rm -rf _mathjax && mkdir -p _mathjax
	$(BIN)/python -c "import jupyter_server_mathjax, pathlib, shutil; \
	src = pathlib.Path(jupyter_server_mathjax.__file__).parent / 'static'; \
	shutil.copytree(src, '_mathjax/mathjax')"

notebooks: $(STAMP)
	$(BIN)/python -m ssdlib.reporting.runner --scale $(SCALE) $(RUN_ARGS)

html: $(STAMP) $(MATHJAX)
	$(BIN)/jupyter-book build . -W --keep-going

book: notebooks html

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_solver.py

clean:
	rm -rf _build executed _mathjax
