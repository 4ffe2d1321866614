# The two commands: `make run` (the service on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 5000

.PHONY: run test install bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/flask --app app roster seed
	@echo ""
	@echo "  Peerline is starting: open http://localhost:$(PORT)/  (Ctrl-C stops it)"
	@echo "  Messages go to the outbox: $(BIN)/flask --app app outbox"
	@echo "  Console: add the first account with $(BIN)/flask --app app staff add EMAIL --name NAME --role lead, then open http://localhost:$(PORT)/console"
	@echo ""
	@# Ctrl-C stops honcho (web and worker) and ends with exit 0: see scripts/run_procfile.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/run_procfile.py $(BIN)/honcho start -f Procfile -p $(PORT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/airtable_calls.py
	$(BIN)/python bench/crisis.py
	$(BIN)/python bench/drain.py
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/dashboard.py

clean:
	rm -rf $(VENV) var
