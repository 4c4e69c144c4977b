# Each target bootstraps .venv on first use: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
PYTEST_WORKERS ?= logical

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml constraints.txt $(wildcard examples/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	for plugin in $(dir $(wildcard examples/*/pyproject.toml)); do \
		$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps -e $$plugin || exit 1; \
	done
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py --output-dir demo-output

# One pytest worker per CPU thread (pytest-xdist; its "auto" counts physical cores, one on many 2-vCPU machines).
# The tests of a module or class share a worker, so module-scoped fixtures are built once. PYTEST_WORKERS=0: no workers.
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
