"""Stage two: verify candidate pairs cheaply from the scan's thumbnails; optionally
CNN neighbours as extra candidates and local features + RANSAC as a last check.

Each candidate pair ``(a, b)`` gets three features, all from the 64-px gray thumbnails
and variant hashes that :mod:`.scan` made in its single decode:

* ``hash_distance``: the smallest Hamming distance (bits, smaller = closer) between a
  variant hash of one image (mirror, rotation, centre crop) and the other's hash;
* ``ncc``: normalised cross-correlation (in ``[-1, 1]``, larger = more similar) of the
  two thumbnails, the first one turned / cropped by that best variant so both show the
  same framing;
* ``grad_ncc``: the same correlation of their gradient magnitudes (edges: robust to
  brightness, contrast and gray conversion; sensitive to the small shifts that tell a
  neighbouring turntable view or a different face from a re-encoded copy).

The decision is a linear (logistic) score ``bias + w_hash * hash_distance + w_ncc * ncc
+ w_grad * grad_ncc`` with a pair a duplicate when the score is ``>= 0``; the weights
come from :mod:`.calibrate` (a logistic regression on labelled pairs, its probability
threshold folded into the bias) or the defaults below, which were fitted that way on
the calibration half of ``bench/dedup.py`` (seed 0; never on its test half).

Measured there (bench/results/dedup.json notes), the CNN cosine of EfficientNet-Lite0
separated the same candidate pairs *worse* than ``grad_ncc`` and cost ~40 ms per image
on a loaded core, so the CNN is not part of the default decision. It remains an
optional second candidate source for heavy crops (``cnn_k > 0``: CNN nearest
neighbours with cosine similarity ``>= cnn_any``), which needs CNN vectors of every
image (a collection with a ``cnn`` descriptor).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, LookalikeError
from .candidates import ordered

_INT_FIELDS = ("hash_radius", "cnn_k", "geo_inliers")


@dataclass
class Thresholds:
    """Decision parameters (see the module docstring).

    Attributes:
        hash_radius: Hamming radius (bits, inclusive) of the hash candidate search.
        bias, w_hash, w_ncc, w_grad: the linear score of a pair (duplicate when >= 0).
        cnn_k: CNN neighbours per image taken as extra candidates (0 = off, the default).
        cnn_any: CNN cosine similarity that accepts a CNN-neighbour candidate on its own.
        geo_inliers: RANSAC inliers that rescue a rejected pair whose score is at least
            ``geo_margin`` (0 = no geometric stage, the default).
        geo_margin: lowest (negative) score still checked geometrically.
    """

    hash_radius: int = 10
    bias: float = 1.4664
    w_hash: float = -0.5530
    w_ncc: float = -5.0478
    w_grad: float = 4.7549
    cnn_k: int = 0
    cnn_any: float = 0.95
    geo_inliers: int = 0
    geo_margin: float = -2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Thresholds":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown dedup thresholds {sorted(unknown)}; valid: {', '.join(sorted(known))}")
        out = cls()
        for key, value in values.items():
            try:
                setattr(out, key, int(value) if key in _INT_FIELDS else float(value))
            except (TypeError, ValueError):
                raise ConfigError(f"threshold {key}={value!r}: expected a number") from None
        return out

    def with_overrides(self, text: str | None) -> "Thresholds":
        """Apply ``key=value,key=value`` overrides (e.g. from ``--threshold``)."""
        if not text:
            return self
        values = self.to_dict()
        for part in text.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ConfigError(f"--threshold {part!r}: expected key=value (keys: {', '.join(values)})")
            key, value = (s.strip() for s in part.split("=", 1))
            if key not in values:
                raise ConfigError(f"unknown threshold {key!r}; valid: {', '.join(values)}")
            values[key] = value
        return Thresholds.from_dict(values)

    def score(self, hash_distance: np.ndarray, ncc: np.ndarray, grad_ncc: np.ndarray) -> np.ndarray:
        """``(m,)`` float64 linear scores (larger = more likely a duplicate; >= 0 accepts)."""
        return (self.bias + self.w_hash * np.asarray(hash_distance, np.float64)
                + self.w_ncc * np.asarray(ncc, np.float64) + self.w_grad * np.asarray(grad_ncc, np.float64))


def _ncc_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise normalised cross-correlation of ``(m, ...)`` arrays -> ``(m,)`` in [-1, 1]."""
    x = x.reshape(len(x), -1).astype(np.float32)
    y = y.reshape(len(y), -1).astype(np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    # A flat thumbnail (den 0) correlates with nothing: 0, not NaN.
    return np.where(den > 0, (x * y).sum(axis=1) / np.maximum(den, 1e-12), 0.0).astype(np.float32)


def gradient_magnitude(thumbs: np.ndarray) -> np.ndarray:
    """``(m, T, T)`` uint8 -> ``(m, T, T)`` float32 Sobel gradient magnitude after a
    Gaussian blur (sigma 1 px, so JPEG blocking and noise do not count as edges)."""
    import cv2

    out = np.empty(thumbs.shape, np.float32)
    for i, t in enumerate(thumbs):
        f = cv2.GaussianBlur(t.astype(np.float32), (0, 0), 1.0)
        out[i] = cv2.magnitude(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1))
    return out


def thumbnail_features(variants: np.ndarray, thumbs: np.ndarray, a: np.ndarray, b: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three pair features of rows ``a[i]``, ``b[i]`` of a scan.

    Args:
        variants: ``(n, V, 8)`` uint8 variant hashes (:func:`lookalike.dedup.scan.variant_hashes`).
        thumbs: ``(n, 3, T, T)`` uint8 thumbnails (image, centre crops).
        a, b: ``(m,)`` int row indices of the pairs.

    Returns:
        ``hash_distance (m,) int64``, ``ncc (m,) float32``, ``grad_ncc (m,) float32``.
    """
    from .mih import as_uint64, popcount
    from .scan import variant_thumbs

    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    v = variants.shape[1]
    codes = as_uint64(variants.reshape(-1, 8)).reshape(len(variants), v)
    d_ab = popcount(codes[a] ^ codes[b, :1])            # (m, V): variants of a vs b
    d_ba = popcount(codes[b] ^ codes[a, :1])
    a_first = d_ab.min(axis=1) <= d_ba.min(axis=1)
    src, dst = np.where(a_first, a, b), np.where(a_first, b, a)
    k = np.where(a_first, d_ab.argmin(axis=1), d_ba.argmin(axis=1))
    hash_d = np.minimum(d_ab.min(axis=1), d_ba.min(axis=1))
    x, y = variant_thumbs(thumbs[src], k), thumbs[dst, 0]
    return hash_d, _ncc_rows(x, y), _ncc_rows(gradient_magnitude(x), gradient_magnitude(y))


def pair_similarities(vectors: Mapping[int, np.ndarray], pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Cosine similarity ``(len(pairs),) float32`` of each pair of unit vectors.

    Args:
        vectors: ``{id: (dim,) float32 unit vector}``.
        pairs: ``(a, b)`` id pairs.
    """
    if not pairs:
        return np.zeros(0, np.float32)
    a = np.stack([vectors[p[0]] for p in pairs]).astype(np.float32)
    b = np.stack([vectors[p[1]] for p in pairs]).astype(np.float32)
    return np.einsum("ij,ij->i", a, b)


def cnn_neighbour_candidates(index, query_ids: Sequence[int], query_vectors: np.ndarray, k: int,
                             min_similarity: float) -> dict[tuple[int, int], float]:
    """The ``k`` nearest CNN neighbours of each query with similarity >= ``min_similarity``.

    Args:
        index: the collection's CNN :class:`~lookalike.index.faiss.FaissIndex` (cosine).
        query_ids: ``(n,)`` ids of the queries (self hits dropped).
        query_vectors: ``(n, dim)`` float32 unit vectors.

    Returns:
        ``{(a, b): similarity}`` with ``a < b``.
    """
    out: dict[tuple[int, int], float] = {}
    if k <= 0 or len(query_ids) == 0 or index.ntotal == 0:
        return out
    result = index.search(np.asarray(query_vectors, np.float32), k=min(k + 1, index.ntotal))
    for q, ids, dists in zip(np.asarray(query_ids).tolist(), result.ids.tolist(), result.distances.tolist()):
        for other, dist in zip(ids, dists):
            sim = 1.0 - dist
            if other < 0 or other == q or sim < min_similarity:
                continue
            out[ordered(q, other)] = sim
    return out


class GeometricVerifier:
    """RootSIFT + ratio test + RANSAC homography between image files, with each image's
    features extracted once per verifier (a run checks one image against several).

    Args:
        max_side: images are shrunk to this longer side before detection (speed).
        max_keypoints: strongest keypoints kept per image.
    """

    def __init__(self, max_side: int = 320, max_keypoints: int = 500):
        self.max_side, self.max_keypoints = max_side, max_keypoints
        self._features: dict[str, Any] = {}

    def _get(self, path: str):
        if path not in self._features:
            from ..matching.features import detect_and_describe

            try:
                self._features[path] = detect_and_describe(path, "rootsift", self.max_keypoints, self.max_side)
            except LookalikeError:
                self._features[path] = None
        return self._features[path]

    def inliers(self, path_a: str, path_b: str) -> int:
        """RANSAC homography inliers between two files (0 when unreadable or no model)."""
        from ..matching.features import match_features
        from ..matching.ransac import verify_matches

        fa, fb = self._get(path_a), self._get(path_b)
        if fa is None or fb is None:
            return 0
        pair = match_features(fa, fb)
        if len(pair) < 4:
            return 0
        return verify_matches(pair.points1, pair.points2, model="homography").n_inliers
