# quadkeras: two commands on a fresh machine.
#   make run    install into .venv, then run the main job on the embedded digits data
#   make test   install into .venv, then run the test suite once per Keras backend
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-tensorflow test-torch test-jax bench clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(PYTHON) $(VENV)
	touch $(STAMP)

run: $(STAMP)
	$(PY) apps/quickstart.py

test: $(STAMP)
	bash scripts/run_tests.sh $(PY)

test-tensorflow test-torch test-jax: $(STAMP)
	BACKENDS=$(patsubst test-%,%,$@) bash scripts/run_tests.sh $(PY)

clean:
	rm -rf $(VENV) .pytest_cache
