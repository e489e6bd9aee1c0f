# The two commands the README opens with: `make demo` and `make test`.
# Both build everything they need on a fresh machine: a venv, the dependencies, the package.

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin

.PHONY: demo test check wheel bench clean

$(VENV)/.deps: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet ".[dev]"
	touch $@

# Build the wheel and install it (not editable), so tests, mypy and import-linter see exactly
# what users get: a subpackage the build forgot fails here, not in production.
wheel: $(VENV)/.deps
	rm -rf dist build
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
	$(PY) -m pip install --quiet --no-deps --force-reinstall dist/idstitch-*.whl
	rm -rf build
	cd /tmp && $(BIN)/python -c "import idstitch, idstitch.domain, idstitch.adapters, \
	  idstitch.projections, pathlib; root = pathlib.Path(idstitch.__file__).parent; \
	  assert 'site-packages' in str(root), root; \
	  assert pathlib.Path(idstitch.domain.__file__).parent == root / 'domain'"

demo: wheel
	$(BIN)/idstitch demo

check: wheel
	$(BIN)/ruff check .
	cd /tmp && $(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p idstitch
	# The benchmarks too: they are the figures' source, and they drift when the API moves.
	cd benchmarks && $(BIN)/mypy --config-file $(CURDIR)/pyproject.toml *.py
	cd /tmp && $(BIN)/lint-imports $(CURDIR)/pyproject.toml

test: check
	$(BIN)/pytest

bench: wheel
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) dist build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
