"""The documentation site builds with no warnings, documents every layer, method and command, and
has no broken internal link (``make docs`` runs the same build)."""
from __future__ import annotations

import inspect
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import selfsup
from selfsup.methods import METHODS

pytest.importorskip("sphinx", reason="the docs build needs sphinx and myst-parser (pip install -e '.[docs]')")
pytest.importorskip("myst_parser", reason="the docs build needs myst-parser (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parents[1]


class Links(HTMLParser):
    """Collects the ids, the link targets and the image sources of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"])
        if tag == "img" and values.get("src"):
            self.images.append(values["src"])


@pytest.fixture(scope="module")
def site(docs_site: Path) -> Path:
    """The built site (tests/conftest.py builds it once per session, for tests/test_docs_browser.py too)."""
    return docs_site


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def test_every_internal_link_and_picture_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 10
    parsed = {page: parse(page) for page in pages}
    broken = []
    for page, links in parsed.items():
        for href in links.hrefs + links.images:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue  # external: not checked offline
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {href} (no file)")
            elif parts.fragment and target.suffix == ".html" and parts.fragment not in parsed[target].ids:
                broken.append(f"{page.relative_to(site)}: {href} (no anchor)")
    assert not broken, "\n".join(broken[:30])


def test_the_api_reference_documents_every_layer_from_its_docstrings(site):
    ids = parse(site / "_generated" / "api.html").ids
    for layer in ("nn", "losses", "backbones", "augment", "methods", "data", "eval", "engine", "config", "training"):
        assert f"module-selfsup.{layer}" in ids, layer
    for name in ("selfsup.losses.NTXentLoss", "selfsup.nn.MomentumTeacher", "selfsup.eval.knn_accuracy",
                 "selfsup.training.train", "selfsup.engine.SelfSupervisedModule"):
        assert name in ids, name
    for layer in ("losses", "nn", "eval"):  # every public class and function of these layers has an entry
        module = getattr(selfsup, layer)
        public = [n for n in module.__all__ if inspect.isclass(getattr(module, n)) or inspect.isroutine(getattr(module, n))]
        missing = [n for n in public if f"selfsup.{layer}.{n}" not in ids]
        assert not missing, f"selfsup.{layer}: {missing}"


def test_every_method_and_command_has_its_section(site):
    methods = parse(site / "_generated" / "methods.html").ids
    assert [name for name in METHODS.names() if name not in methods] == []
    cli = (site / "_generated" / "cli.html").read_text(encoding="utf-8")
    for command in ("selfsup-train", "selfsup-eval-knn", "selfsup-eval-linear", "selfsup-export", "selfsup-shard",
                    "selfsup-embed", "selfsup-list", "selfsup-demo"):
        assert f'id="{command}"' in cli, command
    assert "--resume" in cli and "key.sub=value" in cli


def test_the_benchmark_page_shows_the_results_files_tables(site):
    text = (site / "_generated" / "benchmarks.html").read_text(encoding="utf-8")
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert results
    for path in results:
        rows = [line for line in path.read_text().splitlines() if line.startswith("| ") and "---" not in line]
        assert len(rows) >= 2, path.name  # a header and at least one row
        assert f"<td><p>{rows[1].split('|')[1].strip()}</p></td>" in text, path.name
    assert text.count("<table") >= len(results)
