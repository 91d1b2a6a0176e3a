"""Stage two: verify candidate pairs cheaply from the scan's thumbnails; optionally
CNN neighbours as extra candidates and local features + RANSAC as a last check.

Each candidate pair ``(a, b)`` gets three features, all from the 64-px gray thumbnails
and variant hashes that :mod:`.scan` made in its single decode:

* ``hash_distance``: the smallest Hamming distance (bits, smaller = closer) between a
  variant hash of one image (mirror, rotation, centre crop) and the other's hash;
* ``ncc``: correlation (in ``[-1, 1]``, larger = more similar) of the two thumbnails, the
  first one turned / cropped by that best variant so both show the same framing, and
  also turned by a small estimated in-plane rotation (:func:`estimate_rotation`; the
  better alignment is kept). It is a *trimmed* correlation
  (:func:`trimmed_correlation`): the worst-matching 1/8 of an 8 x 8 grid of blocks is
  ignored, so a caption or logo over part of a copy costs little;
* ``grad_ncc``: the same correlation of their gradient magnitudes (edges: robust to
  brightness, contrast and gray conversion; sensitive to the small shifts that tell a
  neighbouring turntable view or a different face from a re-encoded copy).

The decision is a linear (logistic) score ``bias + w_hash * hash_distance + w_ncc *
-log(1 - ncc) + w_grad * -log(1 - grad_ncc)`` (:func:`design_matrix`: correlations as log
distances from a perfect match) with a pair a duplicate when the score is ``>= 0``; the
weights come from :mod:`.calibrate` (a logistic regression on labelled pairs, its
probability threshold folded into the bias) or the defaults below, which were fitted
that way on the calibration half of ``bench/dedup.py`` (seed 0, cut for precision
>= 0.95; never on its test half).

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
    bias: float = -2.4097
    w_hash: float = -0.2506
    w_ncc: float = -1.9983
    w_grad: float = 2.9360
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
        """``(m,)`` float64 linear scores of :func:`design_matrix` (larger = more likely a
        duplicate; >= 0 accepts)."""
        x = design_matrix(hash_distance, ncc, grad_ncc)
        return self.bias + x @ np.array([self.w_hash, self.w_ncc, self.w_grad], np.float64)


#: Largest in-plane rotation (degrees) the verifier aligns away before correlating.
MAX_ROTATION_DEG = 10.0
#: Blocks (of the 8 x 8 grid of a thumbnail) kept by the trimmed correlation: the
#: worst-matching 1/8 are ignored (a caption, a logo, a watermark).
TRIM_KEEP = 56
#: Closest a correlation gets to 1 in :func:`design_matrix` (``-log(1 - c)`` <= ~9.2).
_EPS = 1e-4


def design_matrix(hash_distance, ncc, grad_ncc) -> np.ndarray:
    """``(m, 3)`` float64 inputs of the linear decision score: the hash distance (bits,
    capped at 64) and each correlation ``c`` as ``-log(1 - c)`` (a log distance from a
    perfect match: 0.99 and 0.999 are as far apart as 0.9 and 0.99, which is where
    copies and near-identical different images part)."""
    c = np.clip(np.column_stack([np.asarray(ncc, np.float64), np.asarray(grad_ncc, np.float64)]), -1.0, 1.0 - _EPS)
    return np.column_stack([np.minimum(np.asarray(hash_distance, np.float64), 64), -np.log1p(-c)])


def _padded_rows(x: np.ndarray, pad: int) -> np.ndarray:
    """``(m, T, T)`` -> one ``(m * (T + 2 pad), T)`` float32 image: the thumbnails stacked
    with ``pad`` mirrored rows each side, so one OpenCV filter call treats every thumbnail
    exactly as it would alone (OpenCV's default border is the same reflection)."""
    m, t, w = x.shape
    if pad >= t - 1:  # (the slices below need pad <= t - 2)
        return np.pad(x.astype(np.float32, copy=False), ((0, 0), (pad, pad), (0, 0)), mode="reflect").reshape(
            m * (t + 2 * pad), w)
    # What np.pad(mode="reflect") gives (plain copies, so the same values), at a third
    # of its cost.
    out = np.empty((m, t + 2 * pad, w), np.float32)
    out[:, pad:pad + t] = x
    out[:, :pad] = x[:, pad:0:-1]
    out[:, pad + t:] = x[:, t - 2:t - 2 - pad:-1]
    return out.reshape(m * (t + 2 * pad), w)


def _unpad(img: np.ndarray, m: int, pad: int) -> np.ndarray:
    return img.reshape(m, -1, img.shape[1])[:, pad:-pad]


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    pad = int(np.ceil(4 * sigma)) + 1
    return _unpad(cv2.GaussianBlur(_padded_rows(x, pad), (0, 0), sigma), len(x), pad)


def gradient_magnitude(thumbs: np.ndarray) -> np.ndarray:
    """``(m, T, T)`` -> ``(m, T, T)`` float32 Sobel gradient magnitude after a Gaussian
    blur (sigma 1 px, so JPEG blocking and noise do not count as edges); all thumbnails
    in one OpenCV call."""
    import cv2

    if len(thumbs) == 0:
        return np.zeros(thumbs.shape, np.float32)
    pad = 6
    f = cv2.GaussianBlur(_padded_rows(thumbs, pad), (0, 0), 1.0)
    return _unpad(cv2.magnitude(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1)), len(thumbs), pad)


def _grid(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred column / row coordinates of a ``t x t`` thumbnail and its inscribed disk."""
    c = (t - 1) / 2
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32)
    xx -= c
    yy -= c
    disk = (xx * xx + yy * yy <= (c - 1.5) ** 2).astype(np.float32)
    return xx, yy, disk


def _normalise(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Zero mean, unit variance of each ``(T, T)`` slice (over the pixel weights ``w``,
    default all ones); float32."""
    m = len(x)
    flat = x.reshape(m, -1).astype(np.float32, copy=False)
    if w is None:
        c = flat - flat.mean(axis=1, keepdims=True)
        sd = np.sqrt(np.einsum("mi,mi->m", c, c) / flat.shape[1])
    else:
        wv = w.reshape(-1).astype(np.float32)
        sw = float(wv.sum())
        c = flat - (flat @ wv / sw)[:, None]
        sd = np.sqrt(((c * c) @ wv) / sw)
    return (c / np.maximum(sd, 1e-6)[:, None]).reshape(x.shape)


def _shrink(r: np.ndarray, side: int) -> np.ndarray:
    """``(m, T, T)`` -> ``(m, side, side)`` float32 block means (``T`` a multiple of
    ``side``; one area resize of the stacked thumbnails, exact block averages)."""
    import cv2

    m, t = r.shape[0], r.shape[1]
    flat = np.ascontiguousarray(r, np.float32).reshape(m * t, t)
    return cv2.resize(flat, (side, m * side), interpolation=cv2.INTER_AREA).reshape(m, side, side)


def _block_sums(r: np.ndarray) -> np.ndarray:
    """``(m, T, T)`` -> ``(m, 64)`` sums over the 8 x 8 grid of blocks."""
    t = r.shape[1]
    return _shrink(r, 8).reshape(len(r), 64) * float((t // 8) ** 2)


def trimmed_correlation(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, keep: int = TRIM_KEEP
                        ) -> np.ndarray:
    """Correlation of ``(m, T, T)`` pairs over the ``keep`` best-matching of 8 x 8 blocks.

    Both are normalised (zero mean, unit variance over the pixel weights ``w``, default
    all ones); the squared difference of the normalised pixels is summed per block, the
    worst ``64 - keep`` blocks are dropped, and ``1 - sum / (2 * kept weight)`` is the
    correlation of what is left (in [-1, 1]; the plain normalised cross-correlation when
    ``keep = 64``). Ignoring the worst blocks makes a caption or a logo over part of a
    copy cost little, while a different image differs everywhere.
    """
    t = x.shape[1]
    d = _normalise(x, w) - _normalise(y, w)
    d *= d
    if w is not None:
        d *= w
    err = _block_sums(d)
    b = t // 8
    bw = np.full((1, 64), float(b * b), np.float32) if w is None else _block_sums(w[None].astype(np.float32))
    bw = np.broadcast_to(bw, err.shape)
    if keep < 64:
        best = np.argpartition(err, keep - 1, axis=1)[:, :keep]
        err, bw = np.take_along_axis(err, best, 1), np.take_along_axis(bw, best, 1)
    return (1.0 - err.sum(axis=1) / (2.0 * np.maximum(bw.sum(axis=1), 1e-6))).astype(np.float32)


def rotate_thumbs(x: np.ndarray, radians: np.ndarray) -> np.ndarray:
    """Each ``(T, T)`` slice of ``x`` turned by its own angle about its centre (bilinear,
    edge pixels repeated); all in a few OpenCV ``remap`` calls."""
    import cv2

    m, t = x.shape[0], x.shape[1]
    xx, yy, _ = _grid(t)
    c = (t - 1) / 2
    cos = np.cos(radians).astype(np.float32)[:, None, None]
    sin = np.sin(radians).astype(np.float32)[:, None, None]
    sx = np.clip(cos * xx - sin * yy + c, 0, t - 1)
    sy = np.clip(sin * xx + cos * yy + c, 0, t - 1)
    out = np.empty((m, t, t), np.float32)
    chunk = 32000 // t  # remap wants fewer than 2^15 rows
    for s in range(0, m, chunk):
        k = min(chunk, m - s)
        rows = sy[s:s + k] + (t * np.arange(k, dtype=np.float32))[:, None, None]
        out[s:s + k] = cv2.remap(np.ascontiguousarray(x[s:s + k], np.float32).reshape(k * t, t),
                                 sx[s:s + k].reshape(k * t, t), rows.reshape(k * t, t),
                                 cv2.INTER_LINEAR).reshape(k, t, t)
    return out


def estimate_rotation(x: np.ndarray, y: np.ndarray, iterations: int = 2, sigma: float = 0.75) -> np.ndarray:
    """``(m,)`` radians that turn each ``x[i]`` onto ``y[i]`` (small in-plane rotations).

    Gauss-Newton on the half-size (2 x 2 mean), blurred, normalised thumbnails inside
    their inscribed disk: the derivative of a rotated image with respect to the angle
    is the image gradient along the tangent, so each step is one least-squares
    division. Clipped to +-:data:`MAX_ROTATION_DEG`.
    """
    m, t = x.shape[0], x.shape[1]
    h = t // 2

    xx, yy, disk = _grid(h)
    xs = _shrink(x, h)
    yb = _normalise(_blur(_shrink(y, h), sigma), disk)
    theta = np.zeros(m, np.float32)
    limit = np.deg2rad(MAX_ROTATION_DEG)
    wv = disk.reshape(-1)
    for it in range(iterations):
        xb = _normalise(_blur(xs if it == 0 else rotate_thumbs(xs, theta), sigma), disk)
        du = np.zeros_like(xb)
        dv = np.zeros_like(xb)
        du[:, :, 1:-1] = xb[:, :, 2:] - xb[:, :, :-2]
        dv[:, 1:-1] = xb[:, 2:] - xb[:, :-2]
        jac = (du * -yy + dv * xx).reshape(m, -1)
        jac *= 0.5
        num = (jac * (yb - xb).reshape(m, -1)) @ wv
        den = (jac * jac) @ wv
        theta = np.clip(theta + num / np.maximum(den, 1e-6), -limit, limit).astype(np.float32)
    return theta


def thumbnail_features(variants: np.ndarray, thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, pool=None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three pair features of rows ``a[i]``, ``b[i]`` of a scan.

    The thumbnail of one image is first turned / cropped by the variant whose hash is
    closest to the other's hash, then compared as it is and after undoing a small
    in-plane rotation (:func:`estimate_rotation`, compared inside the inscribed disk so
    the corners a rotation fills do not count); the alignment with the better edge
    correlation is kept. Both correlations are :func:`trimmed_correlation`.

    Args:
        variants: ``(n, V, 8)`` uint8 variant hashes (:func:`lookalike.dedup.scan.variant_hashes`).
        thumbs: ``(n, 3, T, T)`` uint8 thumbnails (image, centre crops).
        a, b: ``(m,)`` int row indices of the pairs.
        pool: an optional process pool (``concurrent.futures``) that large batches of
            pairs are spread over.

    Returns:
        ``hash_distance (m,) int64``, ``ncc (m,) float32``, ``grad_ncc (m,) float32``.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    hash_d, src, dst, k = pair_alignment(variants, a, b)
    ncc = np.empty(len(a), np.float32)
    grad = np.empty(len(a), np.float32)
    # Chunks small enough to stay in cache (and to spread over a pool).
    slices = [slice(s, s + _CHUNK) for s in range(0, len(a), _CHUNK)]
    jobs = (pair_job(thumbs, src[sl], dst[sl], k[sl]) for sl in slices)
    if pool is not None and len(slices) > 1:
        done = pool.map(_aligned_correlations_job, jobs)
    else:
        done = map(_aligned_correlations_job, jobs)
    for sl, (n, g) in zip(slices, done):
        ncc[sl], grad[sl] = n, g
    return hash_d, ncc, grad


def pair_alignment(variants: np.ndarray, a: np.ndarray, b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """How :func:`thumbnail_features` aligns pairs ``(a[i], b[i])`` of scan rows: the
    hash distance ``(m,) int64`` and, for the thumbnails, the row turned / cropped
    (``src``), the row it is compared with (``dst``) and the variant ``k`` of ``src``
    whose hash is closest to ``dst``'s (``a`` first on ties, so each pair must come in
    the order of its rows)."""
    from .mih import as_uint64, popcount

    v = variants.shape[1]
    ca = as_uint64(variants[a].reshape(-1, 8)).reshape(len(a), v)
    cb = as_uint64(variants[b].reshape(-1, 8)).reshape(len(b), v)
    d_ab = popcount(ca ^ cb[:, :1])            # (m, V): variants of a vs b
    d_ba = popcount(cb ^ ca[:, :1])
    a_first = d_ab.min(axis=1) <= d_ba.min(axis=1)
    src, dst = np.where(a_first, a, b), np.where(a_first, b, a)
    k = np.where(a_first, d_ab.argmin(axis=1), d_ba.argmin(axis=1))
    hash_d = np.minimum(d_ab.min(axis=1), d_ba.min(axis=1))
    return hash_d, src, dst, k


def pair_job(thumbs: np.ndarray, src: np.ndarray, dst: np.ndarray, k: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """The thumbnails one :func:`_aligned_correlations_job` compares (``src`` turned /
    cropped by its variant ``k``; ``dst`` as it is)."""
    from .scan import variant_thumbs

    return variant_thumbs(thumbs[src], k), thumbs[dst, 0]


def _aligned_correlations_job(job: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return _aligned_correlations(*job)


def _shared_pair_job(token: int, src: np.ndarray, dst: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_aligned_correlations_job` of :func:`pair_job` on the thumbnails in the
    shared array ``token`` (:func:`lookalike.dedup.scan.shared_thumbs`)."""
    from .scan import _SHARED

    return _aligned_correlations(*pair_job(_SHARED[token], src, dst, k))


#: Pairs per block of work in :func:`thumbnail_features`.
_CHUNK = 128


def _aligned_correlations(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed correlations of thumbnails and of their edges, at the better of no turn and
    the estimated small rotation (see :func:`thumbnail_features`)."""
    x = x.astype(np.float32)
    y = y.astype(np.float32)
    gy = gradient_magnitude(y)
    ncc = trimmed_correlation(x, y)
    grad = trimmed_correlation(gradient_magnitude(x), gy)
    # Pairs whose edges already match need no turn.
    todo = np.nonzero(grad < 0.995)[0]
    if len(todo):
        theta = estimate_rotation(x[todo], y[todo])
        big = np.abs(theta) >= np.deg2rad(0.5)
        turn, theta = todo[big], theta[big]
        if len(turn):
            disk = _grid(x.shape[1])[2]
            xr = rotate_thumbs(x[turn], theta)
            n_r = trimmed_correlation(xr, y[turn], disk)
            g_r = trimmed_correlation(gradient_magnitude(xr), gy[turn], disk)
            better = g_r > grad[turn]
            ncc[turn[better]] = n_r[better]
            grad[turn[better]] = g_r[better]
    return ncc, grad


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
