# Every target installs what it needs: uv (from PyPI, into .tools/, if it is not on PATH), then the
# workspace (all three distributions, editable, with the dev and docs groups).

PYTHON ?= python3
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
export UV_PYTHON ?= $(PYTHON)
RUN := $(UV) run --all-packages

.PHONY: help install demo serve-example test test-all test-oldest test-cov lint format type-check docs docs-serve bench clean

help:
	@echo "make demo        run the quick start against local storage in ./var"
	@echo "make serve-example  serve the FastAPI example on http://127.0.0.1:8000 (docs at /docs)"
	@echo "make test        install everything and run the test suite"
	@echo "make test-all    the test suite on every Python 3.11-3.13 on PATH (tox, pip installs)"
	@echo "make test-oldest the test suite on the oldest Python, SQLAlchemy, boto3 and pluggy supported"
	@echo "make test-cov    the test suite with a coverage report"
	@echo "make lint        ruff lint and format check"
	@echo "make format      apply ruff formatting and safe fixes"
	@echo "make type-check  mypy --strict on every distribution"
	@echo "make docs        build docs_source/ into docs/ (warnings are errors)"
	@echo "make docs-serve  build the docs and serve them on http://127.0.0.1:8000"
	@echo "make bench       run the benchmarks (BENCH_SIZE=quick|full)"

# uv goes into a virtualenv of its own; where the venv module is missing (Debian without
# python3-venv), pip installs it into .tools/lib instead.
.tools/bin/uv:
	$(PYTHON) -m venv .tools && .tools/bin/python -m pip install --quiet uv || { \
		rm -rf .tools && $(PYTHON) -m pip install --quiet --target .tools/lib uv && \
		mkdir -p .tools/bin && ln -s ../lib/bin/uv .tools/bin/uv; }

# --inexact: packages you installed into .venv yourself (a plugin you are writing) stay installed.
install: $(UV)
	$(UV) sync --all-packages --inexact

demo: install
	$(RUN) python examples/quickstart.py

# Zero configuration: SQLite and files under ./var. GRANITE_EXAMPLE_DATABASE_URL and
# GRANITE_EXAMPLE_STORAGE_CONFIG move it elsewhere (examples/fastapi_app/README.md).
serve-example: install
	$(RUN) uvicorn --app-dir examples/fastapi_app --factory documents_app:create_app --host 127.0.0.1 --port 8000

test: install
	$(RUN) pytest

test-all: install
	$(RUN) tox run-parallel -e py311,py312,py313

# .ci/oldest-constraints.txt pins the oldest releases; their floors in pyproject.toml must match.
test-oldest: install
	$(RUN) tox run -e py311-oldest

test-cov: install
	$(RUN) pytest --cov --cov-report=term-missing

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

# The benchmarks' peer libraries (the bench group) are installed too: mypy checks the code using them.
type-check: install
	$(RUN) --group bench mypy

docs: install
	$(RUN) sphinx-build -W --keep-going -q -b html docs_source docs

docs-serve: docs
	$(RUN) python -m http.server --directory docs --bind 127.0.0.1 8000

# The bench group adds the peer libraries scenario 4 compares with (sqlalchemy-file, advanced-alchemy).
bench: install
	$(RUN) --group bench python benchmarks/run.py

clean:
	rm -rf .venv .tools docs var .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov dist
