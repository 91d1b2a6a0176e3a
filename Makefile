# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch must be the local CPU build (2.13.0); pip must never resolve another one.
TORCH  := torch==2.13.0

.PHONY: venv install install-test demo test bench clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/activate
	$(PIP) install --quiet "$(TORCH)" -e ".[all]"

install-test: install
	$(PIP) install --quiet "$(TORCH)" -e ".[all,test]"

# The main job: index a folder (FOLDER=..., default: sample photos shipped in packages),
# search it, print the top hits and write demo-output/results.html.
demo: install
	$(VENV)/bin/lookalike demo $(FOLDER) --out demo-output

test: install-test
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
