"""The README's plain-PyTorch loop runs as written (with one epoch instead of two)."""
from __future__ import annotations

import re
from pathlib import Path


def test_readme_loop_runs(capsys):
    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"<!-- readme-loop -->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 30
    exec(compile(block.replace("epochs = 2", "epochs = 1"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "epoch 0: loss" in out and "'top1'" in out
