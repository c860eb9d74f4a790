# The two commands of the README: `make run` (map the bundled demo image) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= samples/gpt-512.img.xz
DEMO_DIR := build/demo
DEMO_IMG := $(DEMO_DIR)/$(basename $(notdir $(DEMO)))

.PHONY: fuzz run test lint tools install install-test samples clean

# pip's own chatter (and setuptools' notes on editable installs) goes to .venv/pip.log, shown
# only when an install fails.
PIP_INSTALL = @log=$(VENV)/pip.log; echo "pip install $(1) (log: $$log)"; \
	$(PY) -m pip install -q $(1) >$$log 2>&1 || { cat $$log; exit 1; }

$(VENV)/bin/activate:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { bash scripts/ensure-tools.sh && $(PYTHON) -m venv $(VENV); }
	$(call PIP_INSTALL,--upgrade pip)

# libnbd's Python binding (for NBD URIs) is not on PyPI: Debian's python3-libnbd holds it, built
# for Debian's python3. Only its two files are linked into the venv (not the whole
# dist-packages), and only when the venv's Python has the extension's ABI; otherwise NBD URIs
# say what is missing and their tests skip. Relinked when the package is (re)installed; an
# order-only prerequisite of the installs, so linking never reinstalls bmap.
LIBNBD_DIR := /usr/lib/python3/dist-packages
$(VENV)/.libnbd: $(VENV)/bin/activate $(wildcard $(LIBNBD_DIR)/libnbdmod.*.so)
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	ext=$$($(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))'); \
	if [ -f $(LIBNBD_DIR)/nbd.py ] && [ -f $(LIBNBD_DIR)/libnbdmod$$ext ]; then \
		ln -sfn $(LIBNBD_DIR)/nbd.py "$$site/nbd.py"; \
		ln -sfn $(LIBNBD_DIR)/libnbdmod$$ext "$$site/libnbdmod$$ext"; \
		$(PY) -c 'import nbd; nbd.NBD()' || { echo "libnbd: Debian's binding does not load in $(VENV)"; \
			rm -f "$$site/nbd.py" "$$site/libnbdmod$$ext"; }; \
	else \
		echo "libnbd: no python3-libnbd for libnbdmod$$ext in $(LIBNBD_DIR): NBD URIs will not work" \
			"(sudo apt-get install python3-libnbd, with a venv of Debian's Python version)"; \
	fi
	@touch $@

# Stamp files: reinstall only when pyproject.toml changes. The bytecode is compiled as a pip
# install would (an editable install under PYTHONDONTWRITEBYTECODE never writes it).
$(VENV)/.installed: pyproject.toml $(VENV)/bin/activate | $(VENV)/.libnbd
	$(call PIP_INSTALL,-e .)
	@$(PY) -m compileall -q bmap parsers reports
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/activate | $(VENV)/.libnbd
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

## make fuzz: coverage-guided fuzzing of every entry point for untrusted bytes, 10 minutes a
## target (scripts/fuzz.py; crashers go to tests/fuzz/crashers/ to be kept as regression tests),
## then the hypothesis properties with fresh random draws (the test command's are fixed).
fuzz: install-test
	$(PY) scripts/fuzz.py --seconds $(or $(FUZZ_SECONDS),600) --keep
	BMAP_HYPOTHESIS=explore $(PY) -m pytest -q tests/hostile/test_properties.py tests/parsers

## make bench: time bmap map against pytsk3 and dissect.extfs walks (see bench/README.md).
bench: install
	$(call PIP_INSTALL,-r bench/requirements.txt)
	$(PY) bench/run.py
