# The README's commands. Every target sets up what it needs; all are idempotent.
PY      := .venv/bin/python
# the venv's Python: 3.11 where there is one (the wheels on this project's machines are cp311)
PYTHON3 := $(shell python3.11 -c 'import venv' 2>/dev/null && echo python3.11 || echo python3)
STAMP   := .venv/.requirements-installed
BUILD   := build/cmake

.PHONY: venv build cmake-test train test bench-kernels clean

# A venv whose pip does not run (its creation was interrupted) is made again.
$(STAMP): requirements.txt
	$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf .venv && $(PYTHON3) -m venv .venv; }
	@$(PY) -c 'import sys; sys.version_info[:2] == (3, 11) or print(f"note: .venv runs Python {sys.version.split()[0]}; fastgan is tested on 3.11 (rm -rf .venv to make it again)")'
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

venv: $(STAMP)

# fastgan._C in place (ninja makes rebuilds incremental).
build: venv
	$(PY) setup.py -q build_ext --inplace

# The same sources through CMake, and the C++ tests through ctest.
cmake-test: venv
	$(PY) tools/cmake_configure.py $(BUILD)
	cmake --build $(BUILD) -j2
	cd $(BUILD) && ctest --output-on-failure

train: build
	$(PY) -m fastgan.train --arch cyclegan

test: build cmake-test
	$(PY) -m pytest -q tests

# (build/gpu_stack, the GPU machine's torch for gpu-stack-check, stays: gigabytes to fetch again)
clean:
	find build -mindepth 1 -maxdepth 1 ! -name gpu_stack -exec rm -rf {} + 2>/dev/null || true
	rm -f fastgan/*.so csrc/source_hash.h

# Kernel benchmarks: every op, back end and mode against eager and torch.compile.
bench-kernels: build
	$(PY) -m pytest benchmarks/kernels -q -p no:cacheprovider --benchmark-json=build/kernels_run.json
	$(PY) -m benchmarks.kernels.report build/kernels_run.json
	$(PY) -m benchmarks.host_overhead
	$(PY) -m benchmarks.targets

# Data-parallel scaling: images/s at 1 and 2 ranks (CPU) or 1..N GPUs, all-reduce time against compute.
.PHONY: bench-scaling
bench-scaling: build
	$(PY) -m benchmarks.scaling

# Loader throughput: images/s of the torch DataLoader, DALI and the device cache, side by side.
.PHONY: bench-loader
bench-loader: build
	$(PY) -m benchmarks.loader_throughput
	$(PY) -m benchmarks.targets

# End-to-end training throughput: the reference-style eager trainer against each speed level; then
# fastgan.test's forward pass against the reference's modules.
.PHONY: bench
bench: build
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.inference_throughput
	$(PY) -m benchmarks.targets

# The issues' targets, met / missed / unmeasured, from benchmarks/results/ (the bench targets end with it).
.PHONY: targets
targets: venv
	$(PY) -m benchmarks.targets

# The GPU machine's torch and triton (2.11, 3.6) on this CPU: build, op/engine tests, sm_90 compile of the Triton kernels.
.PHONY: gpu-stack-check
gpu-stack-check:
	bash tools/gpu_stack_check.sh
