# One-command set-up: `make run` runs the word count locally, `make test` runs the tests.
# Both create the virtual environment (.venv) and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: run test lint system-packages clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/streamgale local examples/word_count.py

# System packages for the tests, from Debian, installed when missing: ZooKeeper,
# iproute2/iptables for network namespaces and cuts, Chromium for the web UI test.
system-packages:
	@test -f /usr/share/java/zookeeper.jar && command -v ip >/dev/null && command -v iptables >/dev/null \
	  && test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q zookeeper iproute2 iptables chromium chromium-driver; }

# Lint and type-check first (seconds), then the tests.
test: $(VENV)/.installed system-packages
	$(BIN)/ruff check .
	$(BIN)/mypy streamgale nimbus supervisor worker cli
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
