"""Miners on hand-built distance matrices (expected index sets worked out by hand),
plus consistency with the miner classes (agreement with pytorch-metric-learning's miners:
bench/losses_vs_pml.py, run in the bench venv)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lookalike.errors import ConfigError, InputError  # noqa: E402
from lookalike.training import miners as M  # noqa: E402


def sym(n, entries):
    d = torch.zeros(n, n, dtype=torch.float64)
    for (i, j), v in entries.items():
        d[i, j] = d[j, i] = v
    return d


def triples(t):
    return set(zip(*(x.tolist() for x in t)))


# Five items: 0,1 class A; 2,3 class B; 4 class C (no positive).
LABELS5 = torch.tensor([0, 0, 1, 1, 2])
D5 = sym(5, {(0, 1): 0.5, (0, 2): 0.3, (0, 3): 0.9, (0, 4): 0.7,
             (1, 2): 0.6, (1, 3): 0.2, (1, 4): 1.0,
             (2, 3): 0.25, (2, 4): 0.5,
             (3, 4): 0.8})

# Six items: 0,1,2 class 0; 3,4 class 1; 5 class 2.
LABELS6 = torch.tensor([0, 0, 0, 1, 1, 2])
D6 = sym(6, {(0, 1): 0.2, (0, 2): 0.7, (1, 2): 0.4, (3, 4): 0.5,
             (0, 3): 0.6, (0, 4): 0.3, (0, 5): 0.9, (1, 3): 0.8, (1, 4): 0.35, (1, 5): 0.1,
             (2, 3): 0.45, (2, 4): 0.95, (2, 5): 0.5, (3, 5): 0.65, (4, 5): 0.25})


def test_semihard_all_and_hardest():
    # (0,1) d=.5: window (.5,.8) -> neg 4 (.7).  (1,0) d=.5: negs of 1 -> 2 (.6).
    # (2,3) d=.25: window (.25,.55) -> 0 (.3), 4 (.5).  (3,2): no neg of 3 in (.25,.55).
    got = M.semihard_triplets(D5, LABELS5, margin=0.3)
    assert triples(got) == {(0, 1, 4), (1, 0, 2), (2, 3, 0), (2, 3, 4)}
    hardest = M.semihard_triplets(D5, LABELS5, margin=0.3, select="hardest")
    assert triples(hardest) == {(0, 1, 4), (1, 0, 2), (2, 3, 0)}
    # with margin 0.1 only (2,3,0) fits: .25 < .3 < .35
    assert triples(M.semihard_triplets(D5, LABELS5, margin=0.1)) == {(2, 3, 0)}


def test_semihard_random_picks_one_semihard_negative_per_pair():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        got = triples(M.semihard_triplets(D5, LABELS5, margin=0.3, select="random", generator=g))
        assert {(a, p) for a, p, _ in got} == {(0, 1), (1, 0), (2, 3)}
        assert got <= {(0, 1, 4), (1, 0, 2), (2, 3, 0), (2, 3, 4)}
        seen |= got
    assert {(2, 3, 0), (2, 3, 4)} <= seen  # both candidates get drawn


def test_hard_triplets_hand_built():
    # nearest negatives: 0->2 (.3), 1->3 (.2), 2->0 (.3), 3->1 (.2)
    # kept when d(a,n*) < d(a,p): (0,1): .3<.5 yes; (1,0): .2<.5 yes; (2,3): .3<.25 no; (3,2): .2<.25 yes
    assert triples(M.hard_triplets(D5, LABELS5)) == {(0, 1, 2), (1, 0, 3), (3, 2, 1)}
    # a margin of .1 also keeps (2,3,0): .3 < .35
    assert triples(M.hard_triplets(D5, LABELS5, margin=0.1)) == {(0, 1, 2), (1, 0, 3), (2, 3, 0), (3, 2, 1)}


def test_batch_hard_hand_built():
    a, p, n = M.batch_hard_triplets(D6, LABELS6)
    # anchor 5 has no positive; anchors in order
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == [
        (0, 2, 4), (1, 2, 5), (2, 0, 3), (3, 4, 2), (4, 3, 5)]
    assert a.dtype == p.dtype == n.dtype == torch.int64


def test_margin_pairs_hand_built():
    a1, p, a2, n = M.margin_pairs(D6, LABELS6, pos_margin=0.3, neg_margin=0.5)
    assert set(zip(a1.tolist(), p.tolist())) == {(0, 2), (2, 0), (1, 2), (2, 1), (3, 4), (4, 3)}
    # d(2,5) = 0.5 is not < 0.5
    assert set(zip(a2.tolist(), n.tolist())) == {(0, 4), (4, 0), (1, 4), (4, 1), (1, 5), (5, 1),
                                                 (2, 3), (3, 2), (4, 5), (5, 4)}


def test_all_pairs_and_triplets_counts():
    a1, p, a2, n = M.all_pairs(LABELS6)
    assert len(a1) == 3 * 2 + 2 * 1 and len(a2) == 36 - 6 - 8
    a, p, n = M.all_triplets(LABELS6)
    # class 0: 3 anchors x 2 positives x 3 negatives; class 1: 2 x 1 x 4
    assert len(a) == 18 + 8
    assert (LABELS6[a] == LABELS6[p]).all() and (LABELS6[a] != LABELS6[n]).all() and (a != p).all()


def test_random_triplets_valid_and_seeded():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    t1 = M.random_triplets(labels, 3, torch.Generator().manual_seed(5))
    t2 = M.random_triplets(labels, 3, torch.Generator().manual_seed(5))
    t3 = M.random_triplets(labels, 3, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(t1, t2))
    assert not all(torch.equal(x, y) for x, y in zip(t1, t3))
    a, p, n = t1
    assert a.tolist() == [i for i in [0, 1, 2, 3, 4, 6, 7] for _ in range(3)]  # 5 has no positive
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    miner = M.RandomMiner(triplets_per_anchor=2, seed=1)
    first = miner(torch.randn(8, 3), labels)
    second = miner(torch.randn(8, 3), labels)
    again = M.RandomMiner(triplets_per_anchor=2, seed=1)(torch.randn(8, 3), labels)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert len(first[0]) == len(second[0]) == 14


def test_pairwise_distances_against_loops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    for kind in M.DISTANCES:
        d = M.pairwise_distances(x, kind)
        for i in range(6):
            for j in range(6):
                u, v = x[i], x[j]
                if kind == "cosine":
                    want = 1 - float(u @ v / (u.norm() * v.norm()))
                else:
                    want = float(((u - v) ** 2).sum())
                    want = want if kind == "squared_euclidean" else want ** 0.5
                assert d[i, j].item() == pytest.approx(want, abs=1e-12)
    # exact zeros on the diagonal and a finite gradient through them
    xr = x.clone().requires_grad_(True)
    M.pairwise_distances(xr, "euclidean").sum().backward()
    assert torch.isfinite(xr.grad).all()


def test_miner_classes_use_normalised_distances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=g)
    y = torch.arange(4).repeat_interleave(3)
    dist = M.pairwise_distances(torch.nn.functional.normalize(x, dim=1), "euclidean")
    assert triples(M.BatchHardMiner()(x, y)) == triples(M.batch_hard_triplets(dist, y))
    assert triples(M.SemiHardMiner(margin=0.4)(x, y)) == triples(M.semihard_triplets(dist, y, 0.4))
    assert triples(M.HardMiner()(x, y)) == triples(M.hard_triplets(dist, y))
    assert M.PairMarginMiner(0.2, 0.9)(x, y)[0].numel() > 0
    x.requires_grad_(True)
    M.BatchHardMiner()(x, y)  # mining never builds a graph
    assert x.grad is None


def test_miner_errors():
    with pytest.raises(ConfigError):
        M.SemiHardMiner(select="worst")
    with pytest.raises(ConfigError):
        M.BatchHardMiner(distance="manhattan")
    with pytest.raises(InputError):
        M.batch_hard_triplets(D5, LABELS6)
    with pytest.raises(InputError):
        M.BatchHardMiner()(torch.randn(5), LABELS5)
