"""2-D pictures of embeddings: test classes before and after training.

:func:`project_2d` maps ``(N, D)`` embeddings to ``(N, 2)`` with PCA or t-SNE
(scikit-learn; t-SNE on cosine distances, seeded); :func:`plot_before_after` draws the
two projections side by side, one colour per class, with each panel's leave-one-out
Recall@1 and mAP@R in its title so the picture and the numbers agree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError

METHODS = ("pca", "tsne")


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, D)`` float -> ``(N, 2) float64`` coordinates.

    Args:
        method: ``pca`` (linear, keeps global layout) or ``tsne`` (cosine metric, keeps
            neighbourhoods; perplexity ``min(30, (N - 1) / 3)``).
        seed: t-SNE initialisation seed.
    """
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise InputError(f"need (N >= 3, D) embeddings, got shape {x.shape}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                    random_state=seed).fit_transform(x)
    raise ConfigError(f"unknown projection {method!r}; valid: {', '.join(METHODS)}")


def plot_before_after(before: np.ndarray, after: np.ndarray, labels: Sequence, path: str | Path,
                      method: str = "pca", title: str = "", label_names: Sequence[str] | None = None,
                      seed: int = 0) -> Path:
    """Two scatter plots of the same images' embeddings, before and after training.

    Args:
        before, after: ``(N, D1)`` and ``(N, D2)`` unit embeddings of the same images.
        labels: ``(N,)`` class of each image (colours).
        path: PNG to write.
        method: ``pca`` or ``tsne``.
        label_names: legend names indexed by the sorted unique labels (optional).

    Returns:
        The written path.
    """
    from ..evaluation.plots import _figure, _save
    from .loop import retrieval_scores

    labels = np.asarray(labels)
    if len(before) != len(labels) or len(after) != len(labels):
        raise InputError(f"before {len(before)}, after {len(after)} and labels {len(labels)} differ")
    classes = np.unique(labels)
    fig = _figure(11, 5.2)
    cmap = __import__("matplotlib").colormaps["tab20" if len(classes) > 10 else "tab10"]
    for panel, (name, x) in enumerate((("before training", before), ("after training", after))):
        ax = fig.add_subplot(1, 2, panel + 1)
        xy = project_2d(x, method, seed)
        for i, c in enumerate(classes):
            keep = labels == c
            name_c = label_names[i] if label_names is not None and i < len(label_names) else str(c)
            ax.scatter(xy[keep, 0], xy[keep, 1], s=9, alpha=0.75, color=cmap(i % cmap.N), label=name_c)
        scores = retrieval_scores(x, labels)
        ax.set_title(f"{name}: R@1 {scores['recall_at_1']:.3f}, mAP@R {scores['map_at_r']:.3f}",
                     fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
        if panel == 1 and len(classes) <= 20:
            ax.legend(fontsize="x-small", markerscale=1.5, loc="best")
    fig.suptitle(title or f"test-class embeddings ({method.upper()})")
    return _save(fig, path)
