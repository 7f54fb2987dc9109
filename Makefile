# accelc's set-up and entry points. Every target builds the environment in .venv/ first.
#   make demo   set up, then compile and run the embedded default model (the main job)
#   make test   set up, then run the default test suite (what .ci/run calls)
#   make test-slow   the long checks (whole model zoo, ...) on demand

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.accelc-installed
# Build-time requirements: with --no-build-isolation, CMake finds the TVM runtime and tvm-ffi
# headers of the environment the runner will run against. Keep the pins equal to pyproject's.
BUILD_REQS := "scikit-build-core>=0.10" "apache-tvm==0.27.0.post1" "apache-tvm-ffi==0.1.14.post0"

.PHONY: setup demo test test-slow system-deps clean

setup: $(STAMP)

# Debian packages; each command is looked for first, so a set-up machine runs no apt-get.
# aarch64 cross compiler + qemu-user: --target arm compiles, runs (emulated) and packages.
SYSTEM_TOOLS := cmake:cmake g++:g++ aarch64-linux-gnu-g++:g++-aarch64-linux-gnu \
                aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64:qemu-user

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

$(STAMP): pyproject.toml CMakeLists.txt | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(BUILD_REQS)
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

demo: setup
	$(BIN)/accelc demo

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf build out .pytest_cache
