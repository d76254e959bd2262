"""PNG pictures of a trained encoder: an embedding map, nearest neighbours, training curves, ViT attention.

Every writer draws on its own matplotlib ``Figure`` (no pyplot global state), writes the PNG
atomically (a temporary file in the same folder, then a rename; missing folders are created) and
returns its path. matplotlib is imported on first use. The training curves live in
:mod:`selfsup.eval.curves` and the attention maps in :mod:`selfsup.eval.attention`; both are
importable from here.

Example:
    >>> import tempfile; from pathlib import Path
    >>> test_set, folder = selfsup.data.get("digits", split="test"), Path(tempfile.mkdtemp())
    >>> features = test_set.images.flatten(1).float()  # e.g. selfsup.eval.extract_features(...)
    >>> embedding_map(features, test_set.labels, folder / "map.png", method="pca", class_names=test_set.classes).name
    'map.png'
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigError, SelfSupError, close_matches
from selfsup.eval._figures import QUERY, RIGHT, UNKNOWN, WRONG, figure, label_text, save, show
from selfsup.eval.attention import attention_maps
from selfsup.eval.curves import training_curves

__all__ = ["attention_maps", "cosine_neighbours", "embedding_map", "neighbour_grid", "training_curves"]

MAP_METHODS = ("auto", "umap", "pca", "tsne")


def _array(x: Tensor | np.ndarray | Sequence[Any], what: str, dtype: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what} must be numeric, got {type(x).__name__}: {err}") from err


# ---------------------------------------------------------------------------------------- map


def _project(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``x`` and a description of how they were made."""
    n, d = x.shape
    if method == "umap":
        import umap  # checked by the caller

        reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=max(2, min(15, n - 1)), random_state=seed)
        return np.asarray(reducer.fit_transform(x)), "UMAP (cosine)"
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        exact = n < 200  # the exact gradient is quicker for few points (and has no OpenMP start-up cost)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    method="exact" if exact else "barnes_hut")
        return tsne.fit_transform(x), f"t-SNE (perplexity {perplexity:g})"
    from sklearn.decomposition import PCA

    k = min(2, n, d)
    pca = PCA(n_components=k, random_state=seed)
    xy = pca.fit_transform(x)
    if k < 2:
        xy = np.concatenate([xy, np.zeros((n, 2 - k))], axis=1)
    share = " + ".join(f"{100 * v:.0f}%" for v in pca.explained_variance_ratio_)
    return xy, f"PCA (variance explained {share})"


def _map_method(method: str) -> str:
    if method not in MAP_METHODS:
        raise ConfigError(f"Unknown map method {method!r}; expected one of {', '.join(MAP_METHODS)}."
                          + close_matches(str(method), MAP_METHODS))
    if method in ("auto", "umap"):
        try:
            import umap  # noqa: F401
        except ImportError as err:
            if method == "umap":
                raise SelfSupError("method='umap' needs umap-learn: pip install 'selfsup[viz]' "
                                   "(or use method='pca' or 'tsne').") from err
            return "pca"
        return "umap"
    return method


def embedding_map(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int] | None,
    path: str | Path,
    *,
    method: str = "auto",
    class_names: Sequence[str] | None = None,
    max_points: int = 5000,
    seed: int = 0,
) -> Path:
    """A 2-D map of L2-normalised embeddings, one dot per image, coloured by label.

    ``method``: ``"umap"`` (UMAP, McInnes et al. 2018, https://arxiv.org/abs/1802.03426, cosine
    metric; needs the ``viz`` extra), ``"tsne"`` (van der Maaten & Hinton 2008, scikit-learn),
    ``"pca"`` (scikit-learn), or ``"auto"``: UMAP when ``umap`` imports, else PCA. The title says
    which was used. At most ``max_points`` rows (a seeded random choice) are drawn; label -1 is
    drawn grey as "unlabelled". Up to 20 classes get a legend, more a colour bar.

    Example:
        >>> import tempfile
        >>> embedding_map(torch.randn(300, 64), torch.randint(0, 10, (300,)), tempfile.mkdtemp() + "/map.png", method="pca").name
        'map.png'
    """
    x = _array(features, "features", np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ConfigError(f"embedding_map needs features of shape (N, D) with N >= 2, got {x.shape}.")
    if not np.isfinite(x).all():
        raise ConfigError("embedding_map got features holding NaN or infinity; the model's outputs are not finite.")
    y = np.full(len(x), -1, dtype=np.int64) if labels is None else _array(labels, "labels", np.int64)
    if y.shape != (len(x),):
        raise ConfigError(f"embedding_map needs one label per row: features {x.shape}, labels {y.shape}.")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ConfigError(f"max_points must be an int >= 2, got {max_points!r}.")
    method = _map_method(method)
    total = len(x)
    if total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        x, y = x[keep], y[keep]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    xy, how = _project(x, method, seed)

    fig = figure(8.0, 6.5)
    ax = fig.add_subplot()
    unlabelled = y < 0
    if unlabelled.any():
        ax.scatter(xy[unlabelled, 0], xy[unlabelled, 1], s=4, c=UNKNOWN, alpha=0.5, label="unlabelled", linewidths=0)
    classes = np.unique(y[~unlabelled])
    if 0 < len(classes) <= 20:
        from matplotlib import colormaps

        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, c in enumerate(classes):
            at = y == c
            ax.scatter(xy[at, 0], xy[at, 1], s=6, color=cmap(i), alpha=0.8, linewidths=0,
                       label=label_text(int(c), class_names))
    elif len(classes) > 20:
        dots = ax.scatter(xy[~unlabelled, 0], xy[~unlabelled, 1], s=5, c=y[~unlabelled], cmap="turbo", alpha=0.8,
                          linewidths=0)
        fig.colorbar(dots, ax=ax, label="label")
    if unlabelled.any() or 0 < len(classes) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False, fontsize=8)
    shown = f"{len(x)} of {total}" if total > len(x) else f"{total}"
    ax.set_title(f"{how} of {shown} embeddings ({x.shape[1]}-d, L2-normalised)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return save(fig, path)


# ---------------------------------------------------------------------------------- neighbours


def cosine_neighbours(
    queries: Tensor, bank: Tensor, k: int, *, exclude: Tensor | Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """Cosine similarities and indices ``(Q, k)`` of each query's ``k`` nearest rows of ``bank``.

    ``exclude``: one bank index per query never returned for it (the query itself, when queries
    and bank come from the same images); a negative entry excludes nothing.

    Example:
        >>> sims, idx = cosine_neighbours(torch.randn(4, 8), torch.randn(100, 8), k=5)
        >>> idx.shape
        torch.Size([4, 5])
    """
    if queries.dim() != 2 or bank.dim() != 2 or queries.shape[1] != bank.shape[1]:
        raise ConfigError(f"cosine_neighbours needs (Q, D) queries and (N, D) bank, got {tuple(queries.shape)} "
                          f"and {tuple(bank.shape)}.")
    available = bank.shape[0] - (exclude is not None)
    if not 1 <= k <= available:
        raise ConfigError(f"cosine_neighbours: k={k} must be between 1 and the {available} usable bank rows.")
    sims = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    if exclude is not None:
        skip = torch.as_tensor(exclude, dtype=torch.long)
        if skip.shape != (len(sims),) or (len(skip) > 0 and int(skip.max()) >= bank.shape[0]):
            raise ConfigError(f"cosine_neighbours: exclude must hold one bank index (or -1) per query, got "
                              f"shape {tuple(skip.shape)} for {len(sims)} queries and {bank.shape[0]} bank rows.")
        rows = torch.nonzero(skip >= 0).flatten()
        sims[rows, skip[rows]] = -math.inf
    return sims.topk(k, dim=1)


def neighbour_grid(
    query_images: Tensor,
    neighbour_images: Tensor,
    path: str | Path,
    *,
    query_labels: Tensor | Sequence[int] | None,
    neighbour_labels: Tensor | Sequence[Sequence[int]] | None,
    similarities: Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One row per query image: the query, then its ``k`` nearest neighbours (e.g. by :func:`cosine_neighbours`).

    A neighbour whose label differs from the query's is framed red, one with the same label
    green; where either label is unknown (-1) the frame is grey. Under each image: its class
    (and the cosine similarity when ``similarities`` is given).

    Args:
        query_images: ``(Q, C, H, W)`` uint8 (or float in [0, 1]).
        neighbour_images: ``(Q, k, C, H, W)``.
        query_labels: ``(Q,)`` (None: unknown).
        neighbour_labels: ``(Q, k)`` (None: unknown).
        similarities: ``(Q, k)`` cosine similarities, optional.

    Example:
        >>> import tempfile
        >>> data = selfsup.data.get("digits", split="test")
        >>> sims, idx = cosine_neighbours(data.images[:4].flatten(1).float(), data.images.flatten(1).float(), k=3)
        >>> neighbour_grid(data.images[:4], data.images[idx], tempfile.mkdtemp() + "/nn.png",
        ...                query_labels=data.labels[:4], neighbour_labels=data.labels[idx], similarities=sims).name
        'nn.png'
    """
    queries, neighbours = torch.as_tensor(query_images), torch.as_tensor(neighbour_images)
    if queries.dim() != 4 or neighbours.dim() != 5 or neighbours.shape[0] != queries.shape[0] or len(queries) == 0:
        raise ConfigError(f"neighbour_grid needs (Q, C, H, W) queries and (Q, k, C, H, W) neighbours with Q >= 1, "
                          f"got {tuple(queries.shape)} and {tuple(neighbours.shape)}.")
    q, k = neighbours.shape[:2]
    qy = torch.full((q,), -1) if query_labels is None else torch.as_tensor(query_labels).long()
    ny = torch.full((q, k), -1) if neighbour_labels is None else torch.as_tensor(neighbour_labels).long()
    if qy.shape != (q,) or ny.shape != (q, k) or (similarities is not None and similarities.shape != (q, k)):
        raise ConfigError(f"neighbour_grid: labels must be ({q},) and ({q}, {k}) (similarities ({q}, {k})), got "
                          f"{tuple(qy.shape)} and {tuple(ny.shape)}.")
    width, height = 1.3 * (k + 1), 1.45 * q + 0.5
    # the top inch holds the figure title above the column headers ("query", "#1", ...)
    height += 0.35
    fig = figure(width, height, constrained=False)
    fig.subplots_adjust(left=0.1 / width, right=1 - 0.1 / width, bottom=0.25 / height, top=1 - 0.8 / height,
                        wspace=0.12, hspace=0.3)
    axes = fig.subplots(q, k + 1, squeeze=False)
    for r in range(q):
        show(axes[r, 0], queries[r], QUERY)
        axes[r, 0].set_xlabel(label_text(int(qy[r]), class_names), fontsize=7)
        for c in range(k):
            known = qy[r] >= 0 and ny[r, c] >= 0
            frame = (RIGHT if ny[r, c] == qy[r] else WRONG) if known else UNKNOWN
            ax = axes[r, c + 1]
            show(ax, neighbours[r, c], frame)
            text = label_text(int(ny[r, c]), class_names)
            # three decimals: near-duplicates' similarities differ in the third (0.998 vs 0.991)
            ax.set_xlabel(text if similarities is None else f"{text} {float(similarities[r, c]):.3f}", fontsize=7)
    axes[0, 0].set_title("query", fontsize=8)
    for c in range(k):
        axes[0, c + 1].set_title(f"#{c + 1}", fontsize=8)
    fig.suptitle("Nearest neighbours by cosine similarity (frame: green same class, red another class)", fontsize=9)
    return save(fig, path)
