# The two commands of the README: `make run` (map the bundled demo image) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= samples/gpt-512.img.xz
DEMO_DIR := build/demo
DEMO_IMG := $(DEMO_DIR)/$(basename $(notdir $(DEMO)))

.PHONY: run test lint tools install install-test samples clean

# pip's own chatter (and setuptools' notes on editable installs) goes to .venv/pip.log, shown
# only when an install fails.
PIP_INSTALL = @log=$(VENV)/pip.log; echo "pip install $(1) (log: $$log)"; \
	$(PY) -m pip install -q $(1) >$$log 2>&1 || { cat $$log; exit 1; }

$(VENV)/bin/activate:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { bash scripts/ensure-tools.sh && $(PYTHON) -m venv $(VENV); }
	$(call PIP_INSTALL,--upgrade pip)

# Stamp files: reinstall only when pyproject.toml changes. The bytecode is compiled as a pip
# install would (an editable install under PYTHONDONTWRITEBYTECODE never writes it).
$(VENV)/.installed: pyproject.toml $(VENV)/bin/activate
	$(call PIP_INSTALL,-e .)
	@$(PY) -m compileall -q bmap parsers reports
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/activate
	$(call PIP_INSTALL,-e '.[test]')
	@$(PY) -m compileall -q bmap parsers reports
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## make run: install bmap, show the demo disk's layout, map it, say where the map went.
run: install
	@mkdir -p $(DEMO_DIR)
	@$(PY) -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" $(DEMO) $(DEMO_IMG)
	$(VENV)/bin/bmap info $(DEMO_IMG)
	$(VENV)/bin/bmap map $(DEMO_IMG) -o $(DEMO_IMG).bmap
	@echo "map written to $(DEMO_IMG).bmap:"
	@cat $(DEMO_IMG).bmap

tools:
	@bash scripts/ensure-tools.sh

LINTED := bmap parsers reports tests bench scripts

lint: install-test
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy
	$(PY) scripts/depgraph.py --check

## make test: install what the tests need (system tools with apt-get as root), lint, test.
## pytest's exit code 5 (no tests collected) is not a failure of the tree.
test: tools install-test lint
	@$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

## make samples: rebuild the sample images with the real tools (root).
samples:
	bash samples/make-samples.sh

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

## make bench: time bmap map against pytsk3 and dissect.extfs walks (see bench/README.md).
bench: install
	$(call PIP_INSTALL,-r bench/requirements.txt)
	$(PY) bench/run.py
