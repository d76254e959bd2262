"""Repository-level pytest wiring for the docstring examples in ``selfsup/`` (run as doctests).

Kept at the repository root, outside the package, so nothing here ships to users. The doctests
see only the common imports an example may take for granted (``torch``, ``selfsup`` with its
layers, ``nn``, ``F``, ``np``); everything else an example uses, it defines itself.
"""
from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Iterator

import pytest

# The suite asserts CPU behaviour (numerics against fp64 references, bitwise resume, loader options);
# on a machine with a GPU, Lightning's accelerator "auto" would move its training runs there (and
# run on an H200 with the GPU visible, at least 17 of them failed). So the GPU is hidden before
# anything initialises CUDA, unless SELFSUP_TEST_CUDA=1: benchmarks/gpu_checks.sh sets it to run
# tests/test_cuda.py, the GPU's own checks.
if os.environ.get("SELFSUP_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

# ``python -m selfsup`` runs the command line (and exits) on import: never collect it.
# (pytest already skips ``__main__.py`` files for --doctest-modules; this keeps it so.)
collect_ignore = ["selfsup/__main__.py"]

_NAMESPACE: dict = {}


def _doctest_globals() -> dict:
    if not _NAMESPACE:
        import numpy as np
        import torch
        from torch import nn
        from torch.nn import functional as F

        import selfsup

        for layer in selfsup._LAYERS:  # so that ``selfsup.methods.get(...)`` etc. work as written
            importlib.import_module(f"selfsup.{layer}")
        _NAMESPACE.update(torch=torch, selfsup=selfsup, nn=nn, F=F, np=np)
    return _NAMESPACE


@pytest.fixture(autouse=True)
def _selfsup_doctest_namespace(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fill ``doctest_namespace`` for docstring examples only (normal tests import what they use).

    The examples use tiny tensors, for which torch's intra-op threads only cost time (a lot of it
    when another process keeps the cores busy), so each example runs on one thread. The folders
    examples make with ``tempfile.mkdtemp()`` land in the test's ``tmp_path`` (pytest removes old
    ones). What an example changes globally is put back afterwards: the thread count, torch's
    random state (the examples seed it) and the ``selfsup`` logger's level (``selfsup.cli.main``
    raises it to INFO).
    """
    from _pytest.doctest import DoctestItem

    if not isinstance(request.node, DoctestItem):
        yield
        return
    namespace = _doctest_globals()
    request.getfixturevalue("doctest_namespace").update(namespace)
    request.getfixturevalue("monkeypatch").setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
    torch = namespace["torch"]
    threads, level = torch.get_num_threads(), logging.getLogger("selfsup").level
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        logging.getLogger("selfsup").setLevel(level)
