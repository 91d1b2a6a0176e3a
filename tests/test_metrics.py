"""Metric functions against hand-computed cases, slow obvious loops and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lookalike.errors import InputError
from lookalike.evaluation import metrics as M

# --------------------------------------------------------------------------- retrieval
# Three queries; row 0 hits at ranks 2 and 4 of 3 relevant, row 1 at rank 1 of 1,
# row 2 finds none of its 2.
REL = np.array([[0, 1, 0, 1],
                [1, 0, 0, 0],
                [0, 0, 0, 0]], dtype=bool)
N_REL = np.array([3, 1, 2])


def test_recall_and_precision_at_k_hand_computed():
    assert M.recall_at_k(REL, 1) == pytest.approx(1 / 3)
    assert M.recall_at_k(REL, 2) == pytest.approx(2 / 3)
    assert M.recall_at_k(REL, 4, N_REL) == pytest.approx(2 / 3)
    assert M.precision_at_k(REL, 1) == pytest.approx(1 / 3)
    assert M.precision_at_k(REL, 2) == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert M.precision_at_k(REL, 4) == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)


def test_k_is_a_count_not_an_index():
    # k=1 looks at exactly the first column: off-by-one would give 2/3 here
    rel = np.array([[0, 1], [0, 1], [1, 0]], dtype=bool)
    assert M.recall_at_k(rel, 1) == pytest.approx(1 / 3)
    assert M.recall_at_k(rel, 2) == pytest.approx(1.0)
    with pytest.raises(InputError, match="k=3"):
        M.recall_at_k(rel, 3)
    with pytest.raises(InputError):
        M.precision_at_k(rel, 0)


def test_average_precision_hand_computed():
    # precision 1/2 at rank 2 and 2/4 at rank 4, divided by the 3 relevant in the gallery
    assert M.average_precision(REL[0], 3) == pytest.approx((1 / 2 + 2 / 4) / 3)
    # same row but only 2 relevant exist: all found
    assert M.average_precision(REL[0], 2) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert M.average_precision(REL[1], 1) == 1.0
    assert M.average_precision(REL[2], 2) == 0.0
    with pytest.raises(InputError, match="undefined"):
        M.average_precision(np.zeros(3, bool), 0)
    with pytest.raises(InputError, match="n_relevant"):
        M.average_precision(np.array([1, 1, 0], bool), 1)  # more hits than relevant items


def test_map_and_map_at_r_hand_computed():
    assert M.mean_average_precision(REL, N_REL) == pytest.approx((1 / 3 + 1 + 0) / 3)
    # MAP@R: row 0 R=3, only rank 2 inside the first 3 -> (1/2)/3; row 1 -> 1; row 2 -> 0
    assert M.map_at_r(REL, N_REL) == pytest.approx((1 / 6 + 1 + 0) / 3)
    # MAP@R punishes late hits that plain AP still rewards
    late = np.array([[0, 0, 1, 1]], bool)
    assert M.map_at_r(late, np.array([2])) == 0.0
    assert M.mean_average_precision(late, np.array([2])) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_cmc_hand_computed_and_equals_recall_at_k():
    cmc = M.cmc_curve(REL, 4)
    np.testing.assert_allclose(cmc, [1 / 3, 2 / 3, 2 / 3, 2 / 3])
    rng = np.random.default_rng(0)
    rel = rng.random((50, 10)) < 0.15
    np.testing.assert_allclose(M.cmc_curve(rel, 10), [M.recall_at_k(rel, k) for k in range(1, 11)])


def test_queries_without_relevant_items_are_dropped_from_means():
    n_rel = np.array([3, 1, 0])  # query 2 has nothing relevant in the gallery
    assert M.recall_at_k(REL, 1, n_rel) == pytest.approx(1 / 2)
    assert M.precision_at_k(REL, 2, n_rel) == pytest.approx(1 / 2)
    assert M.mean_average_precision(REL, n_rel) == pytest.approx((1 / 3 + 1) / 2)
    assert M.map_at_r(REL, n_rel) == pytest.approx((1 / 6 + 1) / 2)
    np.testing.assert_allclose(M.cmc_curve(REL, 2, n_rel), [1 / 2, 1])
    with pytest.raises(InputError, match="no query"):
        M.mean_average_precision(np.zeros((2, 3), bool), np.array([0, 0]))


def test_mean_average_precision_matches_sklearn_on_full_rankings():
    rng = np.random.default_rng(1)
    for _ in range(20):
        truth = rng.random(40) < 0.3
        truth[0] = True
        scores = rng.random(40)  # continuous: no ties
        ranked = truth[np.argsort(-scores)]
        ours = M.average_precision(ranked, int(truth.sum()))
        assert ours == pytest.approx(skm.average_precision_score(truth, scores))


def test_map_at_r_matches_slow_loop():
    rng = np.random.default_rng(2)
    rel = rng.random((30, 12)) < 0.3
    n_rel = rel.sum(1) + rng.integers(0, 3, 30)
    expected = []
    for row, r in zip(rel, n_rel):
        if r == 0:
            continue
        hits, total = 0, 0.0
        for i in range(min(r, len(row))):
            if row[i]:
                hits += 1
                total += hits / (i + 1)
        expected.append(total / r)
    assert M.map_at_r(rel, n_rel) == pytest.approx(np.mean(expected))


def test_relevance_from_labels_padding_and_ignore():
    ids = np.array([[0, 2, -1], [1, 0, 2]])
    q, g = np.array([5, 7]), np.array([5, 7, 5])
    np.testing.assert_array_equal(M.relevance_from_labels(ids, q, g),
                                  [[True, True, False], [True, False, False]])
    expected = [[True, False, False], [True, False, False]]  # query 0's own id 0 dropped
    for ignore in ([{0}, set()], np.array([0, -1]), [0, -1],
                   np.array([[True, False, False], [False, False, False]])):
        np.testing.assert_array_equal(M.relevance_from_labels(ids, q, g, ignore=ignore), expected)
    # padding with a label that would match (-1 must not index the last gallery item)
    np.testing.assert_array_equal(
        M.relevance_from_labels(np.array([[-1, -1]]), np.array([5]), np.array([7, 5])),
        [[False, False]])
    with pytest.raises(InputError):
        M.relevance_from_labels(np.array([[3]]), np.array([5]), g)


def test_count_relevant_subtracts_ignored_items():
    q, g = np.array([5, 7, 9]), np.array([5, 7, 5, 5])
    np.testing.assert_array_equal(M.count_relevant(q, g), [3, 1, 0])
    np.testing.assert_array_equal(M.count_relevant(q, g, np.array([0, 0, -1])), [2, 1, 0])
    np.testing.assert_array_equal(M.count_relevant(q, g, [{0, 2}, {1}, {3}]), [1, 0, 0])


def test_query_is_not_its_own_match_with_exclude_self():
    # leave-one-out: distance 0 to itself would make recall@1 trivially 1
    x = np.array([[0.0], [0.1], [5.0], [5.05]])
    labels = np.array([0, 1, 1, 0])
    d = np.abs(x - x.T)
    rel, n_rel = M.ranked_relevance(d, labels, labels, exclude_self=False)
    assert M.recall_at_k(rel, 1, n_rel) == 1.0
    rel, n_rel = M.ranked_relevance(d, labels, labels, exclude_self=True)
    np.testing.assert_array_equal(n_rel, [1, 1, 1, 1])
    assert rel.shape == (4, 3)
    assert M.recall_at_k(rel, 1, n_rel) == 0.0  # every nearest other item has the other label


def test_ranked_relevance_breaks_ties_by_gallery_index():
    d = np.array([[1.0, 1.0, 0.0, 1.0]])
    rel, n_rel = M.ranked_relevance(d, np.array(["b"]), np.array(["a", "b", "a", "b"]))
    np.testing.assert_array_equal(rel, [[False, False, True, True]])  # order 2, 0, 1, 3
    assert n_rel.tolist() == [2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.int16,
                                   np.int32, np.int64, np.uint8, np.uint16, np.uint32])
def test_row_argsort_matches_numpy_stable_sort(dtype):
    # the fast paths (packed 32-bit keys, float64 re-sort of tied rows) must equal
    # numpy's stable argsort, NaN and signed zero included
    rng = np.random.default_rng(10)
    signed = not np.issubdtype(dtype, np.unsignedinteger)
    x = rng.integers(-3 if signed else 0, 4, (40, 33)).astype(dtype)  # many ties
    if np.issubdtype(dtype, np.floating):
        x[3, 5] = np.nan
        x[7, [1, 9]] = np.nan
        x[8, 2], x[8, 3] = -0.0, 0.0
        x[9, :] = np.nan
    y = (rng.random((20, 50)) * 200 - (100 if signed else 0)).astype(dtype)
    for arr in (x, y):
        np.testing.assert_array_equal(M._argsort_rows_stable(arr),
                                      np.argsort(arr, axis=1, kind="stable"))
    if dtype == np.float32:
        ext = np.array([[np.inf, -np.inf, 3e38, -3e38, 1e-45, -1e-45, 0.0]], np.float32)
        np.testing.assert_array_equal(M._argsort_rows_stable(ext),
                                      np.argsort(ext, axis=1, kind="stable"))


def _slow_ranked_relevance(d, q, g, self_index):
    rows, counts = [], []
    for i in range(d.shape[0]):
        order = sorted(range(d.shape[1]), key=lambda j: (d[i, j], j))
        order = [j for j in order if j != self_index[i]]
        rows.append([g[j] == q[i] for j in order])
        counts.append(sum(g[j] == q[i] for j in range(d.shape[1]) if j != self_index[i]))
    width = max(len(r) for r in rows)
    return np.array([r + [False] * (width - len(r)) for r in rows]), np.array(counts)


def test_ranked_relevance_matches_slow_loop(monkeypatch):
    monkeypatch.setattr(M, "ROW_CHUNK", 7)  # exercise the chunked path
    rng = np.random.default_rng(3)
    d = rng.integers(0, 5, size=(23, 19)).astype(float)  # many ties
    q, g = rng.integers(0, 4, 23), rng.integers(0, 4, 19)
    self_index = rng.integers(-1, 19, 23)
    rel, n_rel = M.ranked_relevance(d, q, g, exclude_self=True, self_index=self_index)
    exp_rel, exp_n = _slow_ranked_relevance(d, q, g, self_index)
    np.testing.assert_array_equal(rel, exp_rel)
    np.testing.assert_array_equal(n_rel, exp_n)
    with pytest.raises(InputError, match="square"):
        M.ranked_relevance(d, q, g, exclude_self=True)


# --------------------------------------------------------------------------- verification
S = np.array([0.9, 0.8, 0.7, 0.6])
Y = np.array([True, False, True, False])


def test_roc_curve_hand_computed():
    far, tar, thr = M.roc_curve(S, Y)
    np.testing.assert_allclose(far, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.7, 0.6])
    assert M.roc_auc(S, Y) == pytest.approx(0.75)
    assert M.equal_error_rate(S, Y) == pytest.approx(0.5)


def test_roc_curve_and_auc_match_sklearn_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(10):
        y = rng.random(300) < 0.4
        s = np.round(rng.normal(size=300) + y, 1)  # rounding makes ties
        far, tar, thr = M.roc_curve(s, y)
        sk_far, sk_tar, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(far, sk_far)
        np.testing.assert_allclose(tar, sk_tar)
        np.testing.assert_allclose(thr[1:], sk_thr[1:])
        assert M.roc_auc(s, y) == pytest.approx(skm.roc_auc_score(y, s))


def test_equal_error_rate_interpolates_and_is_zero_when_separated():
    assert M.equal_error_rate([4, 3, 2, 1], [1, 1, 0, 0]) == 0.0
    # FAR-FRR goes -0.5 -> +0.5 between thresholds 3 and 2: midpoint of FAR 0..1
    assert M.equal_error_rate([3, 2, 1], [1, 0, 1]) == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    y = rng.random(2000) < 0.5
    s = rng.normal(size=2000) + 2 * y
    far, tar, _ = M.roc_curve(s, y)
    i = np.argmin(np.abs(far - (1 - tar)))
    assert M.equal_error_rate(s, y) == pytest.approx(far[i], abs=0.01)


def test_tar_at_far_is_conservative():
    assert M.tar_at_far(S, Y, 0.0) == 0.5
    assert M.tar_at_far(S, Y, 0.49) == 0.5
    assert M.tar_at_far(S, Y, 0.5) == 1.0
    np.testing.assert_allclose(M.tar_at_far(S, Y, [0.0, 0.5, 1.0]), [0.5, 1, 1])
    with pytest.raises(InputError):
        M.tar_at_far(S, Y, 1.5)


def test_accuracy_and_best_threshold_hand_computed():
    assert M.accuracy_at_threshold(S, Y, 0.7) == 0.75  # score == threshold counts as same
    assert M.accuracy_at_threshold(S, Y, 0.71) == 0.5
    # 0.65 and 0.85 both give 0.75; the lower one wins
    assert M.best_threshold(S, Y) == pytest.approx(0.65)
    assert M.best_threshold([1, 2], [True, True]) < 1  # accept everything
    assert M.best_threshold([1, 2], [False, False]) > 2  # reject everything
    assert M.best_threshold([1e20], [False]) > 1e20


def test_best_threshold_reaches_brute_force_maximum():
    rng = np.random.default_rng(6)
    for _ in range(10):
        y = rng.random(200) < 0.5
        s = np.round(rng.normal(size=200) + y, 1)
        candidates = np.r_[np.unique(s), np.inf]
        best = max(np.mean((s >= t) == y) for t in candidates)
        assert M.accuracy_at_threshold(s, y, M.best_threshold(s, y)) == pytest.approx(best)


def test_kfold_chooses_the_threshold_on_the_other_folds():
    scores = np.array([1, 2, 3, 4, 10, 20, 30, 40], float)
    same = np.array([0, 0, 1, 1, 0, 0, 1, 1], bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = M.kfold_verification(scores, same, folds)
    # a threshold tuned on the held-out fold would give 1.0; tuned on the other fold: 0.5
    assert out["thresholds"] == [pytest.approx(25.0), pytest.approx(2.5)]
    assert out["fold_accuracies"] == [0.5, 0.5]
    assert out["mean_accuracy"] == 0.5 and out["std_accuracy"] == 0.0
    with pytest.raises(InputError):
        M.kfold_verification(scores, same, np.zeros(8, int))


def test_kfold_matches_slow_loop():
    rng = np.random.default_rng(7)
    y = rng.random(600) < 0.5
    s = rng.normal(size=600) + 1.5 * y
    folds = np.repeat(np.arange(10), 60)
    out = M.kfold_verification(s, y, folds)
    accs = []
    for f in range(10):
        tr, te = folds != f, folds == f
        cands = np.r_[np.unique(s[tr]), np.inf]
        train_acc = [np.mean((s[tr] >= t) == y[tr]) for t in cands]
        # the chosen threshold is optimal on the training folds...
        ours = out["thresholds"][f]
        assert np.mean((s[tr] >= ours) == y[tr]) == pytest.approx(max(train_acc))
        # ...and the reported accuracy is measured on the held-out fold only
        accs.append(np.mean((s[te] >= ours) == y[te]))
    assert out["fold_accuracies"] == pytest.approx(accs)
    assert out["mean_accuracy"] == pytest.approx(np.mean(accs))


def test_distances_to_scores_flips_direction():
    d = np.array([0.1, 2.0])
    y = np.array([True, False])
    assert M.roc_auc(M.distances_to_scores(d), y) == 1.0


# --------------------------------------------------------------------------- identification
# probes 0-2 mated, 3-4 non-mated
LABELS = np.array([[1, 2, 3], [3, 2, 1], [1, 1, 3], [2, 1, 3], [3, 1, 2]])
SCORES = np.array([[0.65, 0.5, 0.1], [0.8, 0.7, 0.1], [0.6, 0.55, 0.5],
                   [0.7, 0.2, 0.1], [0.4, 0.3, 0.2]])
PROBES = np.array([1, 2, 3, 9, 8])
MATED = np.array([True, True, True, False, False])


def test_rank_k_identification_counts_distinct_identities():
    assert M.rank_k_identification_rate(LABELS, PROBES, MATED, 1) == pytest.approx(1 / 3)
    # probe 2's true identity is the 2nd distinct identity (gallery 1 appears twice)
    assert M.rank_k_identification_rate(LABELS, PROBES, MATED, 2) == 1.0
    with pytest.raises(InputError):
        M.rank_k_identification_rate(LABELS, PROBES, np.zeros(5, bool), 1)


def test_dir_at_fpir_hand_computed():
    # non-mated top scores: 0.7, 0.4
    assert M.dir_at_fpir(LABELS, SCORES, PROBES, MATED, 0.0) == 0.0  # t=0.7, 0.65 fails
    assert M.dir_at_fpir(LABELS, SCORES, PROBES, MATED, 0.5) == pytest.approx(1 / 3)  # t=0.4
    assert M.dir_at_fpir(LABELS, SCORES, PROBES, MATED, 1.0) == pytest.approx(1 / 3)
    fpir, dir_, thr = M.dir_fpir_curve(LABELS, SCORES, PROBES, MATED)
    np.testing.assert_allclose(fpir, [0, 0.5, 1])
    np.testing.assert_allclose(dir_, [0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(thr, [0.7, 0.4, -np.inf])
    # a mate scoring exactly the threshold does not pass (pass = strictly above), so at
    # FPIR 0 the non-mated probe scoring 0.5 is rejected and so is the tied mate
    tie = (np.array([[1], [2]]), np.array([[0.5], [0.5]]), np.array([1, 9]), np.array([True, False]))
    assert M.dir_at_fpir(*tie, 0.0) == 0.0
    assert M.dir_at_fpir(*tie, 1.0) == 1.0
    out = M.identification_rates(LABELS, SCORES, PROBES, MATED, ranks=(1, 2, 5), fpirs=(0.5,))
    assert out == {"n_mated": 3, "n_nonmated": 2, "rank_k": {"1": pytest.approx(1 / 3), "2": 1.0},
                   "dir_at_fpir": {"0.5": pytest.approx(1 / 3)}}


def test_open_set_rates_match_slow_loop():
    rng = np.random.default_rng(8)
    n_probes, n_gallery = 200, 30
    gallery = rng.integers(0, 20, n_gallery)  # repeated identities
    probes = rng.integers(0, 25, n_probes)  # 20..24 never enrolled
    mated = np.isin(probes, gallery)
    d = rng.random((n_probes, n_gallery)) - 0.5 * (gallery[None, :] == probes[:, None])
    labels, scores = M.rank_gallery(d, gallery)
    for k in (1, 3, 5):
        hits = []
        for i in np.flatnonzero(mated):
            seen = []
            for j in np.argsort(d[i], kind="stable"):
                if gallery[j] not in seen:
                    seen.append(gallery[j])
            hits.append(probes[i] in seen[:k])
        assert M.rank_k_identification_rate(labels, probes, mated, k) == pytest.approx(np.mean(hits))
    nm_top = np.sort(scores[~mated, 0])[::-1]
    for fpir in (0.0, 0.05, 0.2, 0.5):
        allowed = int(np.floor(fpir * nm_top.size))
        t = nm_top[allowed] if allowed < nm_top.size else -np.inf
        assert np.mean(nm_top > t) <= fpir + 1e-12
        expected = np.mean([labels[i, 0] == probes[i] and scores[i, 0] > t
                            for i in np.flatnonzero(mated)])
        assert M.dir_at_fpir(labels, scores, probes, mated, fpir) == pytest.approx(expected)
    # DIR never exceeds the rank-1 rate; the curve ends there
    _, dir_, _ = M.dir_fpir_curve(labels, scores, probes, mated)
    assert dir_[-1] == pytest.approx(M.rank_k_identification_rate(labels, probes, mated, 1))
    assert np.all(np.diff(dir_) >= 0)


# --------------------------------------------------------------------------- duplicates, ANN
def test_pair_precision_recall_f1_unordered():
    out = M.pair_precision_recall_f1([("a", "b"), ("b", "c"), ("c", "d"), ("b", "a")],
                                     [("b", "a"), ("c", "e")])
    assert out == {"precision": pytest.approx(1 / 3), "recall": 0.5, "f1": pytest.approx(0.4),
                   "tp": 1, "fp": 2, "fn": 1}
    assert M.pair_precision_recall_f1([], [])["f1"] == 1.0
    assert M.pair_precision_recall_f1([], [(1, 2)])["recall"] == 0.0
    assert M.pair_precision_recall_f1([(1, 2)], [])["precision"] == 0.0
    with pytest.raises(InputError):
        M.pair_precision_recall_f1([("a", "a")], [])
    with pytest.raises(InputError):
        M.pair_precision_recall_f1([("a", "b", "c")], [])


def test_per_group_scores_recall_by_kind():
    true = [("x", "x_flip"), ("x", "x_gray"), ("y", "y_flip"), ("z", "z_crop")]
    kinds = {("x_flip", "x"): "hflip", ("x", "x_gray"): "grayscale", ("y", "y_flip"): "hflip"}
    pred = [("x", "x_flip"), ("x_gray", "x"), ("y", "q")]
    out = M.per_group_scores(pred, true, kinds)
    assert out["by_kind"] == {"grayscale": {"found": 1, "total": 1, "recall": 1.0},
                              "hflip": {"found": 1, "total": 2, "recall": 0.5},
                              "unknown": {"found": 0, "total": 1, "recall": 0.0}}
    assert out["overall"]["precision"] == pytest.approx(2 / 3)
    assert out["overall"]["recall"] == 0.5


def test_ann_recall_at_k_hand_computed():
    approx = np.array([[1, 2, 3, -1], [5, 5, 6, 7]])
    exact = np.array([[3, 1, 9, 8], [5, 6, 7, 8]])
    assert M.ann_recall_at_k(approx, exact, 2) == pytest.approx(0.5)  # duplicate 5 counts once
    assert M.ann_recall_at_k(approx, exact, 3) == pytest.approx(2 / 3)
    assert M.ann_recall_at_k(np.array([[-1, -1]]), np.array([[0, 1]]), 2) == 0.0
    assert M.ann_recall_at_k(exact, exact, 4) == 1.0
    with pytest.raises(InputError):
        M.ann_recall_at_k(approx[:, :2], exact, 3)


def test_ann_recall_matches_set_loop():
    rng = np.random.default_rng(9)
    approx = np.array([rng.permutation(50)[:10] for _ in range(40)])
    exact = np.array([rng.permutation(50)[:10] for _ in range(40)])
    for k in (1, 5, 10):
        expected = np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)])
        assert M.ann_recall_at_k(approx, exact, k) == pytest.approx(expected)
