"""Group face descriptors by identity: Chinese whispers (dlib) or agglomerative (scikit-learn)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, InputError
from ._models import import_dlib


def _check(descriptors) -> np.ndarray:
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise InputError(f"descriptors must be a finite (n, dim) array, got shape {x.shape}")
    return x


def chinese_whispers(descriptors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Cluster with dlib's Chinese whispers graph clustering.

    Faces closer than ``threshold`` (Euclidean, smaller = more alike) are joined by an
    edge; labels then spread over the graph. The number of clusters is not given.

    Args:
        descriptors: ``(n, 128)`` face descriptors.
        threshold: edge distance (dlib's example uses 0.5).

    Returns:
        ``int64`` ``(n,)`` labels, renumbered 0.. in order of first appearance.
    """
    x = _check(descriptors)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    dlib = import_dlib()
    labels = np.asarray(dlib.chinese_whispers_clustering([dlib.vector(row.tolist()) for row in x], float(threshold)))
    return _renumber(labels)


def agglomerative(descriptors: np.ndarray, threshold: float = 0.6, linkage: str = "average") -> np.ndarray:
    """Hierarchical clustering cut at a Euclidean distance (scikit-learn).

    Args:
        descriptors: ``(n, 128)``.
        threshold: clusters are not merged above this linkage distance.
        linkage: ``"average"``, ``"complete"``, ``"single"`` or ``"ward"``.

    Returns:
        ``int64`` ``(n,)`` labels, renumbered 0.. in order of first appearance.
    """
    from sklearn.cluster import AgglomerativeClustering

    if linkage not in ("average", "complete", "single", "ward"):
        raise ConfigError(f"unknown linkage {linkage!r}; valid: average, complete, single, ward")
    x = _check(descriptors)
    if len(x) < 2:
        return np.zeros(len(x), dtype=np.int64)
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=float(threshold), linkage=linkage, metric="euclidean")
    return _renumber(model.fit_predict(x))


def _renumber(labels: np.ndarray) -> np.ndarray:
    _, first = np.unique(labels, return_index=True)
    order = {label: rank for rank, label in enumerate(labels[np.sort(first)])}
    return np.array([order[label] for label in labels], dtype=np.int64)
