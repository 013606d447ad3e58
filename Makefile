# Two commands do all the set-up (README.md): `make demo` and `make test`. Both create .venv (torch 2.14.1,
# CUDA 13.0 build), build the wheel once (kept build dir: an unchanged tree rebuilds in seconds) and install it.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.14.1
PYTEST_ARGS ?=
DEPS_STAMP := $(VENV)/.q35-deps-$(shell cat pyproject.toml tools/deps.py Makefile | sha1sum | cut -c1-12)
SOURCES := $(shell find csrc python cmake -type f -not -name '*.so' -not -path '*/__pycache__/*' 2>/dev/null) \
           CMakeLists.txt pyproject.toml
WHEEL_STAMP := build/.wheel-installed

.PHONY: all venv wheel install demo test test-fast dev lint format clean gpu-suite-dry

all: install

venv: $(DEPS_STAMP)

$(DEPS_STAMP): pyproject.toml tools/deps.py Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) tools/deps.py test | xargs $(VPY) -m pip install -q "$(TORCH_PIN)"
	rm -f $(VENV)/.q35-deps-*
	touch $@

# The wheel is what users install; tests run against the installed wheel, not the source tree.
$(WHEEL_STAMP): $(DEPS_STAMP) $(SOURCES)
	rm -rf dist
	$(VPY) -m pip wheel -q --no-build-isolation --no-deps -w dist .
	$(VPY) -m pip install -q --force-reinstall --no-deps dist/qwen35_native-*.whl
	mkdir -p build && touch $@

wheel install: $(WHEEL_STAMP)

# The main job: a random tiny checkpoint (written once; tiny-kernel on the GPU when there is one, so the CUDA kernels
# run, else tiny-moe on the CPU) and streaming generation from a chat prompt with the one-line summary. One CPU
# thread: on a model this small OpenMP's spin-waiting costs more than the work.
DEMO_DIR ?= build/tiny-demo
DEMO_PROMPT ?= Write a short poem about GPUs.
demo: $(WHEEL_STAMP)
	$(VENV)/bin/qwen35 --version
	$(VENV)/bin/qwen35 self-check
	@cfg=$$(nvidia-smi -L >/dev/null 2>&1 && echo tiny-kernel || echo tiny-moe); \
	  test -f $(DEMO_DIR)/$$cfg/model.safetensors || $(VENV)/bin/qwen35 make-tiny $(DEMO_DIR)/$$cfg --config $$cfg; \
	  echo "== qwen35 generate --model $(DEMO_DIR)/$$cfg (random weights: expect noise, not words)"; \
	  OMP_NUM_THREADS=1 $(VENV)/bin/qwen35 generate --model $(DEMO_DIR)/$$cfg --prompt "$(DEMO_PROMPT)" \
	    --max-tokens 64 --seed 0

test: $(WHEEL_STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)
	$(VPY) -m ruff check python tests bench tools
	PYTHON=$(abspath $(VPY)) bash bench/gpu_suite.sh --dry-run

# Development loop: build _C in place (build/dev) and run tests from the source tree with PYTHONPATH=python.
dev: $(DEPS_STAMP)
	$(VENV)/bin/cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DQ35_INPLACE=ON \
	  -DPython_EXECUTABLE=$(abspath $(VPY)) >/dev/null
	$(VENV)/bin/cmake --build build/dev

lint:
	$(VPY) -m ruff check python tests bench tools

format:
	$(VPY) -m ruff format python tests bench tools

clean:
	rm -rf build dist python/qwen35_native/_C*.so
