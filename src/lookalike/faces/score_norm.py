"""Cohort score normalisation for face verification (Z-, T-, S- and adaptive S-norm).

A raw pair score ``s(a, b)`` (cosine similarity, or minus the Euclidean distance) is
re-expressed in units of how each face scores against a *cohort*: descriptors of
other people, none of them the people being compared. For a face ``x`` the cohort
statistics are the mean and standard deviation of its scores against the cohort,
``mu(x), sigma(x)``; with ``top_k`` only its ``top_k`` highest cohort scores count
(the "adaptive" variant: the impostors that look most like ``x``). Then

* Z-norm:  ``(s - mu(a)) / sigma(a)``
* T-norm:  ``(s - mu(b)) / sigma(b)``
* S-norm:  ``((s - mu(a)) / sigma(a) + (s - mu(b)) / sigma(b)) / 2``  (symmetric)

and "AS-norm" is S-norm with ``top_k`` (Sturim & Reynolds 2005; Matejka et al. 2017).
Larger normalised score = more alike (the opposite of a distance): threshold with
``calibrate_threshold(-scores, ...)`` or compare ``score >= threshold``.

Everything is vectorised numpy on ``(n, d)`` descriptor arrays; a cohort of a few
thousand faces costs one ``(n, m)`` matrix product per block of ``block`` queries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError

SCORES = ("cosine", "euclidean")
METHODS = ("z", "t", "s")
# The scoring of the setting chosen on LFW View 1 (bench/faces_lfw.py, SELECTION_RULE_LM68:
# mirrored descriptors of chips aligned on 68 landmarks): AS-norm, cosine raw scores, top 200
# cohort scores per face (View 2, grayscale: 99.02% vs 98.82% raw; TAR at FAR 1e-3 0.955 vs
# 0.917). On the 5-point chips cosine and Euclidean tie on View 1 (98.91%).
DEFAULT_METHOD, DEFAULT_TOP_K, DEFAULT_SCORE = "s", 200, "cosine"


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{name}: expected a non-empty (n, d) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: holds nan/inf")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def raw_scores(a, b, score: str = "cosine") -> np.ndarray:
    """Row-by-row raw pair scores (larger = more alike).

    Args:
        a, b: ``(n, d)`` descriptors (or ``(d,)``), compared row ``i`` with row ``i``.
        score: ``"cosine"`` (cosine similarity) or ``"euclidean"`` (minus the distance).

    Returns:
        ``float64 (n,)``.
    """
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    if a.shape != b.shape:
        raise InputError(f"a {a.shape} and b {b.shape} must have the same shape")
    if score == "cosine":
        return np.sum(_unit(a) * _unit(b), axis=1)
    if score == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    raise InputError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")


def cross_scores(x, cohort, score: str = "cosine") -> np.ndarray:
    """``float64 (n, m)`` scores of every row of ``x`` against every cohort row."""
    x, cohort = _as_2d(x, "x"), _as_2d(cohort, "cohort")
    if x.shape[1] != cohort.shape[1]:
        raise InputError(f"descriptor sizes differ: {x.shape[1]} vs cohort {cohort.shape[1]}")
    if score == "cosine":
        return _unit(x) @ _unit(cohort).T
    if score == "euclidean":
        sq = (x ** 2).sum(1)[:, None] + (cohort ** 2).sum(1)[None, :] - 2.0 * x @ cohort.T
        return -np.sqrt(np.maximum(sq, 0.0))
    raise InputError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")


def cohort_stats(x, cohort, top_k: Optional[int] = None, score: str = "cosine",
                 block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each face's scores against the cohort.

    Args:
        x: ``(n, d)`` descriptors.
        cohort: ``(m, d)`` descriptors of other people (none of the people in ``x``).
        top_k: use only each row's ``top_k`` highest cohort scores (``None`` or
            ``>= m``: all ``m``).
        score: ``"cosine"`` or ``"euclidean"`` (see :func:`raw_scores`).
        block: rows of ``x`` scored at a time (memory ``block * m`` floats).

    Returns:
        ``(mean, std)``, each ``float64 (n,)``; ``std`` is the population std (ddof 0),
        floored at 1e-12.
    """
    x, cohort = _as_2d(x, "x"), _as_2d(cohort, "cohort")
    m = cohort.shape[0]
    k = m if top_k is None else int(top_k)
    if k < 2:
        raise InputError(f"top_k must be >= 2 (got {top_k})")
    k = min(k, m)
    if m < 2:
        raise InputError("the cohort needs at least 2 descriptors")
    mean = np.empty(x.shape[0])
    std = np.empty(x.shape[0])
    for start in range(0, x.shape[0], block):
        s = cross_scores(x[start:start + block], cohort, score)
        if k < m:
            s = np.partition(s, m - k, axis=1)[:, m - k:]  # the k largest of each row
        mean[start:start + block] = s.mean(axis=1)
        std[start:start + block] = s.std(axis=1)
    return mean, np.maximum(std, 1e-12)


def normalize_scores(raw, stats_a, stats_b, method: str = "s") -> np.ndarray:
    """Normalise raw pair scores with precomputed cohort statistics.

    Args:
        raw: ``(n,)`` raw scores of pairs ``(a_i, b_i)`` (larger = more alike).
        stats_a, stats_b: ``(mean, std)`` of each pair's ``a`` and ``b`` faces
            (:func:`cohort_stats`), each ``(n,)``.
        method: ``"z"`` (a's statistics), ``"t"`` (b's) or ``"s"`` (mean of both).

    Returns:
        ``float64 (n,)`` normalised scores, larger = more alike.
    """
    raw = np.asarray(raw, dtype=np.float64)
    za = (raw - stats_a[0]) / stats_a[1]
    zb = (raw - stats_b[0]) / stats_b[1]
    if method == "z":
        return za
    if method == "t":
        return zb
    if method == "s":
        return 0.5 * (za + zb)
    raise InputError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def normalized_scores(a, b, cohort, method: str = "s", top_k: Optional[int] = None,
                      score: str = "cosine") -> np.ndarray:
    """Cohort-normalised scores of the pairs ``(a[i], b[i])``.

    With ``method="s"`` and ``top_k`` set this is adaptive symmetric normalisation
    (AS-norm); ``top_k=None`` uses the whole cohort (plain Z/T/S-norm).

    Args:
        a, b: ``(n, d)`` descriptors of the two sides of each pair.
        cohort: ``(m, d)`` descriptors of people not in any of the pairs.

    Returns:
        ``float64 (n,)``, larger = more alike.
    """
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    raw = raw_scores(a, b, score)
    return normalize_scores(raw, cohort_stats(a, cohort, top_k, score), cohort_stats(b, cohort, top_k, score),
                            method)


@dataclass
class ScoreNormalizer:
    """A cohort and the normalisation settings, ready to score pairs.

    ``ScoreNormalizer(cohort, top_k=300).score(a, b)`` = :func:`normalized_scores`.
    Store ``cohort`` next to a face collection to score its pairs the same way.
    """

    cohort: np.ndarray
    method: str = DEFAULT_METHOD
    top_k: Optional[int] = DEFAULT_TOP_K
    score_kind: str = DEFAULT_SCORE

    def __post_init__(self):
        self.cohort = _as_2d(self.cohort, "cohort")
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.score_kind not in SCORES:
            raise InputError(f"unknown score {self.score_kind!r}; valid: {', '.join(SCORES)}")

    def score(self, a, b) -> np.ndarray:
        return normalized_scores(a, b, self.cohort, self.method, self.top_k, self.score_kind)

    def verify(self, a, b, threshold: float) -> dict:
        """One pair: ``{"score", "threshold", "same", "distance"}`` with ``same = score >= threshold``
        (``distance``: the plain Euclidean distance, for reference)."""
        a, b = _as_2d(np.ravel(a), "a"), _as_2d(np.ravel(b), "b")
        score = float(self.score(a, b)[0])
        return {"score": score, "threshold": float(threshold), "same": bool(score >= threshold),
                "distance": float(np.linalg.norm(a - b))}

    def settings(self) -> dict:
        return {"method": self.method, "top_k": self.top_k, "score": self.score_kind,
                "cohort_size": int(self.cohort.shape[0])}
