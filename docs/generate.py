"""Pages written from the code before each docs build: the CLI reference (from the argument
parsers), the API reference (one page per layer, plus one per registered method) and the benchmark
tables (from ``benchmarks/results/``). They land in ``docs/_generated/`` (not committed).

Example:
    >>> import tempfile, pathlib
    >>> written = write_pages(pathlib.Path(tempfile.mkdtemp()))
    >>> sorted(p.name for p in written)[:2]
    ['api.md', 'benchmarks.md']
"""
from __future__ import annotations

import argparse
import importlib
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("nn", "losses", "backbones", "augment", "methods", "data", "eval", "engine", "config", "training")


def write_pages(out: Path) -> list[Path]:
    """Write the generated pages under ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    pages = {"cli.md": cli_page(), "api.md": api_page(), "methods.md": methods_page(),
             "benchmarks.md": benchmarks_page()}
    written = []
    for name, text in pages.items():
        path = out / name
        if not path.is_file() or path.read_text() != text:  # unchanged pages keep their time: no rebuild
            path.write_text(text)
        written.append(path)
    return written


def cli_page() -> str:
    from selfsup.cli import build_parser

    lines = ["# Command line", "", "Every command and its options, as `selfsup ... --help` prints them.", ""]

    def visit(parser: argparse.ArgumentParser, words: list[str]) -> None:
        lines.extend([f"{'#' * min(len(words) + 1, 4)} `{' '.join(words)}`", "", "```text",
                      parser.format_help().rstrip(), "```", ""])
        for action in parser._actions:  # argparse keeps sub-commands in a private action class
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    visit(sub, [*words, name])

    parser = build_parser()
    parser.prog = "selfsup"
    visit(parser, ["selfsup"])
    return "\n".join(lines)


def api_page() -> str:
    lines = ["# API reference", "",
             "The package's layers, lowest first; each imports only the layers above it on this page.", ""]
    for layer in LAYERS:
        module = importlib.import_module(f"selfsup.{layer}")
        options = []
        if hasattr(module, "__all__"):  # the layer's public names, less those another layer documents
            elsewhere = [name for name in module.__all__ if not _defined_in(getattr(module, name), f"selfsup.{layer}")]
            options = ["   :imported-members:"] + ([f"   :exclude-members: {', '.join(elsewhere)}"] if elsewhere else [])
        lines += [f"## `selfsup.{layer}`", "", "```{eval-rst}", f".. automodule:: selfsup.{layer}", *options, "```", ""]
    return "\n".join(lines)


def _defined_in(obj: object, package: str) -> bool:
    # classes and functions belong to their module; other objects (registries, constants) to where they are exported
    module = obj.__module__ if isinstance(obj, type) or inspect.isroutine(obj) else package
    return module == package or module.startswith(package + ".")


def methods_page() -> str:
    from selfsup.methods import METHODS

    lines = ["# Methods", "", "One page section per registered method: its paper, its defaults and its "
             "training step, from the method's own file (the classes' full entries are under `selfsup.methods` in the API reference).", ""]
    for name in sorted(METHODS.names()):
        cls = METHODS.factory(name)
        lines += [f"## `{name}`", "", "```{eval-rst}", f".. autoclass:: {cls.__module__}.{cls.__qualname__}",
                  "   :members: training_step", "   :no-index:", "```", ""]
    return "\n".join(lines)


def benchmarks_page() -> str:
    lines = ["# Benchmark tables", "", "Read from `benchmarks/results/` (written by `benchmarks/run.py`).", ""]
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        text = path.read_text().strip()  # its headings start at ###: a section of this page
        lines += [text.replace("### ", "## ", 1), ""]
    return "\n".join(lines)
