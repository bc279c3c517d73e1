# Two commands for a new user: `make demo` (install + offline demo) and `make test` (install + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU build, so no later step can pull a CUDA torch onto a CPU machine.
# llama-cpp-python (the `export` extra) is built from its sdist the first time on a machine (~15-25 min
# on 2 cores; pip's wheel cache in ~/.cache/pip serves later installs); its multimodal library is not built,
# and it targets AVX2 rather than this CPU, so the same wheel also runs on another x86-64 host (the GPU machine).
install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(CMAKE_ARGS)" $(BIN)/pip install -q -e ".[test]"

# Debian's Chromium for the TensorBoard screenshots (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: install
	$(BIN)/finetune-mcp demo

test: install browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -x --durations=15

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
