# Two commands on a fresh machine:  make run  (the study on the embedded sample)  and  make test.
# Each creates .venv and installs the pinned stack on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: run test setup setup-test report report-paper lint dry-run-paper clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0   # the CPU build: installed first so no CUDA wheels are pulled
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-test.txt
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

setup: $(BIN)/.installed
setup-test: $(BIN)/.installed-test

run: setup
	@start=$$(date +%s); \
	$(BIN)/snakemake --cores $(CORES) && \
	$(BIN)/snakemake --cores 1 --report results/report.html && \
	end=$$(date +%s) && \
	$(BIN)/python -m plmscale.cli summary results/summary.json && \
	echo "make run: workflow + report took $$((end - start)) s (install excluded); report: results/report.html"

test: setup-test
	$(BIN)/python -m pytest

# Checks only (docs/catalog.md): ruff lint + format on the Python files, snakefmt on the Snakefile and
# rules/*.smk ([tool.snakefmt] in pyproject.toml).  `$(BIN)/ruff format <files>` and `$(BIN)/snakefmt <files>`
# rewrite; `snakemake --lint` is checked by tests/test_catalog.py.
lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules

dry-run-paper: setup
	$(BIN)/snakemake -n --configfile config/paper.yaml --quiet rules

# The paper reproduction (the authors' released logs, downloaded) and its own report (docs/report.md).
report-paper: setup
	$(BIN)/snakemake --cores $(CORES) paper_report && \
	$(BIN)/snakemake --cores 1 --report results/paper/report.html paper_report && \
	echo "report: results/paper/report.html"

clean:
	rm -rf results logs .snakemake
