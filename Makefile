# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,otel]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)
	@$(BIN)/python -m raiwatch.core.otlpnative  # libotlpmap, when Go is here (once per source; else a line)

demo: install
	$(BIN)/raiwatch demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: install lint
	bash deploy/system-deps.sh
	$(BIN)/raiwatch kafka install
	$(BIN)/pytest -n 2 --dist loadfile  # two workers, a test file each: the Kafka, Prometheus and subprocess waits overlap

bench: install
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf var replay-out .pytest_cache
