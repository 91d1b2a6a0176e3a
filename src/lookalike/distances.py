"""Exact distances in a descriptor's metric, one convention everywhere: smaller = closer
(Euclidean for l2, 1 - cos for cosine, -inner product for ip, differing bits for hamming)."""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

#: Query rows per block of :func:`exact_distances` (bounds the float64 temporaries).
DISTANCE_CHUNK = 1024


def _as_float_rows(x: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as float64 rows in the space where the metric is a plain L2 / dot product.

    ``hamming`` rows (uint8 packed bits) are unpacked to 0/1 floats; ``cosine`` rows
    are L2-normalised.
    """
    if metric == "hamming":
        return np.unpackbits(np.asarray(x, dtype=np.uint8), axis=1).astype(np.float64)
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def exact_distances(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """Exact distance matrix in a descriptor's metric.

    Args:
        queries: ``(n_queries, code_size)`` float32 (uint8 packed bits for hamming).
        gallery: ``(n_gallery, code_size)``, same dtype.
        metric: ``l2`` (Euclidean distance), ``cosine`` (``1 - cos``), ``ip``
            (``-inner product``) or ``hamming`` (number of differing bits).

    Returns:
        ``(n_queries, n_gallery) float32``, smaller = closer. Computed in float64 (so
        float32 rounding of the result is the only approximation; hamming counts are
        exact integers).
    """
    if metric not in ("l2", "cosine", "ip", "hamming"):
        raise ConfigError(f"unknown metric {metric!r}; valid: l2, cosine, ip, hamming")
    g = _as_float_rows(gallery, metric)
    out = np.empty((len(queries), len(g)), dtype=np.float32)
    g_sq = (g * g).sum(axis=1)
    for start in range(0, len(queries), DISTANCE_CHUNK):
        q = _as_float_rows(queries[start:start + DISTANCE_CHUNK], metric)
        dot = q @ g.T
        if metric == "l2":
            sq = (q * q).sum(axis=1)[:, None] + g_sq[None, :] - 2.0 * dot
            block = np.sqrt(np.maximum(sq, 0.0))
        elif metric == "hamming":
            # |a xor b| = |a| + |b| - 2 a.b on 0/1 vectors: exact in float64.
            block = np.rint((q * q).sum(axis=1)[:, None] + g_sq[None, :] - 2.0 * dot)
        elif metric == "cosine":
            block = 1.0 - dot
        else:
            block = -dot
        out[start:start + len(q)] = block
    return out


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distance between ``a[i]`` and ``b[i]``: ``(n,) float64``, smaller = closer."""
    x, y = _as_float_rows(a, metric), _as_float_rows(b, metric)
    if metric == "l2":
        return np.sqrt(((x - y) ** 2).sum(axis=1))
    if metric == "hamming":
        return np.abs(x - y).sum(axis=1)
    if metric == "cosine":
        return 1.0 - (x * y).sum(axis=1)
    if metric == "ip":
        return -(x * y).sum(axis=1)
    raise ConfigError(f"unknown metric {metric!r}; valid: l2, cosine, ip, hamming")
