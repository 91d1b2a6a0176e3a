"""Stage two: verify candidate pairs with CNN descriptor similarity; CNN neighbours as
a second candidate source (for heavy crops and rotations that move the hash too far).

CNN vectors are L2-normalised, so the cosine *similarity* of a pair is their dot product
(in ``[-1, 1]``, larger = more similar); the collection's cosine *distance* is
``1 - similarity`` (smaller = closer).

The decision rule (thresholds from :mod:`lookalike.dedup.calibrate` or the defaults):
a pair is a duplicate when

* its bytes are identical, or
* ``similarity >= cnn_any`` (whatever found it), or
* its variant-hash distance is ``<= hash_radius`` bits and ``similarity >= cnn_hash``
  (agreement of two independent signals allows a lower CNN bar), or
* (optional third stage, ``geo_inliers > 0``) its similarity is in the uncertain band
  ``[cnn_geo, cnn_any)`` and local features (RootSIFT, ratio test) fit one homography
  with at least ``geo_inliers`` RANSAC inliers: the same picture under a rotation,
  crop or perspective change, which a CNN alone scores like a merely similar scene.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, LookalikeError
from .candidates import ordered


@dataclass
class Thresholds:
    """Decision thresholds (see the module docstring).

    Attributes:
        hash_radius: Hamming radius (bits, inclusive) of the hash candidate search.
        cnn_hash: CNN cosine similarity needed by a pair within ``hash_radius``.
        cnn_any: CNN cosine similarity needed by any pair (e.g. a CNN neighbour only).
        cnn_k: CNN neighbours per image taken as extra candidates (0 = hashes only).
        hash_only_radius: without CNN vectors, pairs within this many bits are duplicates.
        cnn_geo: lower end of the similarity band checked geometrically.
        geo_inliers: RANSAC inliers that confirm a pair in that band (0 = no geometric stage).
    """

    hash_radius: int = 10
    cnn_hash: float = 0.80
    cnn_any: float = 0.90
    cnn_k: int = 5
    hash_only_radius: int = 6
    cnn_geo: float = 0.75
    geo_inliers: int = 60

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Thresholds":
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"unknown dedup thresholds {sorted(unknown)}; valid: {', '.join(known)}")
        out = cls()
        for key, value in values.items():
            setattr(out, key, int(value) if key in ("hash_radius", "cnn_k", "hash_only_radius", "geo_inliers") else float(value))
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


def is_duplicate(similarity: np.ndarray | None, hash_distance: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Vectorised decision rule.

    Args:
        similarity: ``(m,)`` CNN cosine similarities, or None when there are no CNN vectors.
        hash_distance: ``(m,)`` smallest variant-hash distances (bits; a large number
            when the pair was not a hash candidate).

    Returns:
        ``(m,)`` bool.
    """
    hash_distance = np.asarray(hash_distance)
    if similarity is None:
        return hash_distance <= thresholds.hash_only_radius
    similarity = np.asarray(similarity)
    return (similarity >= thresholds.cnn_any) | (
        (hash_distance <= thresholds.hash_radius) & (similarity >= thresholds.cnn_hash))


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
