# Everything a fresh machine needs: `make demo` and `make test` create .venv first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/churnlens demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile

# in .ci/run: the four packages type-check
typecheck: $(STAMP)
	$(VENV)/bin/mypy features training models serving

clean:
	rm -rf $(VENV) churnlens-demo mlflow.db mlartifacts outbox.db
