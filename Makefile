# Two entry points: `make demo` (the main job) and `make test`; `make docs` builds the documentation
# site. All create .venv on first use and install the project with the tested pins from constraints.txt; later calls reuse it.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/selfsup demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build docs/_generated
