# Two commands do all set-up: `make run` and `make test`. Everything lands in .venv and web/node_modules.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_WEB := web/node_modules/.installed

.PHONY: run test test-newest-deps lint typecheck bench bench-attacks bench-scale soak clean deps conformance user

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

$(STAMP_WEB): web/package.json web/package-lock.json web/build-sockjs.mjs
	# stompjs 2.3.3 lists Node-only optional packages with install scripts; browsers never load them.
	cd web && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
	# sockjs-client 1.0.0-1.1.1 come as sources only: bundle them for the SockJS iframe (esbuild-wasm, no scripts).
	cd web && npm run --silent build
	touch $@

test: deps
	$(PY) -m ruff check app tests $(wildcard bench)
	$(PY) -m mypy
	$(PY) -m pytest -q -m 'not browser and not slow' $(PYTEST_ARGS)
	# Browser tests in their own run: Playwright's sync API owns the event loop of the process it runs in.
	$(PY) -m pytest -q -m 'browser and not slow' $(PYTEST_ARGS)

# The backplane tests on the newest aiormq and pamqp, past setup.cfg's pins, in a venv of their own: the batched
# publisher relies on aiormq's channel internals (app/backplane/amqp.py), so a release that changes them fails
# here, by name, the day it ships. CI runs it after `make test`. Backplane tests only, to stay quick.
NEWEST := .venv-newest
test-newest-deps:
	test -x $(NEWEST)/bin/python || $(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST)/bin/python -m pip install --quiet -e . 'pytest>=8,<10' 'pytest-aiohttp>=1.1,<2' 'pytest-timeout>=2.3,<3'
	# Newer than the pins allow: pip may warn that warren wants aiormq<8, which is the point (it still exits 0).
	$(NEWEST)/bin/python -m pip install --quiet --upgrade aiormq pamqp
	$(NEWEST)/bin/python -m pip list 2>/dev/null | grep -iE '^(aiormq|pamqp) '
	$(NEWEST)/bin/python -m pytest -q -p no:cacheprovider -m 'not slow' tests/backplane $(PYTEST_ARGS)
	TEST_AMQP_PUBLISHER=plain $(NEWEST)/bin/python -m pytest -q -p no:cacheprovider -m 'not slow' \
		tests/backplane/test_rabbitmq.py $(PYTEST_ARGS)

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

# The figures of issue 11 (attacks) against a checkout: make bench-attacks CHECKOUT=/path/to/warren (default: here).
bench-attacks: deps
	$(PY) -m bench.attacks --checkout $(or $(CHECKOUT),.) $(ATTACKS_ARGS)

# How the cost grows with connections (issue 16): the curve to 18,000 sessions, the 15,000-client storm, the broker
# per user and per mailbox, and the plots (bench/results/scale-*.png). About an hour on a quiet machine.
bench-scale: deps $(STAMP_PEER)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.scale --json bench/results/scale.json --markdown bench/results/scale.md --plots bench/results

soak: deps
	$(PY) -m pytest -q -s -m slow tests/cluster/test_soak.py --timeout 1200

clean:
	rm -rf $(VENV) $(NEWEST) web/node_modules bench/peer_node/node_modules .mypy_cache .pytest_cache
