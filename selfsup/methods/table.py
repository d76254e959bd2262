"""The methods table of the README, rendered from the method cards.

The README holds the table between ``<!-- methods table -->`` and ``<!-- /methods table -->``;
``tests/test_method_cards.py`` fails when it differs from :func:`methods_table`. After adding a
method or editing a card, rewrite it with::

    python -m selfsup.methods.table README.md

(without an argument the table is printed). Rows are grouped by family, in the order of
:data:`~selfsup.methods.card.FAMILIES`, then sorted by year and name.

Example:
    >>> print(methods_table({"simclr": selfsup.methods.card("simclr")}).splitlines()[2])
    | `simclr` | 2020 | [A Simple Framework for ...](https://arxiv.org/abs/2002.05709) (Chen et al.) | ...
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from selfsup.methods.card import ANY_BACKBONE, FAMILIES, MethodCard

START = "<!-- methods table -->"
END = "<!-- /methods table -->"
KIND_NAMES = {"resnet": "ResNet", "vit": "ViT", "swin": "Swin", "other": "other"}
HEADER = ("| method | year | paper | code | family | backbones | views | what it does |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


def _row(name: str, card: MethodCard) -> str:
    code = f"[official]({card.code})" if card.code else "none released"
    if set(card.backbones) == set(ANY_BACKBONE):
        backbones = "any"
    else:
        backbones = ", ".join(KIND_NAMES[kind] for kind in card.backbones)
    cells = [f"`{name}`", str(card.year), f"[{card.title}]({card.paper}) ({card.authors})", code, card.family,
             backbones, f"`{card.views}`", card.summary]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def methods_table(cards: Mapping[str, MethodCard] | None = None) -> str:
    """The Markdown table of ``cards`` (name -> card; default: every registered method)."""
    if cards is None:
        from selfsup.methods.registry import METHODS

        cards = METHODS.cards()
    order = sorted(cards, key=lambda name: (FAMILIES.index(cards[name].family), cards[name].year, name))
    return "\n".join([HEADER, *(_row(name, cards[name]) for name in order)])


def readme_with_methods_table(readme: str, table: str | None = None) -> str:
    """``readme`` with ``table`` (default :func:`methods_table`) between :data:`START` and
    :data:`END`; a ValueError when a marker is missing."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README needs the markers {START!r} and, after it, {END!r} around the methods table")
    table = methods_table() if table is None else table
    return readme[:start + len(START)] + "\n" + table + "\n" + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table, or rewrite it in the README file given as the argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(methods_table())
        return 0
    path = Path(args[0])
    text = path.read_text()
    updated = readme_with_methods_table(text)
    if updated != text:
        path.write_text(updated)
    print(f"{path}: methods table {'rewritten' if updated != text else 'already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
