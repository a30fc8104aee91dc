# The commands every contributor runs. `uv` installs the locked dependencies into .venv.
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test lint format bench bench-sdk install

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

run: install
	$(UV) run faultlens serve

test: install
	tests/e2e/setup.sh
	$(UV) run pytest -q
	cd sdk/python && $(UV) run pytest -q

lint: install
	$(UV) run ruff format --check src tests bench sdk/python
	$(UV) run ruff check src tests bench sdk/python
	$(UV) run mypy
	cd sdk/python && $(UV) run mypy

format: install
	$(UV) run ruff format src tests bench sdk/python
	$(UV) run ruff check --fix src tests bench sdk/python

bench: install
	$(UV) run python bench/ingest_bench.py

bench-sdk: install
	$(UV) run python bench/sdk_middleware_bench.py
