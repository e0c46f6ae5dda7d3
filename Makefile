# Two commands do all set-up: `make run` and `make test`. Everything lands in .venv and web/node_modules.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_WEB := web/node_modules/.installed

.PHONY: run test lint typecheck bench bench-scale soak clean deps conformance user

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

STAMP_PEER := bench/peer_node/node_modules/.installed

# The second peer of the benchmark: Socket.IO 4 on Node.js with the Redis adapter (bench/peer_node/server.js).
$(STAMP_PEER): bench/peer_node/package.json bench/peer_node/package-lock.json
	cd bench/peer_node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench: deps $(STAMP_PEER)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench

# How the cost grows with connections (issue 16): the curve to 18,000 sessions, the 15,000-client storm, the broker
# per user and per mailbox, and the plots (bench/results/scale-*.png). About an hour on a quiet machine.
bench-scale: deps $(STAMP_PEER)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.scale --json bench/results/scale.json --markdown bench/results/scale.md --plots bench/results

soak: deps
	$(PY) -m pytest -q -s -m slow tests/cluster/test_soak.py --timeout 1200

clean:
	rm -rf $(VENV) web/node_modules bench/peer_node/node_modules .mypy_cache .pytest_cache
