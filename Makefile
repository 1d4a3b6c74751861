# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
DEMO_DIR ?= runs/demo

.PHONY: install demo test test-fast test-gpu-pins lint format ui bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstalls only when the pins or the package metadata change; seconds otherwise.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# DeepSpeed (an sdist) for the ZeRO tests on CPU ranks; built against the installed torch, never a new one.
	$(BIN)/pip install -q --no-build-isolation -c constraints.txt deepspeed==0.19.8
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/progress demo --out $(DEMO_DIR)

# Two workers, each test file on one of them (module fixtures built once): most of the suite waits on servers,
# subprocesses and launched ranks, so two files at a time fill both cores. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The LoRA / ZeRO-3 training tests again with the GPU image's peft and transformers (constraints-gpu.txt)
# shadowing the CPU set's, installed without dependencies into a folder of their own.
GPU_PINS := .venv-gpu-pins
test-gpu-pins: $(STAMP)
	rm -rf $(GPU_PINS)
	$(BIN)/pip install -q --no-deps --target $(GPU_PINS) \
		$$(grep -E '^(peft|transformers)==' constraints-gpu.txt)
	PYTHONPATH=$(GPU_PINS):$$PWD $(BIN)/python -m pytest -q tests/test_partitioned_training.py \
		tests/test_launch.py -k "zero3 or text_only or lora or deepspeed"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: $(STAMP)
	$(BIN)/python -m deployments.ui

# Every benchmark at full size, then one summary table (benchmarks/README.md); `make bench-quick` for the small sizes.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache

# GPU smoke check (needs >= 1 GPU and the [gpu] extra; without a GPU every path reports "skipped").
.PHONY: gpu-check
gpu-check:
	bash scripts/gpu_check.sh
