"""Local features of an image pair and putative matches by Lowe's ratio test.

Detection/description is :class:`lookalike.descriptors.local.LocalFeatureExtractor`
(SIFT, RootSIFT or ORB, OpenCV); this module loads the images, runs it on both, and
pairs descriptors with a brute-force or FLANN matcher keeping only matches whose best
distance is clearly smaller than the second best.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..descriptors.local import LOCAL_METHODS, LocalFeatureExtractor, LocalFeatures
from ..errors import ConfigError
from ..images import ImageSource, load_image

MATCHERS = ("bf", "flann")


def load_gray(source: ImageSource, max_side: int | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Decode an image to gray for feature detection.

    Args:
        source: path, bytes, array or PIL image.
        max_side: decode at reduced size when possible (JPEG draft mode).

    Returns:
        ``(pixels (H, W) uint8, (sx, sy))`` where ``(sx, sy)`` maps decoded pixel
        coordinates to the original image's (EXIF-rotated) pixel frame.

    Raises:
        ImageLoadError: the source cannot be decoded (names it).
    """
    loaded = load_image(source, mode="L", max_side=max_side)
    height, width = loaded.pixels.shape
    return loaded.pixels, (loaded.width / width, loaded.height / height)


def detect_and_describe(source: ImageSource, method: str = "rootsift", max_keypoints: int = 1000,
                        max_side: int | None = 640) -> LocalFeatures:
    """Keypoints + descriptors of one image, coordinates in its original pixel frame.

    Args:
        source: path, bytes, array or PIL image.
        method: ``sift``, ``rootsift`` or ``orb``.
        max_keypoints: strongest keypoints kept.
        max_side: the image is shrunk to this longer side before detection (speed).

    Raises:
        ImageLoadError: unreadable image. ConfigError: unknown method.
    """
    extractor = LocalFeatureExtractor(method, max_keypoints, max_side)
    return extract_from_source(extractor, source)


def extract_from_source(extractor: LocalFeatureExtractor, source: ImageSource) -> LocalFeatures:
    """Run ``extractor`` on a loaded source, reporting coordinates in the original frame."""
    pixels, (sx, sy) = load_gray(source, extractor.max_side)
    features = extractor.extract(pixels)
    if sx == 1.0 and sy == 1.0:
        return features
    scale = np.array([sx, sy], dtype=np.float32)
    return LocalFeatures(
        points=(features.points + 0.5) * scale - 0.5,
        descriptors=features.descriptors,
        sizes=features.sizes * np.float32(sx),
        angles=features.angles,
        image_size=(round(features.image_size[0] * sx), round(features.image_size[1] * sy)),
        method=features.method,
    )


def ratio_test_matches(descriptors1: np.ndarray, descriptors2: np.ndarray, ratio: float = 0.8,
                       binary: bool = False, matcher: str = "bf") -> np.ndarray:
    """Putative correspondences by Lowe's ratio test.

    For every descriptor of image 1, its two nearest descriptors in image 2 are found (L2
    for float descriptors, Hamming for binary ones); the match is kept when
    ``best < ratio * second_best``.

    Args:
        descriptors1: ``(n1, dim)`` float32 (or ``(n1, 32) uint8`` when ``binary``).
        descriptors2: ``(n2, dim)`` of the same kind.
        ratio: Lowe's threshold (0.8 in Lowe 2004; smaller = stricter).
        binary: descriptors are packed bits (ORB): Hamming distance.
        matcher: ``bf`` (exact brute force) or ``flann`` (approximate: KD-trees for float,
            LSH for binary; faster on thousands of keypoints).

    Returns:
        ``(m, 2) int64`` index pairs ``(i in image 1, j in image 2)``, sorted by distance
        ascending (best first).
    """
    import cv2

    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"ratio must be in (0, 1], got {ratio}")
    if matcher not in MATCHERS:
        raise ConfigError(f"unknown matcher {matcher!r}; valid: {', '.join(MATCHERS)}")
    if len(descriptors1) == 0 or len(descriptors2) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if binary:
        d1, d2 = np.ascontiguousarray(descriptors1, np.uint8), np.ascontiguousarray(descriptors2, np.uint8)
    else:
        d1, d2 = np.ascontiguousarray(descriptors1, np.float32), np.ascontiguousarray(descriptors2, np.float32)
    if matcher == "bf":
        engine = cv2.BFMatcher(cv2.NORM_HAMMING if binary else cv2.NORM_L2)
    elif binary:
        # FLANN_INDEX_LSH = 6
        engine = cv2.FlannBasedMatcher(dict(algorithm=6, table_number=6, key_size=12, multi_probe_level=1),
                                       dict(checks=64))
    else:
        # FLANN_INDEX_KDTREE = 1
        engine = cv2.FlannBasedMatcher(dict(algorithm=1, trees=4), dict(checks=64))
    pairs, distances = [], []
    for candidates in engine.knnMatch(d1, d2, k=2):
        if len(candidates) == 2 and candidates[0].distance < ratio * candidates[1].distance:
            pairs.append((candidates[0].queryIdx, candidates[0].trainIdx))
            distances.append(candidates[0].distance)
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(np.asarray(distances), kind="stable")
    return np.asarray(pairs, dtype=np.int64)[order]


@dataclass(frozen=True)
class PairMatches:
    """Features of two images and their putative matches.

    Attributes:
        features1, features2: :class:`LocalFeatures` of each image.
        matches: ``(m, 2) int64`` indices into ``features1`` / ``features2``.
    """

    features1: LocalFeatures
    features2: LocalFeatures
    matches: np.ndarray

    @property
    def points1(self) -> np.ndarray:
        """``(m, 2) float32`` matched ``(x, y)`` in image 1."""
        return self.features1.points[self.matches[:, 0]]

    @property
    def points2(self) -> np.ndarray:
        """``(m, 2) float32`` matched ``(x, y)`` in image 2."""
        return self.features2.points[self.matches[:, 1]]

    def __len__(self) -> int:
        return len(self.matches)


def match_features(features1: LocalFeatures, features2: LocalFeatures, ratio: float = 0.8,
                   matcher: str = "bf") -> PairMatches:
    """Ratio-test matches between two already extracted feature sets."""
    if features1.method != features2.method:
        raise ConfigError(f"cannot match {features1.method} against {features2.method} features")
    matches = ratio_test_matches(features1.descriptors, features2.descriptors, ratio=ratio,
                                 binary=features1.is_binary, matcher=matcher)
    return PairMatches(features1, features2, matches)


def match_pair(image1: ImageSource, image2: ImageSource, method: str = "rootsift",
               max_keypoints: int = 1000, max_side: int | None = 640, ratio: float = 0.8,
               matcher: str = "bf") -> PairMatches:
    """Detect, describe and ratio-test match two images.

    Args:
        image1, image2: paths, bytes, arrays or PIL images.
        method: ``sift``, ``rootsift`` or ``orb``.
        max_keypoints: keypoints per image.
        max_side: images are shrunk to this longer side before detection; coordinates
            are reported in the original images' pixel frames.
        ratio: Lowe's ratio threshold.
        matcher: ``bf`` or ``flann``.
    """
    if method not in LOCAL_METHODS:
        raise ConfigError(f"unknown local feature method {method!r}; valid: {', '.join(LOCAL_METHODS)}")
    extractor = LocalFeatureExtractor(method, max_keypoints, max_side)
    return match_features(extract_from_source(extractor, image1), extract_from_source(extractor, image2),
                          ratio=ratio, matcher=matcher)


def source_label(source: ImageSource) -> str:
    """Printable name of an image source (for reports and figures)."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source))
    return f"<{type(source).__name__}>"
