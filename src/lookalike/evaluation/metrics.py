"""Evaluation metrics: pure functions, numpy arrays in, numbers or arrays out.

Four families, each with its own input convention:

Retrieval (ranked lists, metric-learning sense)
    ``relevant``: ``(n_queries, k) bool``, row ``i`` column ``j`` true when the result
    at rank ``j + 1`` of query ``i`` is relevant. Ranks are best first.
    ``n_relevant``: ``(n_queries,) int``, how many relevant items the *whole gallery*
    holds for each query (after removing the query itself and junk), so recall and AP
    stay correct when the ranking is cut at ``k`` before every relevant item is found.
    **Queries with zero relevant items** have no defined recall or AP: every mean below
    drops them (:func:`lookalike.evaluation.report.evaluate_retrieval` reports how
    many queries were scored as ``n_queries_scored``);
    when every query has zero relevant items the functions raise
    :class:`~lookalike.errors.InputError`. A single-row :func:`average_precision` with
    ``n_relevant == 0`` raises too.

Verification (pairs)
    ``scores``: ``(n_pairs,) float``, **larger = more likely the same** identity/object.
    Distances (smaller = closer) turn into scores with :func:`distances_to_scores`.
    ``is_same``: ``(n_pairs,) bool``. A pair is declared "same" when
    ``score >= threshold``.

Open-set identification (probes against an enrolled gallery, with distractors)
    See :func:`identification_rates` for the protocol.

Duplicates and ANN
    :func:`pair_precision_recall_f1`, :func:`per_group_scores` on unordered pairs;
    :func:`ann_recall_at_k` compares approximate against exact neighbour ids.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    # retrieval
    "recall_at_k", "precision_at_k", "average_precision", "mean_average_precision",
    "map_at_r", "cmc_curve", "relevance_from_labels", "count_relevant", "ranked_relevance",
    # verification
    "distances_to_scores", "roc_curve", "roc_auc", "equal_error_rate", "tar_at_far",
    "accuracy_at_threshold", "best_threshold", "kfold_verification",
    # identification
    "rank_gallery", "rank_k_identification_rate", "dir_at_fpir", "dir_fpir_curve",
    "identification_rates",
    # duplicates, ANN
    "pair_precision_recall_f1", "per_group_scores", "ann_recall_at_k",
]

# Rows sorted at once by ranked_relevance: bounds the int64 argsort buffer to
# ROW_CHUNK * n_gallery * 8 bytes (a 10k gallery -> 80 MB).
ROW_CHUNK = 1024


# --------------------------------------------------------------------------- helpers
def _as_relevant(relevant: Any) -> np.ndarray:
    rel = np.asarray(relevant)
    if rel.ndim != 2:
        raise InputError(f"relevant must be a 2-D (n_queries, k) array, got shape {rel.shape}")
    if rel.dtype != bool:
        if not np.isin(rel, (0, 1)).all():
            raise InputError("relevant must be boolean (or 0/1)")
        rel = rel.astype(bool)
    return rel


def _as_n_relevant(n_relevant: Any, relevant: np.ndarray) -> np.ndarray:
    n_rel = np.asarray(n_relevant)
    if n_rel.shape != (relevant.shape[0],):
        raise InputError(f"n_relevant must have shape ({relevant.shape[0]},), got {n_rel.shape}")
    if not np.issubdtype(n_rel.dtype, np.integer):
        if not np.all(n_rel == np.round(n_rel)):
            raise InputError("n_relevant must hold integers")
        n_rel = n_rel.astype(np.int64)
    found = relevant.sum(axis=1)
    bad = np.flatnonzero(found > n_rel)
    if bad.size:
        i = int(bad[0])
        raise InputError(f"query {i}: {int(found[i])} relevant results retrieved but "
                         f"n_relevant says only {int(n_rel[i])} exist")
    return n_rel.astype(np.int64)


def _check_k(k: int, width: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if k > width:
        raise InputError(f"k={k} but the ranking only has {width} columns; "
                         "search with a larger k")
    return int(k)


def _query_mask(relevant: np.ndarray, n_relevant: Any | None) -> np.ndarray:
    """Queries that count in means: those with at least one relevant gallery item."""
    if n_relevant is None:
        return np.ones(relevant.shape[0], dtype=bool)
    keep = _as_n_relevant(n_relevant, relevant) > 0
    if relevant.shape[0] and not keep.any():
        raise InputError("no query has any relevant item in the gallery; the metric is undefined")
    return keep


def _mean(values: np.ndarray) -> float:
    if values.size == 0:
        raise InputError("no queries to average over")
    return float(values.mean())


# --------------------------------------------------------------------------- retrieval
def recall_at_k(relevant: np.ndarray, k: int, n_relevant: np.ndarray | None = None) -> float:
    """Recall@k in the metric-learning sense: fraction of queries with >= 1 relevant
    result among the first ``k``.

    Args:
        relevant: ``(n_queries, width) bool``, ranked best first, ``width >= k``.
        k: number of top results looked at (1-based count, so ``k=1`` is the top hit).
        n_relevant: optional ``(n_queries,) int``; queries with zero relevant gallery
            items are then left out of the mean.

    Returns:
        A float in ``[0, 1]``.
    """
    rel = _as_relevant(relevant)
    k = _check_k(k, rel.shape[1])
    keep = _query_mask(rel, n_relevant)
    return _mean(rel[keep, :k].any(axis=1))


def precision_at_k(relevant: np.ndarray, k: int, n_relevant: np.ndarray | None = None) -> float:
    """Mean over queries of (relevant results among the first ``k``) / ``k``.

    Args:
        relevant: ``(n_queries, width) bool``, ranked best first, ``width >= k``.
        k: cut-off rank.
        n_relevant: optional ``(n_queries,) int``; queries with zero relevant gallery
            items are then left out of the mean.
    """
    rel = _as_relevant(relevant)
    k = _check_k(k, rel.shape[1])
    keep = _query_mask(rel, n_relevant)
    return _mean(rel[keep, :k].sum(axis=1) / k)


def _hit_precisions(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, 0-based rank and precision@rank of every relevant entry.

    Works on the hits only (memory O(number of hits), not O(n_queries * width)).
    """
    rows, cols = np.nonzero(rel)  # row-major: sorted by row, then rank
    row_start = np.searchsorted(rows, np.arange(rel.shape[0]))
    hit_number = np.arange(rows.size) - row_start[rows] + 1  # 1 for the first hit of a row
    return rows, cols, hit_number / (cols + 1.0)


def _ap_rows(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """AP of every row: sum of precision@i at relevant ranks i, divided by n_rel."""
    rows, _, precision = _hit_precisions(rel)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(rows, weights=precision, minlength=rel.shape[0]) / n_rel


def average_precision(relevant_row: np.ndarray, n_relevant: int) -> float:
    """Average precision of one ranked list.

    ``AP = (1 / n_relevant) * sum over relevant ranks i of precision@i``. Relevant items
    that were never retrieved contribute precision 0, which is why ``n_relevant`` (the
    count in the whole gallery) is needed rather than the count in the row.

    Args:
        relevant_row: ``(width,) bool``, ranked best first.
        n_relevant: relevant items in the gallery for this query, ``>= relevant_row.sum()``.

    Raises:
        InputError: when ``n_relevant`` is 0 (AP undefined) or smaller than the hits.
    """
    row = np.asarray(relevant_row)
    if row.ndim != 1:
        raise InputError(f"relevant_row must be 1-D, got shape {row.shape}")
    rel = _as_relevant(row[None, :])
    n_rel = _as_n_relevant(np.array([n_relevant]), rel)
    if n_rel[0] == 0:
        raise InputError("average precision is undefined for a query with no relevant items")
    return float(_ap_rows(rel, n_rel)[0])


def mean_average_precision(relevant: np.ndarray, n_relevant: np.ndarray) -> float:
    """mAP: mean of :func:`average_precision` over queries with ``n_relevant > 0``.

    Args:
        relevant: ``(n_queries, width) bool``, ranked best first. Pass the full ranking
            for the exact mAP; a ranking cut at ``width`` gives mAP@width (missed items
            count as precision 0).
        n_relevant: ``(n_queries,) int``.
    """
    rel = _as_relevant(relevant)
    keep = _query_mask(rel, n_relevant)
    n_rel = np.asarray(n_relevant)[keep]
    return _mean(_ap_rows(rel[keep], n_rel))


def map_at_r(relevant: np.ndarray, n_relevant: np.ndarray) -> float:
    """MAP@R (Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020).

    For each query ``R = n_relevant``, and
    ``MAP@R = (1 / R) * sum_{i=1..R} P(i) * rel(i)`` where ``P(i)`` is precision at
    rank ``i``: only relevant positions within the first ``R`` ranks count. Positions
    beyond the row's width count as not relevant. Queries with ``R = 0`` are dropped.

    Args:
        relevant: ``(n_queries, width) bool``, ranked best first; ideally
            ``width >= max(n_relevant)``.
        n_relevant: ``(n_queries,) int``.
    """
    rel = _as_relevant(relevant)
    keep = _query_mask(rel, n_relevant)
    rel = rel[keep]
    n_rel = np.asarray(n_relevant)[keep].astype(np.int64)
    rows, cols, precision = _hit_precisions(rel)
    within_r = cols < n_rel[rows]  # only hits among the first R ranks count
    scores = np.bincount(rows[within_r], weights=precision[within_r],
                         minlength=rel.shape[0]) / n_rel
    return _mean(scores)


def cmc_curve(relevant: np.ndarray, max_rank: int,
              n_relevant: np.ndarray | None = None) -> np.ndarray:
    """Cumulative match characteristic: entry ``r - 1`` = fraction of queries whose first
    relevant result is at rank ``<= r``, for ``r = 1..max_rank``.

    Equal to ``[recall_at_k(relevant, r) for r in 1..max_rank]``.

    Returns:
        ``(max_rank,) float64``, non-decreasing.
    """
    rel = _as_relevant(relevant)
    max_rank = _check_k(max_rank, rel.shape[1])
    keep = _query_mask(rel, n_relevant)
    rel = rel[keep, :max_rank]
    if rel.shape[0] == 0:
        raise InputError("no queries to average over")
    return np.logical_or.accumulate(rel, axis=1).mean(axis=0)


def _compact_rows(rel: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Drop ``~keep`` entries of each row, shift the rest left, pad the end with False."""
    kept = keep.sum(axis=1)
    if kept.size and (kept == kept[0]).all():  # common case (leave-one-out): no padding
        return rel[keep].reshape(rel.shape[0], int(kept[0]))
    order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, order preserved
    rel = np.take_along_axis(rel, order, axis=1) & np.take_along_axis(keep, order, axis=1)
    width = int(keep.sum(axis=1).max()) if keep.size else 0
    return rel[:, :width]


def _one_id_per_query(ignore: Any) -> Any:
    """A flat sequence of integers means one id per query: make it an int array."""
    if isinstance(ignore, np.ndarray):
        return ignore
    items = list(ignore)
    if items and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in items):
        return np.asarray(items, dtype=np.int64)
    return items


def _ignore_mask(ignore: Any, result_ids: np.ndarray) -> np.ndarray:
    """Turn ``ignore`` (mask, per-query id sets or one id per query) into an (n, k) mask."""
    n, k = result_ids.shape
    ignore = _one_id_per_query(ignore)
    if isinstance(ignore, np.ndarray) and ignore.dtype == bool:
        if ignore.shape != (n, k):
            raise InputError(f"ignore mask must have shape {(n, k)}, got {ignore.shape}")
        return ignore
    if isinstance(ignore, np.ndarray) and ignore.ndim == 1 and np.issubdtype(ignore.dtype, np.integer):
        if ignore.shape != (n,):
            raise InputError(f"ignore ids must have shape ({n},), got {ignore.shape}")
        return (result_ids == ignore[:, None]) & (ignore[:, None] >= 0)
    if len(ignore) != n:
        raise InputError(f"ignore must give one set of ids per query ({n}), got {len(ignore)}")
    mask = np.zeros((n, k), dtype=bool)
    for i, ids in enumerate(ignore):
        ids = np.fromiter((int(x) for x in ids), dtype=np.int64)
        if ids.size:
            mask[i] = np.isin(result_ids[i], ids)
    return mask


def relevance_from_labels(result_ids: np.ndarray, query_labels: np.ndarray,
                          gallery_labels: np.ndarray, ignore: Any = None) -> np.ndarray:
    """Relevance matrix of ranked search results, from class labels.

    Args:
        result_ids: ``(n_queries, k) int64`` gallery positions (indices into
            ``gallery_labels``), best first; ``-1`` pads short rows and is never relevant.
        query_labels: ``(n_queries,)`` label of each query.
        gallery_labels: ``(n_gallery,)`` label of each gallery item.
        ignore: optional items to drop from the ranking before scoring (the query itself,
            junk images): an ``(n_queries, k) bool`` mask over ``result_ids``, an
            ``(n_queries,) int`` array of one id per query (``-1`` = none), or a sequence
            of per-query iterables of ids. Later results move up to fill the gap.

    Returns:
        ``(n_queries, k') bool`` with ``k' <= k`` (the longest row after dropping);
        rows shortened by ``ignore`` are padded with False.
    """
    ids = np.asarray(result_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"result_ids must be a 2-D integer array, got {ids.dtype} {ids.shape}")
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    if q.shape != (ids.shape[0],):
        raise InputError(f"query_labels must have shape ({ids.shape[0]},), got {q.shape}")
    if ids.size and (ids.max() >= len(g) or ids.min() < -1):
        raise InputError(f"result_ids must lie in [-1, {len(g) - 1}] (gallery positions)")
    valid = ids >= 0
    rel = valid & (g[np.where(valid, ids, 0)] == q[:, None])
    if ignore is None:
        return rel
    return _compact_rows(rel, ~_ignore_mask(ignore, ids))


def count_relevant(query_labels: np.ndarray, gallery_labels: np.ndarray,
                   ignore: Sequence[Iterable[int]] | np.ndarray | None = None) -> np.ndarray:
    """``n_relevant`` for each query: gallery items sharing its label, minus ignored ones.

    Args:
        query_labels: ``(n_queries,)``.
        gallery_labels: ``(n_gallery,)``.
        ignore: ``(n_queries,) int`` one gallery position per query (``-1`` = none), or
            per-query iterables of gallery positions, removed from the count when they
            share the query's label.

    Returns:
        ``(n_queries,) int64``.
    """
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    n_rel = np.zeros(len(q), dtype=np.int64)
    if len(g):
        uniq, counts = np.unique(g, return_counts=True)
        pos = np.minimum(np.searchsorted(uniq, q), len(uniq) - 1)
        n_rel = np.where(uniq[pos] == q, counts[pos], 0).astype(np.int64)
    if ignore is None:
        return n_rel
    ignore = _one_id_per_query(ignore)
    if isinstance(ignore, np.ndarray):
        ids = ignore.astype(np.int64)
        has = ids >= 0
        n_rel -= has & (g[np.where(has, ids, 0)] == q)
        return n_rel
    if len(ignore) != len(q):
        raise InputError(f"ignore must give one set of ids per query ({len(q)}), got {len(ignore)}")
    for i, ids in enumerate(ignore):
        ids = np.unique(np.fromiter((int(x) for x in ids), dtype=np.int64))
        n_rel[i] -= int((g[ids] == q[i]).sum()) if ids.size else 0
    return n_rel


def _order_key32(d: np.ndarray) -> np.ndarray:
    """uint32 keys sorting like ``d`` (float32 or <= 32-bit ints); NaN last, -0.0 == 0.0."""
    if np.issubdtype(d.dtype, np.integer):
        return (d.astype(np.int64) + 2**31).astype(np.uint32)  # signed/unsigned < 2**31
    d = np.where(np.isnan(d), np.float32(np.nan), d + np.float32(0.0))  # one NaN, +0.0
    bits = d.view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))


def _argsort_rows_stable(d: np.ndarray) -> np.ndarray:
    """Row-wise argsort with ties in index order (= ``kind="stable"``), NaN last.

    Faster paths than numpy's stable argsort: 32-bit values are packed with their
    column into unique uint64 keys and sorted by value; float64 rows are quicksorted
    and only rows holding ties or NaN re-sorted stably (ties are rare in float64).
    """
    n, m = d.shape
    if m and (d.dtype == np.float32 or (np.issubdtype(d.dtype, np.integer)
                                        and d.dtype.itemsize <= 4 and d.dtype != np.uint32)):
        packed = (_order_key32(d).astype(np.uint64) << np.uint64(32)) | np.arange(m, dtype=np.uint64)
        packed.sort(axis=1)
        return (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    if d.dtype != np.float64:
        return np.argsort(d, axis=1, kind="stable")
    order = np.argsort(d, axis=1)
    sorted_d = np.take_along_axis(d, order, axis=1)
    redo = (sorted_d[:, 1:] == sorted_d[:, :-1]).any(axis=1)
    if m:
        redo |= np.isnan(sorted_d[:, -1])
    if redo.any():
        order[redo] = np.argsort(d[redo], axis=1, kind="stable")
    return order


def ranked_relevance(distances: np.ndarray, query_labels: np.ndarray,
                     gallery_labels: np.ndarray, exclude_self: bool = False,
                     self_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sort a full distance matrix and score it against labels.

    Args:
        distances: ``(n_queries, n_gallery) float``, **smaller = closer**. Ties are
            broken stably by gallery index (lower index ranks first). NaN sorts last.
        query_labels: ``(n_queries,)``.
        gallery_labels: ``(n_gallery,)``.
        exclude_self: drop each query's own entry from its ranking and from
            ``n_relevant`` (leave-one-out, when queries are also in the gallery).
        self_index: ``(n_queries,) int`` gallery position of each query (``-1`` = not in
            the gallery). Default with ``exclude_self``: the diagonal (needs a square
            matrix, query ``i`` = gallery item ``i``).

    Returns:
        ``(relevant, n_relevant)``: ``(n_queries, n_gallery') bool`` ranked best first
        (``n_gallery' = n_gallery - 1`` when every query had a self entry) and
        ``(n_queries,) int64``.
    """
    d = np.asarray(distances)
    if d.ndim != 2:
        raise InputError(f"distances must be 2-D (n_queries, n_gallery), got shape {d.shape}")
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    if q.shape != (d.shape[0],) or g.shape != (d.shape[1],):
        raise InputError(f"labels ({q.shape}, {g.shape}) do not match distances {d.shape}")
    if exclude_self:
        if self_index is None:
            if d.shape[0] != d.shape[1]:
                raise InputError("exclude_self without self_index needs a square distance matrix")
            self_index = np.arange(d.shape[0])
        self_index = np.asarray(self_index, dtype=np.int64)
        if self_index.shape != (d.shape[0],):
            raise InputError(f"self_index must have shape ({d.shape[0]},), got {self_index.shape}")
    chunks = []
    for start in range(0, d.shape[0], ROW_CHUNK):
        stop = min(start + ROW_CHUNK, d.shape[0])
        order = _argsort_rows_stable(d[start:stop])
        rel = g[order] == q[start:stop, None]
        if exclude_self:
            rel = _compact_rows(rel, order != self_index[start:stop, None])
        chunks.append(rel)
    width = max((c.shape[1] for c in chunks), default=d.shape[1])
    relevant = np.concatenate(
        [np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c in chunks]) if chunks \
        else np.zeros((0, width), dtype=bool)
    n_relevant = count_relevant(q, g, self_index if exclude_self else None)
    return relevant, n_relevant


# --------------------------------------------------------------------------- verification
def distances_to_scores(distances: np.ndarray) -> np.ndarray:
    """Turn distances (smaller = closer) into scores (larger = more likely same): ``-d``."""
    return -np.asarray(distances, dtype=np.float64)


def _as_pairs(scores: Any, is_same: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_same)
    if s.ndim != 1 or y.shape != s.shape:
        raise InputError(f"scores and is_same must be 1-D of equal length, got {s.shape}, {y.shape}")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise InputError("is_same must be boolean (or 0/1)")
        y = y.astype(bool)
    if np.isnan(s).any():
        raise InputError("scores contain NaN")
    return s, y


def _need_both_classes(y: np.ndarray) -> None:
    if y.all() or not y.any():
        raise InputError("need both same and different pairs "
                         f"(got {int(y.sum())} same, {int((~y).sum())} different)")


def roc_curve(scores: np.ndarray, is_same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a verification score: one point per distinct threshold.

    A pair is accepted as "same" when ``score >= threshold``. FAR (false accept rate) =
    accepted different pairs / different pairs; TAR (true accept rate) = accepted same
    pairs / same pairs.

    Args:
        scores: ``(n_pairs,) float``, larger = more likely same.
        is_same: ``(n_pairs,) bool``.

    Returns:
        ``(far, tar, thresholds)``, each ``(n_distinct + 1,) float64``; thresholds
        decreasing, the first is ``+inf`` (FAR = TAR = 0), the last is the lowest score
        (FAR = TAR = 1). Matches ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    s, y = _as_pairs(scores, is_same)
    _need_both_classes(y)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index per distinct score
    tp = np.cumsum(y)[last_of_group]
    fp = np.cumsum(~y)[last_of_group]
    far = np.r_[0.0, fp / (~y).sum()]
    tar = np.r_[0.0, tp / y.sum()]
    return far, tar, np.r_[np.inf, s[last_of_group]]


def roc_auc(scores: np.ndarray, is_same: np.ndarray) -> float:
    """Area under the ROC curve (ties count half, as in ``sklearn.metrics.roc_auc_score``)."""
    far, tar, _ = roc_curve(scores, is_same)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def equal_error_rate(scores: np.ndarray, is_same: np.ndarray) -> float:
    """Error rate where FAR equals FRR (= 1 - TAR), linearly interpolated on the ROC.

    Returns:
        EER in ``[0, 1]``; 0 for perfectly separated scores.
    """
    far, tar, _ = roc_curve(scores, is_same)
    frr = 1.0 - tar
    diff = far - frr  # goes from -1 (threshold +inf) to +1 (lowest threshold)
    j = int(np.flatnonzero(diff >= 0)[0])
    if diff[j] == 0 or j == 0:
        return float(far[j])
    # linear interpolation between points j-1 (diff < 0) and j (diff > 0)
    t = -diff[j - 1] / (diff[j] - diff[j - 1])
    return float(far[j - 1] + t * (far[j] - far[j - 1]))


def tar_at_far(scores: np.ndarray, is_same: np.ndarray, far: float | Sequence[float]) -> Any:
    """TAR at a target FAR: the highest TAR of any threshold whose FAR is ``<= far``.

    No interpolation (the conservative reading: an operating point you can actually set).

    Args:
        far: a target in ``[0, 1]``, or a sequence of them.

    Returns:
        A float, or ``(len(far),) float64`` for a sequence.
    """
    fars, tars, _ = roc_curve(scores, is_same)
    targets = np.atleast_1d(np.asarray(far, dtype=np.float64))
    if ((targets < 0) | (targets > 1)).any():
        raise InputError(f"far targets must lie in [0, 1], got {targets}")
    # fars is non-decreasing; the last index with fars <= target has the highest tar
    idx = np.searchsorted(fars, targets, side="right") - 1
    out = tars[idx]
    return float(out[0]) if np.ndim(far) == 0 else out


def accuracy_at_threshold(scores: np.ndarray, is_same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly when "same" means ``score >= threshold``."""
    s, y = _as_pairs(scores, is_same)
    if s.size == 0:
        raise InputError("no pairs")
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores: np.ndarray, is_same: np.ndarray) -> float:
    """Threshold of highest accuracy (rule: same when ``score >= threshold``).

    Candidates are midpoints between consecutive distinct scores, plus one below the
    lowest and one above the highest; among equally accurate candidates the lowest
    threshold wins (deterministic).
    """
    s, y = _as_pairs(scores, is_same)
    if s.size == 0:
        raise InputError("no pairs")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1, s.size]  # first index of each group; end
    # Threshold just below group g accepts indices >= starts[g]; the final entry accepts none.
    neg_below = np.r_[0, np.cumsum(~y)][starts]  # correct rejections
    pos_at_or_above = y.sum() - np.r_[0, np.cumsum(y)][starts]  # correct accepts
    correct = neg_below + pos_at_or_above
    g = int(np.argmax(correct))
    distinct = s[starts[:-1]]
    if g == 0:
        return float(distinct[0] - 1.0) if distinct.size else 0.0
    if g == len(distinct):
        above = distinct[-1] + 1.0
        # + 1.0 vanishes for huge scores; the next float up still rejects every pair
        return float(above if above > distinct[-1] else np.nextafter(distinct[-1], np.inf))
    return float((distinct[g - 1] + distinct[g]) / 2.0)


def kfold_verification(scores: np.ndarray, is_same: np.ndarray,
                       folds: np.ndarray) -> dict[str, Any]:
    """K-fold verification accuracy (the LFW View 2 protocol).

    For each fold: the threshold is chosen by :func:`best_threshold` on all the other
    folds, and accuracy is measured on the held-out fold.

    Args:
        scores: ``(n_pairs,) float``, larger = more likely same.
        is_same: ``(n_pairs,) bool``.
        folds: ``(n_pairs,) int``, the fold of each pair (any integer values, >= 2 distinct).

    Returns:
        JSON-able dict: ``mean_accuracy``, ``std_accuracy`` (population std over folds,
        ddof=0), ``fold_accuracies`` and ``thresholds`` (lists in sorted fold order),
        ``folds`` (the fold values).
    """
    s, y = _as_pairs(scores, is_same)
    f = np.asarray(folds)
    if f.shape != s.shape:
        raise InputError(f"folds must have shape {s.shape}, got {f.shape}")
    values = np.unique(f)
    if values.size < 2:
        raise InputError("k-fold verification needs at least 2 folds")
    accs, thrs = [], []
    for v in values:
        test = f == v
        thr = best_threshold(s[~test], y[~test])
        thrs.append(thr)
        accs.append(accuracy_at_threshold(s[test], y[test], thr))
    return {"mean_accuracy": float(np.mean(accs)), "std_accuracy": float(np.std(accs)),
            "fold_accuracies": [float(a) for a in accs], "thresholds": thrs,
            "folds": [v.item() for v in values]}


# --------------------------------------------------------------------------- identification
def rank_gallery(distances: np.ndarray, gallery_labels: np.ndarray,
                 k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank gallery entries for each probe: the inputs of the identification metrics.

    Args:
        distances: ``(n_probes, n_gallery) float``, smaller = closer; ties broken by
            gallery index.
        gallery_labels: ``(n_gallery,)`` identity of each gallery entry.
        k: keep the best ``k`` (default all).

    Returns:
        ``(ranked_labels, ranked_scores)``: ``(n_probes, k)`` identity labels and scores
        (``-distance``, larger = more similar), best first.
    """
    d = np.asarray(distances, dtype=np.float64)
    g = np.asarray(gallery_labels)
    if d.ndim != 2 or g.shape != (d.shape[1],):
        raise InputError(f"distances {d.shape} and gallery_labels {g.shape} do not match")
    k = d.shape[1] if k is None else _check_k(k, d.shape[1])
    order = _argsort_rows_stable(d)[:, :k]
    return g[order], -np.take_along_axis(d, order, axis=1)


def _identity_inputs(ranked_labels, probe_labels, mated):
    labels = np.asarray(ranked_labels)
    p = np.asarray(probe_labels)
    m = np.asarray(mated, dtype=bool)
    if labels.ndim != 2 or p.shape != (labels.shape[0],) or m.shape != p.shape:
        raise InputError(f"ranked_labels {labels.shape}, probe_labels {p.shape} and mated "
                         f"{m.shape} must describe the same probes")
    return labels, p, m


def _mate_identity_rank(labels: np.ndarray, probe_labels: np.ndarray) -> np.ndarray:
    """1-based rank of the probe's identity among *distinct* ranked identities (0 = absent).

    Several gallery entries of one identity count once, at their best position.
    """
    n, k = labels.shape
    if k == 0:
        return np.zeros(n, dtype=np.int64)
    order = np.argsort(labels, axis=1, kind="stable")
    sorted_labels = np.take_along_axis(labels, order, axis=1)
    first_sorted = np.ones((n, k), dtype=bool)
    first_sorted[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    first = np.zeros((n, k), dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)  # first occurrence in rank order
    distinct_rank = np.cumsum(first, axis=1)
    match = first & (labels == probe_labels[:, None])
    has = match.any(axis=1)
    pos = np.argmax(match, axis=1)
    return np.where(has, distinct_rank[np.arange(n), pos], 0)


def rank_k_identification_rate(ranked_labels: np.ndarray, probe_labels: np.ndarray,
                               mated: np.ndarray, k: int) -> float:
    """Fraction of mated probes whose true identity is among the top ``k`` distinct
    gallery identities (closed-set rank-k rate; non-mated probes are ignored).

    Args:
        ranked_labels: ``(n_probes, width)`` gallery identity labels, best first.
        probe_labels: ``(n_probes,)``.
        mated: ``(n_probes,) bool``, true when the probe's identity is enrolled.
        k: rank cut-off (``k=1``: the best gallery identity).
    """
    labels, p, m = _identity_inputs(ranked_labels, probe_labels, mated)
    k = _check_k(k, labels.shape[1])
    if not m.any():
        raise InputError("no mated probes")
    rank = _mate_identity_rank(labels[m], p[m])
    return float(np.mean((rank >= 1) & (rank <= k)))


def _nonmated_threshold(top_nonmated: np.ndarray, fpir: float) -> float:
    """Threshold letting through at most ``floor(fpir * N)`` non-mated top scores
    (a score passes when strictly greater than the threshold)."""
    if not 0.0 <= fpir <= 1.0:
        raise InputError(f"fpir must lie in [0, 1], got {fpir}")
    n = top_nonmated.size
    allowed = int(np.floor(fpir * n + 1e-9))
    if allowed >= n:
        return -np.inf
    return float(np.sort(top_nonmated)[::-1][allowed])


def _open_set_inputs(ranked_labels, ranked_scores, probe_labels, mated):
    labels, p, m = _identity_inputs(ranked_labels, probe_labels, mated)
    s = np.asarray(ranked_scores, dtype=np.float64)
    if s.shape != labels.shape or labels.shape[1] == 0:
        raise InputError(f"ranked_scores {s.shape} must match ranked_labels {labels.shape} "
                         "and hold at least one column")
    if not m.any() or m.all():
        raise InputError(f"open-set rates need mated and non-mated probes "
                         f"(got {int(m.sum())} mated, {int((~m).sum())} non-mated)")
    correct_rank1 = labels[m, 0] == p[m]
    return correct_rank1, s[m, 0], s[~m, 0]


def dir_at_fpir(ranked_labels: np.ndarray, ranked_scores: np.ndarray,
                probe_labels: np.ndarray, mated: np.ndarray, fpir: float) -> float:
    """Detection and identification rate at a false positive identification rate.

    The threshold ``t`` is set on the non-mated probes' top scores so that at most a
    fraction ``fpir`` of them pass (pass = strictly above ``t``); DIR is the fraction
    of mated probes whose rank-1 gallery identity is their own *and* whose rank-1 score
    passes ``t``. See :func:`identification_rates`.
    """
    correct, mated_top, nonmated_top = _open_set_inputs(
        ranked_labels, ranked_scores, probe_labels, mated)
    t = _nonmated_threshold(nonmated_top, fpir)
    return float(np.mean(correct & (mated_top > t)))


def dir_fpir_curve(ranked_labels: np.ndarray, ranked_scores: np.ndarray,
                   probe_labels: np.ndarray, mated: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DIR against FPIR for every threshold set at a distinct non-mated top score.

    Returns:
        ``(fpir, dir, thresholds)``, each ``(n_distinct + 1,) float64``; thresholds
        decreasing (the largest non-mated top score first, so FPIR starts at 0), ending
        with ``-inf`` (FPIR = 1, DIR = rank-1 rate). Pass rule: score ``> threshold``.
    """
    correct, mated_top, nonmated_top = _open_set_inputs(
        ranked_labels, ranked_scores, probe_labels, mated)
    thresholds = np.r_[np.unique(nonmated_top)[::-1], -np.inf]
    nm_sorted = np.sort(nonmated_top)
    passing_nm = nonmated_top.size - np.searchsorted(nm_sorted, thresholds, side="right")
    hits = np.sort(mated_top[correct])
    passing_hits = hits.size - np.searchsorted(hits, thresholds, side="right")
    return (passing_nm / nonmated_top.size, passing_hits / mated_top.size, thresholds)


def identification_rates(ranked_labels: np.ndarray, ranked_scores: np.ndarray,
                         probe_labels: np.ndarray, mated: np.ndarray,
                         ranks: Sequence[int] = (1, 5, 10),
                         fpirs: Sequence[float] = (0.001, 0.01, 0.1)) -> dict[str, Any]:
    """Open-set identification with distractors (ISO/IEC 19795-1, NIST FRVT 1:N style).

    Protocol:
        * The **gallery** holds enrolled entries, each with an identity label; it may
          include distractors (identities no probe shares). Several entries of one
          identity count as one identity when ranking (best position).
        * **Mated probes** have their identity enrolled; **non-mated probes** do not.
        * **Rank-k identification rate** (closed-set, CMC at k): fraction of mated
          probes whose true identity is among the top ``k`` distinct gallery identities.
        * **FPIR(t)**: fraction of non-mated probes whose top score passes the
          threshold ``t`` (pass = score strictly greater than ``t``).
        * **DIR(t)** (a.k.a. TPIR at rank 1 with threshold): fraction of mated probes
          whose rank-1 gallery identity is their true mate *and* whose rank-1 score passes
          ``t``. DIR@FPIR=x uses the threshold passing at most ``floor(x * N_nonmated)``
          non-mated probes. FNIR = 1 - DIR.

    Args:
        ranked_labels: ``(n_probes, width)`` gallery identity labels sorted best first
            (e.g. from :func:`rank_gallery`).
        ranked_scores: ``(n_probes, width) float``, matching scores, larger = more
            similar (non-increasing along each row).
        probe_labels: ``(n_probes,)`` identity of each probe.
        mated: ``(n_probes,) bool``.
        ranks: cut-offs for the rank-k rates (larger than ``width`` are skipped).
        fpirs: FPIR targets; skipped when there are no non-mated probes.

    Returns:
        JSON-able dict: ``n_mated``, ``n_nonmated``, ``rank_k`` (``{"1": rate, ...}``),
        and, with non-mated probes, ``dir_at_fpir`` (``{"0.01": rate, ...}``).
    """
    labels, p, m = _identity_inputs(ranked_labels, probe_labels, mated)
    out: dict[str, Any] = {"n_mated": int(m.sum()), "n_nonmated": int((~m).sum())}
    out["rank_k"] = {str(k): rank_k_identification_rate(labels, p, m, k)
                     for k in ranks if k <= labels.shape[1]}
    if out["n_nonmated"] and out["n_mated"]:
        out["dir_at_fpir"] = {str(f): dir_at_fpir(labels, ranked_scores, p, m, f) for f in fpirs}
    return out


# --------------------------------------------------------------------------- duplicates
def _pair_key(pair: Any) -> frozenset:
    try:
        a, b = pair
    except (TypeError, ValueError):
        raise InputError(f"a pair must hold exactly two items, got {pair!r}") from None
    if a == b:
        raise InputError(f"a pair must join two different items, got {pair!r}")
    return frozenset((a, b))


def _pair_set(pairs: Iterable[Any]) -> set[frozenset]:
    return {_pair_key(p) for p in pairs}


def _ratio(num: int, den: int) -> float:
    # 0/0: nothing claimed (precision) or nothing to find (recall) -> no error made.
    return 1.0 if den == 0 else num / den


def pair_precision_recall_f1(predicted_pairs: Iterable[tuple[Hashable, Hashable]],
                             true_pairs: Iterable[tuple[Hashable, Hashable]]) -> dict[str, Any]:
    """Precision, recall and F1 of predicted duplicate pairs.

    Pairs are unordered (``(a, b) == (b, a)``) and de-duplicated; items are any hashable
    ids or paths. An empty denominator gives 1.0 (no false claim / nothing missed).

    Returns:
        JSON-able dict: ``precision``, ``recall``, ``f1``, ``tp``, ``fp``, ``fn``.
    """
    pred, true = _pair_set(predicted_pairs), _pair_set(true_pairs)
    tp = len(pred & true)
    precision, recall = _ratio(tp, len(pred)), _ratio(tp, len(true))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": len(pred) - tp, "fn": len(true) - tp}


def per_group_scores(predicted_pairs: Iterable[tuple[Hashable, Hashable]],
                     true_pairs: Iterable[tuple[Hashable, Hashable]],
                     kind_of_pair: Mapping[tuple[Hashable, Hashable], str]) -> dict[str, Any]:
    """Duplicate-detection recall per kind of true pair (e.g. transformation), plus
    overall precision/recall/F1 (precision cannot be split: false pairs have no kind).

    Args:
        predicted_pairs: unordered pairs found.
        true_pairs: unordered true duplicate pairs.
        kind_of_pair: kind of each true pair (either order of the pair as key); true
            pairs missing from it count under ``"unknown"``.

    Returns:
        ``{"overall": pair_precision_recall_f1(...),
        "by_kind": {kind: {"recall", "found", "total"}}}``, kinds sorted by name.
    """
    pred, true = _pair_set(predicted_pairs), _pair_set(true_pairs)
    kinds = {_pair_key(p): str(k) for p, k in kind_of_pair.items()}
    by_kind: dict[str, dict[str, Any]] = {}
    for pair in true:
        entry = by_kind.setdefault(kinds.get(pair, "unknown"), {"found": 0, "total": 0})
        entry["total"] += 1
        entry["found"] += pair in pred
    for entry in by_kind.values():
        entry["recall"] = entry["found"] / entry["total"]
    return {"overall": pair_precision_recall_f1(pred, true),
            "by_kind": {k: by_kind[k] for k in sorted(by_kind)}}


# --------------------------------------------------------------------------- ANN
def ann_recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / k``.

    Args:
        approx_ids: ``(n_queries, >= k) int`` ids from the approximate index, best first;
            ``-1`` padding never counts, and a repeated id counts once.
        exact_ids: ``(n_queries, >= k) int`` exact nearest-neighbour ids, best first.
        k: cut-off.

    Note:
        Ties in the exact distances at rank k can make a correct id look missed; that is
        the usual convention (ann-benchmarks counts by distance instead).
    """
    a = np.asarray(approx_ids)
    e = np.asarray(exact_ids)
    if a.ndim != 2 or e.ndim != 2 or a.shape[0] != e.shape[0]:
        raise InputError(f"approx_ids {a.shape} and exact_ids {e.shape} must be 2-D "
                         "with the same number of rows")
    k = _check_k(k, min(a.shape[1], e.shape[1]))
    a = np.sort(a[:, :k], axis=1)
    unique = np.ones(a.shape, dtype=bool)
    unique[:, 1:] = a[:, 1:] != a[:, :-1]
    found = (a[:, :, None] == e[:, None, :k]).any(axis=2) & unique & (a >= 0)
    return _mean(found.sum(axis=1) / k)
