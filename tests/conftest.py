"""Shared fixtures: tiny backbones and views so every test runs in well under a second, and the
documentation site, built once per session for the tests that read it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import selfsup.backbones

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_backbone():
    torch.manual_seed(0)
    return selfsup.backbones.get("resnet_tiny", width=4)


@pytest.fixture
def two_views():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)]


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site's HTML folder, built as ``make docs`` builds it (warnings are errors)
    into a temporary folder, once per test session: tests/test_docs.py reads its files,
    tests/test_docs_browser.py opens them in Chromium. Tests must not change it."""
    pytest.importorskip("sphinx", reason="the docs build needs sphinx and myst-parser (pip install -e '.[docs]')")
    pytest.importorskip("myst_parser", reason="the docs build needs myst-parser (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                            "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
                           capture_output=True, text=True, cwd=ROOT)
    assert build.returncode == 0, f"sphinx-build failed or warned:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    return out / "html"
