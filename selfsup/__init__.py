"""selfsup: self-supervised visual representation learning on PyTorch.

Layers (imports only go downwards): ``nn`` -> ``losses`` -> ``backbones`` -> ``augment`` ->
``methods`` -> ``data`` -> ``eval`` -> ``engine`` -> ``config`` / ``cli``. Each layer can be used
alone, e.g. ``from selfsup.losses import NTXentLoss`` in a hand-written loop.
"""

__version__ = "0.1.0"
