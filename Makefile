# One entry point for learners and CI. `make lab` opens the walkthrough, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU has no GPU: Triton kernels run in its interpreter, and tests keep to two threads.
export TRITON_INTERPRET ?= 1
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: setup lab test test-unit test-notebooks test-browser lint train clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (hstu-tutorial)"
	touch $@

# JupyterLab 4 asks whether to fetch Jupyter news on first start; the venv's overrides.json answers "never"
# (setting fetchNews of @jupyterlab/apputils-extension:notification) and the server skips the update check.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json

lab: setup
	@mkdir -p $(dir $(LAB_OVERRIDES))
	@printf '%s\n' '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(LAB_OVERRIDES)
	@echo "Open the URL printed below: JupyterLab serves the repository root (notebooks/, exercises/) and opens notebooks/00_overview.ipynb."
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$${PORT:-8888} --notebook-dir=. \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		$(if $(filter 0,$(shell id -u)),--allow-root,) notebooks/00_overview.ipynb

test: setup lint test-unit test-notebooks test-browser

lint: setup
	$(VENV)/bin/ruff check hstu_tutorial tests benchmarks exercises tools
	$(VENV)/bin/ruff format --check hstu_tutorial tests benchmarks exercises tools

test-unit: setup
	$(PY) -m pytest tests -m "not browser" -q

test-notebooks: setup
	# passing exercise checks tick the checklist: keep the test run out of the learner's own progress file
	HSTU_PROGRESS_FILE=$${HSTU_PROGRESS_FILE:-$$(mktemp -d)/progress.json} $(PY) -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --timeout 900 -q notebooks exercises

test-browser: setup
	$(PY) -m pytest tests -m browser -q

train: setup
	$(PY) -m hstu_tutorial.train --config $${CONFIG:-synthetic/hstu-small}

clean:
	rm -rf $(VENV) .pytest_cache
