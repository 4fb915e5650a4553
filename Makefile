# chunkyard: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo test bench stress lint venv clean

$(STAMP): pyproject.toml setup.py src/chunkyard/formats/_buzhash.c src/chunkyard/datastore/_chunkfs.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The main job on an embedded default: the server (HTTPS on port 8007, its configuration and
## the datastore store1 under ./chunkyard-data, admin@pbs's password printed on first start).
run: $(STAMP)
	$(VENV)/bin/chunkyard serve

## A local tour without a server: back up, restore and show a sample tree in ./chunkyard-demo.
demo: $(STAMP)
	$(VENV)/bin/chunkyard demo --path ./chunkyard-demo

## The whole test suite (installs Debian's spin, and FUSE for GC's atime test, when missing),
## after lint.
test: $(STAMP) lint
	@bash scripts/install-debian-packages.sh spin fuse libfuse2
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/mypy

## Benchmarks, never part of `make test`: installs restic and borg from Debian.
bench: $(STAMP)
	bash scripts/install-debian-packages.sh restic borgbackup
	$(PY) bench/run.py
	$(PY) bench/bench_moves.py
	$(PY) bench/bench_api.py
	$(PY) bench/bench_gc.py
	$(PY) bench/bench_verify.py

## The long stress run of real processes.
stress: $(STAMP)
	$(PY) -m pytest -q tests/test_stress.py --stress-seconds=600 -p no:xdist

clean:
	rm -rf $(VENV) build src/*.egg-info chunkyard-data bench/work
