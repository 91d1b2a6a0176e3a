"""Geometric verification of putative matches (homography or fundamental matrix with
RANSAC / MAGSAC++), geometric re-ranking of search results, and a picture of the inliers.

Two views of the same planar scene (or of any scene under pure rotation) are related by a
homography; two views of a general 3-D scene by a fundamental matrix (epipolar geometry).
Counting the matches consistent with one such model separates true image pairs from
look-alikes far better than descriptor distances alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..descriptors.local import LocalFeatureExtractor
from ..errors import ConfigError, ImageLoadError
from ..images import ImageSource, load_pixels
from .features import PairMatches, extract_from_source, match_features, match_pair, source_label

MODELS = ("homography", "fundamental")
ROBUST_METHODS = ("ransac", "magsac")


@dataclass(frozen=True)
class Verification:
    """Outcome of fitting one geometric model to putative matches.

    Attributes:
        model: ``homography`` or ``fundamental``.
        matrix: ``(3, 3) float64`` estimated model mapping image 1 to image 2 (homography:
            ``x2 ~ H x1``; fundamental: ``x2^T F x1 = 0``), or ``None`` when too few matches
            or no model was found.
        inliers: ``(m,) bool`` per putative match.
        n_matches: number of putative matches ``m``.
    """

    model: str
    matrix: np.ndarray | None
    inliers: np.ndarray
    n_matches: int

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def inlier_ratio(self) -> float:
        """Inliers / putative matches (0.0 when there are no matches)."""
        return self.n_inliers / self.n_matches if self.n_matches else 0.0


def _robust_flag(method: str) -> int:
    import cv2

    if method not in ROBUST_METHODS:
        raise ConfigError(f"unknown robust method {method!r}; valid: {', '.join(ROBUST_METHODS)}")
    return cv2.RANSAC if method == "ransac" else cv2.USAC_MAGSAC


def verify_matches(points1: np.ndarray, points2: np.ndarray, model: str = "homography",
                   method: str = "ransac", threshold: float = 5.0, confidence: float = 0.999,
                   max_iters: int = 2000) -> Verification:
    """Fit a homography or fundamental matrix robustly to matched points.

    Args:
        points1, points2: ``(m, 2)`` float matched ``(x, y)`` in image 1 and image 2.
        model: ``homography`` (needs 4 matches) or ``fundamental`` (needs 8).
        method: ``ransac`` (OpenCV RANSAC) or ``magsac`` (OpenCV USAC MAGSAC++, usually
            more accurate and less sensitive to ``threshold``).
        threshold: inlier distance in pixels (homography: reprojection error in image 2;
            fundamental: distance to the epipolar line).
        confidence: RANSAC stopping confidence.
        max_iters: iteration cap.

    Returns:
        A :class:`Verification`; ``matrix`` is ``None`` and no match is an inlier when there
        are too few matches or the estimator finds no model.
    """
    import cv2

    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    flag = _robust_flag(method)
    p1 = np.ascontiguousarray(points1, dtype=np.float64).reshape(-1, 2)
    p2 = np.ascontiguousarray(points2, dtype=np.float64).reshape(-1, 2)
    m = len(p1)
    none = Verification(model, None, np.zeros(m, dtype=bool), m)
    if m < (4 if model == "homography" else 8):
        return none
    if model == "homography":
        matrix, mask = cv2.findHomography(p1, p2, flag, threshold, maxIters=int(max_iters),
                                          confidence=float(confidence))
    else:
        matrix, mask = cv2.findFundamentalMat(p1, p2, flag, threshold, float(confidence), int(max_iters))
        if matrix is not None and matrix.shape != (3, 3):
            matrix = matrix[:3]  # the 7-point solver can return up to three stacked solutions
    if matrix is None or mask is None:
        return none
    return Verification(model, np.asarray(matrix, dtype=np.float64), mask.ravel().astype(bool), m)


def verify_pair(image1: ImageSource, image2: ImageSource, model: str = "homography",
                method: str = "ransac", threshold: float = 5.0, features: str = "rootsift",
                max_keypoints: int = 1000, max_side: int | None = 640,
                ratio: float = 0.8) -> tuple[PairMatches, Verification]:
    """Match two images and verify the matches geometrically.

    Args:
        image1, image2: paths, bytes, arrays or PIL images.
        model, method, threshold: see :func:`verify_matches` (pixels of the original images).
        features, max_keypoints, max_side, ratio: see
            :func:`lookalike.matching.features.match_pair`.

    Returns:
        ``(putative matches, verification)``.
    """
    pair = match_pair(image1, image2, method=features, max_keypoints=max_keypoints,
                      max_side=max_side, ratio=ratio)
    return pair, verify_matches(pair.points1, pair.points2, model=model, method=method,
                                threshold=threshold)


@dataclass(frozen=True)
class RerankedHit:
    """One candidate after geometric re-ranking.

    Attributes:
        source: the candidate as given.
        n_inliers: matches consistent with the fitted model (larger = more similar).
        inlier_ratio: inliers / putative matches.
        n_matches: putative (ratio-test) matches.
        original_rank: position in the input candidate list (0-based).
        error: why the candidate could not be verified (unreadable file), else ``None``;
            such candidates score 0 inliers and keep their place after verified ones.
    """

    source: ImageSource = field(repr=False)
    n_inliers: int
    inlier_ratio: float
    n_matches: int
    original_rank: int
    error: str | None = None

    @property
    def label(self) -> str:
        return source_label(self.source)


def rerank(query: ImageSource, candidates: Sequence[ImageSource], model: str = "homography",
           method: str = "ransac", threshold: float = 5.0, features: str = "rootsift",
           max_keypoints: int = 1000, max_side: int | None = 640, ratio: float = 0.8,
           min_inliers: int = 0) -> list[RerankedHit]:
    """Re-order candidates by the number of geometrically verified matches with the query.

    Meant to follow a global search: pass its top-k paths in their ranked order. The query
    is described once. Ties (same inlier count) keep the original order, so candidates with
    no geometric support stay ranked as the global search had them.

    Args:
        query: the query image.
        candidates: candidate images, best first according to the global search.
        model: ``homography`` (planar scenes, near-duplicates, objects) or ``fundamental``
            (3-D scenes seen from different places).
        method, threshold: robust estimator and inlier threshold (see :func:`verify_matches`).
        features, max_keypoints, max_side, ratio: local features and ratio test.
        min_inliers: counts below this are treated as 0 (no geometric support); 0 keeps
            raw counts.

    Returns:
        One :class:`RerankedHit` per candidate, sorted by ``n_inliers`` descending.
        Unreadable candidates are reported (``error``), not dropped.

    Raises:
        ImageLoadError: the query cannot be read.
    """
    extractor = LocalFeatureExtractor(features, max_keypoints, max_side)
    query_features = extract_from_source(extractor, query)
    hits = []
    for rank, candidate in enumerate(candidates):
        try:
            candidate_features = extract_from_source(extractor, candidate)
        except ImageLoadError as exc:
            hits.append(RerankedHit(candidate, 0, 0.0, 0, rank, error=str(exc)))
            continue
        pair = match_features(query_features, candidate_features, ratio=ratio)
        check = verify_matches(pair.points1, pair.points2, model=model, method=method,
                               threshold=threshold)
        inliers = check.n_inliers if check.n_inliers >= min_inliers else 0
        hits.append(RerankedHit(candidate, inliers, check.inlier_ratio, len(pair), rank))
    return sorted(hits, key=lambda h: (-h.n_inliers, h.original_rank))


def draw_matches(image1: ImageSource, image2: ImageSource, path: "str | os.PathLike",
                 pair: PairMatches | None = None, verification: Verification | None = None,
                 max_lines: int = 200, max_side: int = 640, **verify_kwargs) -> Path:
    """Write a PNG showing the two images side by side with their inlier matches.

    Inliers are drawn as green lines; with a homography, the outline of image 1 mapped
    into image 2 is drawn in blue.

    Args:
        image1, image2: the images (paths, bytes, arrays, PIL images).
        path: PNG to write (parent folders are created).
        pair, verification: results of :func:`verify_pair`; computed when omitted
            (``verify_kwargs`` go to :func:`verify_pair`).
        max_lines: draw at most this many inliers (the best by descriptor distance).
        max_side: each image is shown shrunk to this longer side.

    Returns:
        The path written.
    """
    import cv2

    if pair is None or verification is None:
        pair, verification = verify_pair(image1, image2, **verify_kwargs)
    shown, scales = [], []
    for source, features in ((image1, pair.features1), (image2, pair.features2)):
        pixels = load_pixels(source, mode="RGB", max_side=max_side)
        shown.append(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        scales.append(pixels.shape[1] / features.image_size[0])
    if verification.matrix is not None and verification.model == "homography":
        # Outline of image 1 mapped into image 2 (drawn on image 2 alone, so it is clipped there).
        w, h = pair.features1.image_size
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64).reshape(-1, 1, 2)
        mapped = cv2.perspectiveTransform(corners, verification.matrix).reshape(-1, 2) * scales[1]
        cv2.polylines(shown[1], [np.round(mapped).astype(np.int32)], True, (255, 80, 0), 2, cv2.LINE_AA)
    band = 30  # white caption strip above the pictures
    height = max(s.shape[0] for s in shown) + band
    canvas = np.full((height, shown[0].shape[1] + shown[1].shape[1], 3), 255, dtype=np.uint8)
    canvas[band: band + shown[0].shape[0], : shown[0].shape[1]] = shown[0]
    offset = shown[0].shape[1]
    canvas[band: band + shown[1].shape[0], offset:] = shown[1]

    inlier_index = np.flatnonzero(verification.inliers)[:max_lines]  # matches are best-first
    for i in inlier_index:
        x1, y1 = pair.points1[i] * scales[0]
        x2, y2 = pair.points2[i] * scales[1]
        p1 = (int(round(x1)), int(round(y1)) + band)
        p2 = (int(round(x2)) + offset, int(round(y2)) + band)
        cv2.line(canvas, p1, p2, (0, 200, 0), 1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 3, (0, 200, 0), 1, cv2.LINE_AA)
        cv2.circle(canvas, p2, 3, (0, 200, 0), 1, cv2.LINE_AA)
    caption = (f"{source_label(image1)} vs {source_label(image2)}: {verification.n_inliers} inliers / "
               f"{verification.n_matches} matches ({verification.model})")
    cv2.putText(canvas, caption, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        raise OSError(f"could not write {out}")
    return out
