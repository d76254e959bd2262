"""Sphinx configuration of selfsup's documentation site (``make docs``; built with -W in the tests).

Sphinx rather than MkDocs: its autodoc and Napoleon read the Google-style docstrings the package
already has, it treats every broken reference as a warning that ``-W`` turns into an error, and it
installs from the same package index as the rest of the tooling. Markdown pages go through MyST.
"""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))
sys.path.insert(0, str(DOCS.parent))

import generate  # noqa: E402  (docs/generate.py: the CLI and benchmark pages, written before the build)

import selfsup  # noqa: E402

project = "selfsup"
author = "the selfsup developers"
copyright = "2026, the selfsup developers"
release = version = selfsup.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# a hook selfsup overrides without a docstring of its own would otherwise show PyTorch Lightning's,
# written for Lightning's own Sphinx extensions (``.. testcode::``)
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring, napoleon_numpy_docstring = True, False

html_theme = "alabaster"
html_title = f"selfsup {release}"
html_static_path: list[str] = []

suppress_warnings = ["myst.header"]
nitpicky = False


def setup(app) -> None:  # noqa: ANN001
    app.connect("builder-inited", lambda app: generate.write_pages(DOCS / "_generated"))
