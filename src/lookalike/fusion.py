"""Late fusion: search several stored descriptors and merge their rankings.

Two rules:

* ``weighted``: each descriptor's distances are divided by that descriptor's typical
  distance (the median distance between random stored pairs), then summed with
  weights. Candidates found by any descriptor are re-scored exactly with every
  descriptor's stored vector, so a miss in one list does not count as "infinitely far".
* ``rrf``: reciprocal-rank fusion, ``sum_d w_d / (k0 + rank_d)`` (Cormack et al. 2009,
  k0 = 60); needs no calibration. Reported distance is ``-score`` (smaller = closer).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .distances import exact_distances
from .errors import ConfigError

FUSION_RULES = ("weighted", "rrf")
RRF_K0 = 60


def typical_distance(vectors: np.ndarray, metric: str, sample: int = 500, seed: int = 0) -> float:
    """Median distance between random pairs of ``vectors`` (the fusion scale)."""
    if len(vectors) < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    d = exact_distances(vectors[idx], vectors[idx], metric)
    upper = d[np.triu_indices(len(idx), 1)]
    scale = float(np.median(upper)) if len(upper) else 1.0
    if metric == "ip":
        scale = float(np.median(np.abs(upper))) or 1.0
    return scale if scale > 0 else 1.0


def fuse_rankings(rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int,
                  k0: int = RRF_K0) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of ranked id lists; returns ``(id, -score)`` nearest first."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, 1):
            if item >= 0:
                scores[item] = scores.get(item, 0.0) + weight / (k0 + rank)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(item, -score) for item, score in ordered]


def check_rule(rule: str) -> str:
    if rule not in FUSION_RULES:
        raise ConfigError(f"unknown fusion rule {rule!r}; valid: {', '.join(FUSION_RULES)}")
    return rule
