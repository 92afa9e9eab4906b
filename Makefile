# simclr-tfx. Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out
ARGS ?=
# uv installs the lock in parallel (pip takes minutes); pinned, like everything else.
UV := uv==0.13.9
# pip on these machines prints one harmless warning per package for a missing local index.
PIP_FILTER := grep -v "WARNING: Location 'file:" || true

.PHONY: install run test test-fast lock bench bench-quality bench-input bench-queue bench-tflite bench-precision bench-embed bench-scale bench-finetune bench-gradcache clean

$(STAMP): requirements/lock.txt setup.py
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	@echo "installing the locked environment into $(VENV) (first time: under a minute)"
	$(PY) -m pip install -q $(UV) 2>&1 | { $(PIP_FILTER); }
	$(PY) -m uv pip install -q --python $(PY) --no-deps --compile-bytecode -r requirements/lock.txt \
	  || { echo "uv failed: installing with pip instead (minutes)"; \
	       $(PY) -m pip install -q --no-deps -r requirements/lock.txt 2>&1 | { $(PIP_FILTER); }; }
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e . \
	  || $(PY) -m pip install -q --no-deps -e . 2>&1 | { $(PIP_FILTER); }
	@$(PY) -c "import tfx, tensorflow_transform, ml_metadata, simclr_tools.cli" 
	@touch $(STAMP)

install: $(STAMP)

## Whole pipeline end to end on the embedded MNIST demo (or ARGS="--data-dir DIR ...").
run: install
	$(VENV)/bin/simclr-tfx run --output $(OUT) --preset demo $(ARGS)

## The test suite (unit tests + end-to-end pipeline tests), on TEST_WORKERS pytest-xdist
## workers; tests/conftest.py keeps the tests that share a pipeline run on one worker.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest tests -ra -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder \
	  --timeout=1200 $(ARGS)

## The unit tests only (no pipeline runs, benchmarks or training processes): the edit loop.
test-fast: install
	$(PY) -m pytest tests -ra -m "not slow" --timeout=300 $(ARGS)

## Regenerate requirements/lock.txt from requirements/requirements.in + overrides.txt.
lock:
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q $(UV) 2>&1 | { $(PIP_FILTER); }
	$(PY) -m uv pip compile requirements/requirements.in \
	  --overrides requirements/overrides.txt \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	  -o requirements/lock.txt

clean:
	rm -rf $(OUT) .pytest_cache

## Input pipeline benchmark (ingest + augmentation on ../shared/datasets/cifar10/train).
bench-input: install
	$(PY) -m benchmarks.bench_input

## Small-batch SimCLR with and without the negatives queue (about 6 minutes).
bench-queue: install
	$(PY) -m benchmarks.bench_queue

## Corpus embedding: the Embedder's Beam RunInference against the in-process loop (after `make run`).
bench-embed: install
	$(PY) -m benchmarks.bench_embed $(ARGS)

## Per-worker rates at 224 px (ResNet-50) and a time and cost model for a million photos (~10 min).
bench-scale: install
	$(PY) -m benchmarks.bench_scale $(ARGS)

## SimCLRv2's fine-tune and distil at 10% and 1% of the CIFAR-10 labels against the linear probe
## and a supervised model (after the `cifar` pretraining: ~31 min, reused from ARGS="--output OUT").
bench-finetune: install
	$(PY) -m benchmarks.bench_finetune $(ARGS)

## Gradient caching: memory and images/s of batch 1024 in micro-batches of 128, of batch 1024
## and of batch 128 without (the `cifar` model, ~5 min).
bench-gradcache: install
	$(PY) -m benchmarks.bench_gradcache $(ARGS)

## Size and latency of the SavedModel and the TFLite encoders (needs a `make run` first).
bench-tflite: install
	$(PY) -m benchmarks.bench_tflite

## Performance harness: trainer vs a baseline, MFU, input ratio, make-run overhead (~12 min).
## Its last output line is a JSON object; the table goes to docs/benchmarks.md.
bench: install
	$(PY) -m benchmarks.bench_perf $(ARGS)

## float32 against bf16 for the cifar preset's step on this CPU, and what precision=auto picks.
bench-precision: install
	$(PY) -m benchmarks.bench_precision

## Representation quality: --preset cifar on ../shared/datasets/cifar10/train (about 42 min),
## probe top-1 on cifar10/test against minutes of pretraining -> docs/benchmarks.md.
bench-quality: install
	$(PY) -m benchmarks.bench_quality $(ARGS)

## ImageIngest peak memory for 20,000 and 100,000 generated images (and git HEAD's executor at
## 20,000) -> docs/benchmarks.md.
.PHONY: bench-ingest
bench-ingest: install
	$(PY) -m benchmarks.bench_ingest_memory $(ARGS)
