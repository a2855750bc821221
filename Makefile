# One-command set-up: `make run` runs the word count locally, `make test` runs the tests.
# Both create the virtual environment (.venv) and install what they need, and build the
# hot path: compiled with mypyc by default, `BUILD=pure` for the pure-Python build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
BUILD ?= compiled
HOT_SOURCES := streamgale/tuples.py streamgale/runtime/routing.py streamgale/runtime/acking.py \
	streamgale/runtime/executor.py streamgale/runtime/loop.py streamgale/wire/frames.py

.PHONY: run test build lint system-packages clean

# The editable install itself compiles nothing; `build` compiles the hot path in place.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	STREAMGALE_BUILD=pure $(BIN)/pip install -q -e '.[test]'
	touch $@

build: $(VENV)/.installed
ifeq ($(BUILD),pure)
	find streamgale -name '*.cpython-*.so' -delete
	rm -f streamgale/_build.json
else ifeq ($(BUILD),compiled)
	@$(MAKE) --no-print-directory streamgale/_build.json
else
	$(error BUILD must be compiled or pure, not $(BUILD))
endif

streamgale/_build.json: $(HOT_SOURCES) streamgale/build.py setup.py $(VENV)/.installed
	$(BIN)/python setup.py -q build_ext --inplace 2>&1 | grep -v '^gcc\|^creating\|^copying\|_BetaConfiguration\|warnings.warn' || true
	test -f $@ || { echo "compiling the hot path failed (see above); make build BUILD=pure runs without it"; exit 1; }

run: build
	$(BIN)/streamgale local examples/word_count.py

# System packages for the tests, from Debian, installed when missing: ZooKeeper,
# iproute2/iptables for network namespaces and cuts, Chromium for the web UI test,
# redis-server (state backend, Redis connectors), mosquitto (MQTT) and rabbitmq-server (AMQP) for the
# connectors: the tests start their own servers on their own ports, never the system services'; Node.js
# and a JDK (javac) for the multi-lang examples.
system-packages:
	@test -f /usr/share/java/zookeeper.jar && command -v ip >/dev/null && command -v iptables >/dev/null \
	  && test -x /usr/bin/chromium && test -x /usr/bin/chromedriver && test -x /usr/bin/redis-server \
	  && test -x /usr/sbin/mosquitto && test -x /usr/sbin/rabbitmq-server && command -v node >/dev/null \
	  && command -v javac >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q zookeeper iproute2 iptables chromium chromium-driver \
	    redis-server mosquitto rabbitmq-server nodejs default-jdk-headless; }

# Lint and type-check first (seconds), then the tests.
test: build system-packages
	$(BIN)/streamgale --version
	$(BIN)/ruff check .
	$(BIN)/mypy streamgale nimbus supervisor worker cli
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache streamgale/_build.json
	find streamgale -name '*.cpython-*.so' -delete
