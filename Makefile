# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install data demo test wheel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installs the package, its pinned dependencies and the test tools (constraints.txt pins every package).
# keras-hub goes in without its dependencies: its tensorflow-text requirement would add the full `tensorflow` beside
# tensorflow-cpu; its other requirements come with the test extra (kdistill[hub-requirements]).
# pip byte-compiles one file at a time; compileall does it on every core. Its errors (template files that are not
# source for this Python, e.g. torch's py312_intrinsics.py on 3.11; pip skips them too) go to .venv/compileall.log.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e ".[tensorflow-cpu,test]" && \
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt --no-deps keras-hub
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > $(VENV)/compileall.log 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

# Offline Fashion-MNIST from Debian's dataset-fashion-mnist package, into data/fashion-mnist.
data:
	bash tools/fetch_fashion_mnist.sh data

demo: install data
	$(BIN)/kdistill demo --data-dir data

test: install
	$(BIN)/python -m pytest

# dist/kdistill-<version>-py3-none-any.whl, the package alone (no dependencies): what the notebooks install on Colab
# (upload it to /content). Built with the venv's setuptools, offline; a fresh build/ so that no removed module rides along.
WHEEL_DIR ?= dist
wheel: | $(BIN)/python
	rm -rf build
	$(BIN)/python -m pip install -q "setuptools>=68" wheel
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	rm -rf build

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build dist
