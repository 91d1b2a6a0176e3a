"""Local-feature matching, geometric verification (RANSAC) and template matching.

* :mod:`.features`: keypoints of an image pair and Lowe ratio-test matches;
* :mod:`.ransac`: homography / fundamental-matrix verification, geometric re-ranking,
  a picture of the inlier matches;
* :mod:`.template`: template matching by normalised cross-correlation, multi-scale.

OpenCV is imported only when a function runs.
"""
from .features import PairMatches, detect_and_describe, match_features, match_pair, ratio_test_matches
from .ransac import RerankedHit, Verification, draw_matches, rerank, verify_matches, verify_pair
from .template import TemplateMatch, match_template, scale_range

__all__ = [
    "PairMatches",
    "RerankedHit",
    "TemplateMatch",
    "Verification",
    "detect_and_describe",
    "draw_matches",
    "match_features",
    "match_pair",
    "match_template",
    "ratio_test_matches",
    "rerank",
    "scale_range",
    "verify_matches",
    "verify_pair",
]
