# Two entry points: `make demo` and `make test`. Both set up the host and the venv first and
# are cheap to re-run on a warm machine.
VENV        := .venv
PYTHON      ?= python3
AK          := $(VENV)/bin/appliancekit
PYTEST_ARGS ?=
# QEMU boots one vCPU under TCG, so two workers on a 2-core machine nearly halve the slow
# suite; tests that share a booted image stay on one worker (tests/conftest.py).
PYTEST_WORKERS ?= auto
BENCH_ARGS  ?=

.PHONY: setup host venv demo test test-fast lint bench clean

setup: host venv

host:
	@scripts/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

demo: setup
	@$(AK) test homepage --board qemu-virt-arm64
	@echo "image: $(CURDIR)/images/homepage-qemu-virt-arm64/"

test: setup
	@$(VENV)/bin/ruff check appliancekit tests bench
	@$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 --junitxml=.cache/test-report.xml $(PYTEST_ARGS)

test-fast: setup
	@$(VENV)/bin/pytest -m 'not slow' $(PYTEST_ARGS)

lint: venv
	@$(VENV)/bin/ruff check appliancekit tests bench

# e.g. make bench BENCH_ARGS='--recipe dns --board qemu-virt-arm64 --json'
bench: venv
	@scripts/setup-host.sh bench
	@$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf images/homepage-* images/.tmp
