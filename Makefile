# The two commands of the README: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= deploy/postback-hub.sample.toml
DEMO_SECRET_FILE := deploy/.data/demo-secret
DEMO_PARTNER_FILE := deploy/.data/backinapp-partner-id
DEMO_KPI_TOKEN_FILE := deploy/.data/kpi-token

.PHONY: install run test lint bench clean constraints

# The constant-rate load generator of the ingest benchmark (built from the Go registry).
VEGETA_VERSION := v12.12.0
VEGETA := $(CURDIR)/deploy/.cache/bin/vegeta
# The peer of benchmarks/peers.py (benchmarks/benthos pins the same version); a build that
# fails leaves it absent, and the benchmark prints it as missing with the log's last line.
BENTHOS_VERSION := v4.27.0
BENTHOS := $(CURDIR)/deploy/.cache/bin/benthos-$(BENTHOS_VERSION)
BENTHOS_LOG := $(CURDIR)/deploy/.cache/benthos-build.log

$(STAMP): pyproject.toml constraints.txt service/_murmur2.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DEMO_SECRET_FILE):
	mkdir -p $(dir $@)
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))' > $@
	chmod 600 $@

$(DEMO_PARTNER_FILE):
	mkdir -p $(dir $@)
	echo demo-partner-1 > $@

$(DEMO_KPI_TOKEN_FILE):
	mkdir -p $(dir $@)
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))' > $@
	chmod 600 $@

# Ports of `make run` (or POSTBACK_HUB_PORT, POSTBACK_HUB_KAFKA_PORT, ... in the environment):
#   make run PORT=8081 KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093
PORT ?= $(POSTBACK_HUB_PORT)
KAFKA_PORT ?= $(or $(POSTBACK_HUB_KAFKA_PORT),9092)
KAFKA_CONTROLLER_PORT ?= $(or $(POSTBACK_HUB_KAFKA_CONTROLLER_PORT),9093)

# Starts (or reuses) the local broker, then the receiver and consumers in the foreground.
run: install $(DEMO_SECRET_FILE) $(DEMO_PARTNER_FILE) $(DEMO_KPI_TOKEN_FILE)
	$(BIN)/postback-hub kafka up --port $(KAFKA_PORT) --controller-port $(KAFKA_CONTROLLER_PORT)
	POSTBACK_HUB_DEMO_SECRET="$$(cat $(DEMO_SECRET_FILE))" \
		$(BIN)/postback-hub run --config $(CONFIG) --bootstrap-servers 127.0.0.1:$(KAFKA_PORT) \
		$(if $(PORT),--port $(PORT))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Lint, types, then every test (unit and integration against a real local broker).
test: lint
	$(BIN)/postback-hub kafka fetch
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update -qq && apt-get install -y -qq postgresql)
	# promtool (Debian's prometheus package) runs the alerting rules' own tests.
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)
	$(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks print figures and ratios against baselines measured in the same run.
bench: install
	$(BIN)/postback-hub kafka fetch
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	test -x $(VEGETA) || GOBIN=$(dir $(VEGETA)) go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)
	mkdir -p $(dir $(BENTHOS))
	test -x $(BENTHOS) || (cd benchmarks/benthos && go build -o $(BENTHOS) .) >$(BENTHOS_LOG) 2>&1 \
		|| echo "Benthos $(BENTHOS_VERSION) could not be built (see $(BENTHOS_LOG))"
	VEGETA=$(VEGETA) BENTHOS=$(BENTHOS) $(BIN)/python -m benchmarks.peers
	VEGETA=$(VEGETA) $(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.forwarding
	$(BIN)/python -m benchmarks.e2e
	$(BIN)/python -m benchmarks.kpi

clean:
	-$(BIN)/postback-hub kafka down
	rm -rf $(VENV) deploy/.data .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Re-pin constraints.txt from a fresh resolution of pyproject.toml's ranges.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet --upgrade pip
	.venv-pin/bin/pip install --quiet '.[dev]'
	{ head -n 2 constraints.txt; .venv-pin/bin/pip freeze --exclude-editable | grep -v '^postback-hub' | sort; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-pin
