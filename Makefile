# Helpline: `make run` to try it, `make test` to check it. Everything is installed here,
# in ./.venv, on first use; nothing is installed system-wide (see .ci/run for that).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
WEB    := console/web
WEB_STAMP := $(WEB)/node_modules/.installed-$(shell cat $(WEB)/package-lock.json | sha256sum | cut -c1-12)

DATA   ?= .helpline
LISTEN ?= 127.0.0.1:8443
SSH_LISTEN ?= 127.0.0.1:2222
URL    := https://$(LISTEN)

.PHONY: install run test fuzz lint bench clean

SSLYZE := $(VENV)/tools/sslyze/bin/sslyze

install: $(STAMP) $(WEB_STAMP) $(SSLYZE)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "installed Helpline and its dependencies into $(VENV)"

# sslyze scans the relay's TLS in the tests. It lives in a venv of its own: it pins an older
# cryptography than the relay uses, and the relay is tested with the one it runs with.
$(SSLYZE):
	@$(PYTHON) -m venv $(VENV)/tools/sslyze
	@$(VENV)/tools/sslyze/bin/pip install --quiet --disable-pip-version-check 'sslyze>=6.1,<7'
	@echo "installed sslyze into $(VENV)/tools/sslyze"

# The web console's browser libraries (xterm.js, asciinema-player) from the npm registry,
# exactly as package-lock.json pins them; again only when the lock file changed.
$(WEB_STAMP): $(WEB)/package-lock.json
	@cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	@rm -f $(WEB)/node_modules/.installed-* && touch $@
	@echo "installed the web console's browser libraries into $(WEB)/node_modules"

# The relay on $(LISTEN) with an SQLite store and its own PKI in $(DATA)/relay, plus a demo
# agent enrolled into it. Ctrl-C stops both.
run: install
	@set -e; \
	if [ ! -f $(DATA)/relay/relay.toml ]; then \
		$(BIN)/helpline-relay init --data $(DATA)/relay --listen $(LISTEN) --ssh-listen $(SSH_LISTEN) > /dev/null; \
	fi; \
	$(BIN)/helpline-relay serve --data $(DATA)/relay > $(DATA)/relay.log 2>&1 & relay=$$!; \
	agent=""; \
	trap 'kill $$relay $$agent 2>/dev/null; wait 2>/dev/null; echo; echo "stopped"' EXIT; \
	trap 'exit 0' INT TERM; \
	$(BIN)/helpline-relay wait --data $(DATA)/relay --timeout 30 || { cat $(DATA)/relay.log; exit 1; }; \
	if [ ! -f $(DATA)/agent/agent.toml ]; then \
		token=$$($(BIN)/helpline-relay token create --data $(DATA)/relay --group default); \
		fingerprint=$$($(BIN)/helpline-relay info --data $(DATA)/relay | awk '/^CA fingerprint/ {print $$3}'); \
		$(BIN)/helpline-agent enroll $(URL) --token $$token --ca-fingerprint $$fingerprint \
			--config $(DATA)/agent --name demo-agent > /dev/null; \
		sed -i -e 's/^shell = "prompt"/shell = "notify"/' -e 's/^files = "prompt"/files = "notify"/' \
			$(DATA)/agent/agent.toml; \
	fi; \
	$(BIN)/helpline-agent run --config $(DATA)/agent > $(DATA)/agent.log 2>&1 & agent=$$!; \
	echo; $(BIN)/helpline-relay info --data $(DATA)/relay; echo; \
	echo "Then:  $(BIN)/helpline devices    $(BIN)/helpline shell demo-agent"; \
	echo "Web:   $(URL)/  (trust the relay's CA in the browser: $(DATA)/relay/ca.pem)"; \
	echo "       (the demo agent allows shell and files sessions with a notice: see $(DATA)/agent/agent.toml)"; \
	echo "Logs:  $(DATA)/relay.log  $(DATA)/agent.log      Stop with Ctrl-C."; \
	wait $$relay

# In parallel (pytest-xdist): most tests wait on the programs they start, not on a core.
# A test file stays on one worker (--dist loadfile), so a file's shared relay is started once.
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile \
		--cov=protocol --cov-branch --cov-report=term-missing:skip-covered

# The stateful fuzzers of the relay's endpoints (tests/integration/test_fuzz_endpoints.py)
# in their long mode: FUZZ_EXAMPLES sequences of FUZZ_STEPS steps each, a new seed each run.
FUZZ_EXAMPLES ?= 1000
FUZZ_STEPS ?= 50
fuzz: install
	HELPLINE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HELPLINE_FUZZ_STEPS=$(FUZZ_STEPS) HELPLINE_FUZZ_SEED=random \
		$(PY) -m pytest -q -p no:cacheprovider -o timeout=0 tests/integration/test_fuzz_endpoints.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict protocol certs
	$(BIN)/mypy relay agent console

bench: install
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) $(WEB)/node_modules $(DATA) .pytest_cache .mypy_cache .ruff_cache .coverage build *.egg-info
