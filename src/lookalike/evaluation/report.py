"""One-call evaluation: distances + protocol -> every standard number as a JSON-able dict.

The evaluator's job is to embed ``protocol.paths`` once and compute distances in the
layout each function documents (smaller = closer); these helpers do the scoring with
:mod:`lookalike.evaluation.metrics` and name every number.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from . import metrics
from .protocols import AnnProtocol, IdentificationProtocol, RetrievalProtocol, VerificationProtocol

__all__ = ["evaluate_retrieval", "evaluate_retrieval_arrays", "evaluate_verification",
           "evaluate_identification", "evaluate_ann"]


def _check_shape(distances: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    d = np.asarray(distances)
    if d.shape != shape:
        raise InputError(f"{what}: distances must have shape {shape}, got {d.shape}")
    return d


def evaluate_retrieval_arrays(distances: np.ndarray, query_labels: np.ndarray,
                              gallery_labels: np.ndarray, exclude_self: bool = False,
                              self_index: np.ndarray | None = None,
                              ks: Sequence[int] = (1, 5, 10), cmc_ranks: int = 20
                              ) -> dict[str, Any]:
    """Retrieval metrics of a full distance matrix (see :func:`evaluate_retrieval`)."""
    relevant, n_relevant = metrics.ranked_relevance(distances, query_labels, gallery_labels,
                                                    exclude_self=exclude_self,
                                                    self_index=self_index)
    scored = n_relevant > 0
    width = relevant.shape[1]
    ks = [k for k in ks if k <= width]
    return {
        "n_queries": int(len(n_relevant)),
        "n_queries_scored": int(scored.sum()),  # queries with >= 1 relevant item count
        "n_gallery": int(np.asarray(gallery_labels).shape[0]),
        "recall_at_k": {str(k): metrics.recall_at_k(relevant, k, n_relevant) for k in ks},
        "precision_at_k": {str(k): metrics.precision_at_k(relevant, k, n_relevant) for k in ks},
        "map": metrics.mean_average_precision(relevant, n_relevant),
        "map_at_r": metrics.map_at_r(relevant, n_relevant),
        "cmc": metrics.cmc_curve(relevant, min(cmc_ranks, width), n_relevant).tolist(),
    }


def evaluate_retrieval(distances: np.ndarray, protocol: RetrievalProtocol,
                       ks: Sequence[int] = (1, 5, 10), cmc_ranks: int = 20) -> dict[str, Any]:
    """Score a retrieval protocol.

    Args:
        distances: ``(n_queries, n_gallery) float``, smaller = closer; rows follow
            ``protocol.query_indices``, columns ``protocol.gallery_indices``.
        protocol: the :class:`RetrievalProtocol`.
        ks: cut-offs for recall@k and precision@k.
        cmc_ranks: length of the CMC curve returned.

    Returns:
        ``{"protocol": summary, "recall_at_k": {"1": ..}, "precision_at_k": {..}, "map",
        "map_at_r", "cmc": [..], "n_queries", "n_queries_scored", "n_gallery"}``.
        Queries with no relevant gallery item are left out of every mean.
    """
    d = _check_shape(distances, (len(protocol.query_indices), len(protocol.gallery_indices)),
                     protocol.name)
    out = {"protocol": protocol.summary()}
    out.update(evaluate_retrieval_arrays(
        d, protocol.query_labels, protocol.gallery_labels, exclude_self=protocol.exclude_self,
        self_index=protocol.self_index if protocol.exclude_self else None, ks=ks,
        cmc_ranks=cmc_ranks))
    return out


def evaluate_verification(distances: np.ndarray, protocol: VerificationProtocol,
                          fars: Sequence[float] = (1e-3, 1e-2, 1e-1),
                          include_roc: bool = False) -> dict[str, Any]:
    """Score a verification protocol.

    Args:
        distances: ``(n_pairs,) float``, the distance between the two images of each
            pair, smaller = more alike (turned into scores with ``-distance``).
        protocol: the :class:`VerificationProtocol`.
        fars: FAR targets for TAR@FAR.
        include_roc: add the ROC points (``roc_far``, ``roc_tar``) as lists.

    Returns:
        ``{"protocol", "auc", "eer", "tar_at_far": {"0.001": ..}, ...}``, plus, with 2+
        folds, ``"kfold"`` (:func:`metrics.kfold_verification`: threshold chosen on the
        other folds, the LFW protocol) or, with a single fold, ``"best_threshold"`` and
        ``"accuracy_at_best_threshold"`` (tuned on the same pairs: optimistic).
        Thresholds are on the score scale (``-distance``).
    """
    d = _check_shape(np.ravel(distances), (len(protocol.is_same),), protocol.name)
    scores = metrics.distances_to_scores(d)
    y = protocol.is_same
    out: dict[str, Any] = {"protocol": protocol.summary(),
                           "auc": metrics.roc_auc(scores, y),
                           "eer": metrics.equal_error_rate(scores, y),
                           "tar_at_far": {str(f): float(t) for f, t in
                                          zip(fars, metrics.tar_at_far(scores, y, list(fars)))}}
    if len(np.unique(protocol.folds)) >= 2:
        out["kfold"] = metrics.kfold_verification(scores, y, protocol.folds)
    else:
        thr = metrics.best_threshold(scores, y)
        out["best_threshold"] = thr
        out["accuracy_at_best_threshold"] = metrics.accuracy_at_threshold(scores, y, thr)
    if include_roc:
        far, tar, _ = metrics.roc_curve(scores, y)
        out["roc_far"], out["roc_tar"] = far.tolist(), tar.tolist()
    return out


def evaluate_identification(distances: np.ndarray, protocol: IdentificationProtocol,
                            ranks: Sequence[int] = (1, 5, 10, 20),
                            fpirs: Sequence[float] = (0.01, 0.1, 0.3)) -> dict[str, Any]:
    """Score an open-set identification protocol.

    Args:
        distances: ``(n_probes, n_gallery) float``, smaller = closer; rows follow
            ``protocol.probe_indices``, columns ``protocol.gallery_indices``.
        protocol: the :class:`IdentificationProtocol`.
        ranks: rank-k identification rates to report.
        fpirs: FPIR targets for DIR@FPIR.

    Returns:
        ``{"protocol", "n_mated", "n_nonmated", "rank_k": {..}, "dir_at_fpir": {..}}``
        (see :func:`metrics.identification_rates`).
    """
    d = _check_shape(distances, (len(protocol.probe_indices), len(protocol.gallery_indices)),
                     protocol.name)
    labels, scores = metrics.rank_gallery(d, protocol.gallery_labels,
                                          k=min(max(ranks), d.shape[1]))
    out = {"protocol": protocol.summary()}
    out.update(metrics.identification_rates(labels, scores, protocol.probe_labels,
                                            protocol.mated, ranks=ranks, fpirs=fpirs))
    return out


def evaluate_ann(approx_ids: np.ndarray, protocol: AnnProtocol | np.ndarray,
                 ks: Sequence[int] = (1, 10, 100)) -> dict[str, Any]:
    """ANN recall@k of approximate neighbour ids against exact ones.

    Args:
        approx_ids: ``(n_queries, k) int64`` ids from the approximate index, best first.
        protocol: an :class:`AnnProtocol` or the exact ids ``(n_queries, k_gt)``.
        ks: cut-offs (larger than either width are skipped).

    Returns:
        ``{"recall_at_k": {"1": .., "10": ..}}``.
    """
    exact = protocol.groundtruth if isinstance(protocol, AnnProtocol) else np.asarray(protocol)
    a = np.asarray(approx_ids)
    width = min(a.shape[1], exact.shape[1])
    return {"recall_at_k": {str(k): metrics.ann_recall_at_k(a, exact, k)
                            for k in ks if k <= width}}
