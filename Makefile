# Two commands do all set-up: `make run` and `make test`. Everything lands in .venv and web/node_modules.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_WEB := web/node_modules/.installed

.PHONY: run test lint typecheck bench bench-attacks soak clean deps conformance user

run: deps
	$(PY) -m app

deps: $(STAMP_PY) $(STAMP_WEB)

# make user NAME=alice  (asks for the password)
user: $(STAMP_PY)
	@test -n "$(NAME)" || (echo 'usage: make user NAME=alice' >&2; exit 2)
	$(PY) -m app users add '$(NAME)'

$(STAMP_PY): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,deploy]'
	touch $@

$(STAMP_WEB): web/package.json web/package-lock.json
	# stompjs 2.3.3 lists Node-only optional packages with install scripts; browsers never load them.
	cd web && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

test: deps
	$(PY) -m ruff check app tests $(wildcard bench)
	$(PY) -m mypy
	$(PY) -m pytest -q -m 'not browser and not slow' $(PYTEST_ARGS)
	# Browser tests in their own run: Playwright's sync API owns the event loop of the process it runs in.
	$(PY) -m pytest -q -m 'browser and not slow' $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check app tests $(wildcard bench)

typecheck: deps
	$(PY) -m mypy

bench: deps
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench

# The figures of issue 11 (attacks) against a checkout: make bench-attacks CHECKOUT=/path/to/warren (default: here).
bench-attacks: deps
	$(PY) -m bench.attacks --checkout $(or $(CHECKOUT),.) $(ATTACKS_ARGS)

soak: deps
	$(PY) -m pytest -q -s -m slow tests/cluster/test_soak.py --timeout 1200

clean:
	rm -rf $(VENV) web/node_modules .mypy_cache .pytest_cache
