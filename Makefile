# Each target bootstraps .venv on first use: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

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

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
