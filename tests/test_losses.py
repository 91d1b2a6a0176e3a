"""Every loss against a slow, obvious Python-loop implementation (values and gradients).
(The comparisons with pytorch-metric-learning, a benchmark peer and not a project
dependency, are in bench/losses_vs_pml.py and run in the bench venv.)

The oracles work element by element in float64 on scalar tensors, so autograd gives
their gradients too. Inputs are chosen so hinge terms are partly active (a wrong
margin or sign changes the value) and, for the angular losses, so angles fall on
both sides of the margin's branch points.
"""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from lookalike.errors import ConfigError, InputError  # noqa: E402
from lookalike.training import losses as L  # noqa: E402
from lookalike.training.miners import (  # noqa: E402
    BatchHardMiner,
    PairMarginMiner,
    SemiHardMiner,
    pairwise_distances,
)
from lookalike.training.check_batches import CLASSES as C, DIM as D, DT  # noqa: E402
from lookalike.training.check_batches import classification_batch as cls_batch  # noqa: E402
from lookalike.training.check_batches import labelled_batch as batch, with_weight  # noqa: E402


# ----------------------------------------------------------------------------- fixtures / helpers
def unit(v):
    return v / torch.sqrt((v * v).sum())


def sdist(u, v, kind):
    if kind == "cosine":
        return 1 - (u * v).sum() / (torch.sqrt((u * u).sum()) * torch.sqrt((v * v).sum()))
    sq = ((u - v) ** 2).sum()
    return sq if kind == "squared_euclidean" else torch.sqrt(sq)


def dist_table(x, kind, normalize):
    rows = [unit(r) if normalize else r for r in x]
    n = len(rows)
    return [[sdist(rows[i], rows[j], kind) if i != j else None for j in range(n)] for i in range(n)]


def cos_table(x):
    rows = [unit(r) for r in x]
    n = len(rows)
    return [[(rows[i] * rows[j]).sum() for j in range(n)] for i in range(n)]


def relu(v):
    return v if v.item() > 0 else v * 0


def reduce_list(terms, reduction):
    if not terms:
        return torch.zeros((), dtype=DT)
    if reduction == "sum":
        return sum(terms)
    if reduction == "mean_nonzero":
        nz = [t for t in terms if t.item() > 0]
        return sum(nz) / len(nz) if nz else terms[0] * 0
    return sum(terms) / len(terms)


def pos_pairs(y):
    n = len(y)
    return [(i, j) for i in range(n) for j in range(n) if i != j and y[i] == y[j]]


def neg_pairs(y):
    n = len(y)
    return [(i, j) for i in range(n) for j in range(n) if y[i] != y[j]]


def compare(fast_fn, slow_fn, x, extra_fast=(), extra_slow=(), rtol=1e-7, atol=1e-9):
    """Same value and same gradients (embeddings + any learned weights)."""
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    v1 = fast_fn(x1)
    v2 = slow_fn(x2)
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=atol)
    g1 = torch.autograd.grad(v1, [x1, *extra_fast], allow_unused=True)
    g2 = torch.autograd.grad(v2, [x2, *extra_slow], allow_unused=True)
    for a, b in zip(g1, g2):
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    assert g1[0].abs().sum() > 0, "vacuous comparison: zero gradient"
    return v1.item()


# ----------------------------------------------------------------------------- contrastive
def slow_contrastive(x, y, pos_margin, neg_margin, kind, reduction, pairs=None):
    d = dist_table(x, kind, True)
    pp, nn_ = pairs if pairs else (pos_pairs(y.tolist()), neg_pairs(y.tolist()))
    pos = [relu(d[a][p] - pos_margin) for a, p in pp]
    neg = [relu(neg_margin - d[a][n]) for a, n in nn_]
    return reduce_list(pos, reduction) + reduce_list(neg, reduction)


@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero", "sum"])
@pytest.mark.parametrize("kind", ["euclidean", "cosine"])
def test_contrastive_matches_loop(reduction, kind):
    x, y = batch()
    pm, nm = (0.4, 1.1) if kind == "euclidean" else (0.1, 0.6)
    d = pairwise_distances(F.normalize(x, dim=1), kind)
    pos, neg = d[y[:, None] == y[None, :]], d[y[:, None] != y[None, :]]
    # both hinges partly active, so the margins and their signs matter
    assert 0 < (neg < nm).float().mean() < 1
    assert 0 < (pos[pos > 0] > pm).float().mean() < 1
    loss = L.ContrastiveLoss(pos_margin=pm, neg_margin=nm, distance=kind, reduction=reduction)
    compare(lambda e: loss(e, y), lambda e: slow_contrastive(e, y, pm, nm, kind, reduction), x)


def test_contrastive_with_mined_pairs():
    x, y = batch(seed=1)
    pairs = PairMarginMiner(pos_margin=0.4, neg_margin=1.1)(x, y)
    assert len(pairs[0]) and len(pairs[2])
    pp = list(zip(pairs[0].tolist(), pairs[1].tolist()))
    nn_ = list(zip(pairs[2].tolist(), pairs[3].tolist()))
    loss = L.ContrastiveLoss(pos_margin=0.4, neg_margin=1.1)
    compare(lambda e: loss(e, y, pairs),
            lambda e: slow_contrastive(e, y, 0.4, 1.1, "euclidean", "mean", (pp, nn_)), x)


def test_contrastive_with_triplets_counts_repeated_pairs():
    """A triplet tuple becomes pairs (a, p), (a, n); repeated pairs count as often as given."""
    x, y = batch(seed=3)
    a, p, n = SemiHardMiner(margin=0.6)(x, y)
    pp = list(zip(a.tolist(), p.tolist()))
    nn_ = list(zip(a.tolist(), n.tolist()))
    assert len(set(pp)) < len(pp)  # there are repeats
    for reduction in ("mean", "mean_nonzero"):
        loss = L.ContrastiveLoss(pos_margin=0.2, neg_margin=1.0, reduction=reduction)
        compare(lambda e: loss(e, y, (a, p, n)),
                lambda e: slow_contrastive(e, y, 0.2, 1.0, "euclidean", reduction, (pp, nn_)), x)


# ----------------------------------------------------------------------------- NT-Xent
def slow_ntxent(x, y, t, pairs=None):
    s = cos_table(x)
    yl = y.tolist()
    pp, nn_ = pairs if pairs else (pos_pairs(yl), neg_pairs(yl))
    terms = []
    for a, p in pp:
        num = torch.exp(s[a][p] / t)
        den = num + sum((torch.exp(s[a2][n] / t) for a2, n in nn_ if a2 == a), torch.zeros((), dtype=DT))
        terms.append(-torch.log(num / den))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_ntxent_matches_loop(t):
    x, y = batch()
    loss = L.NTXentLoss(temperature=t)
    compare(lambda e: loss(e, y), lambda e: slow_ntxent(e, y, t), x)


def test_ntxent_with_mined_pairs():
    x, y = batch(seed=2)
    pairs = PairMarginMiner(pos_margin=0.3, neg_margin=1.0)(x, y)
    pp = list(zip(pairs[0].tolist(), pairs[1].tolist()))
    nn_ = list(zip(pairs[2].tolist(), pairs[3].tolist()))
    loss = L.NTXentLoss(temperature=0.2)
    compare(lambda e: loss(e, y, pairs), lambda e: slow_ntxent(e, y, 0.2, (pp, nn_)), x)


# ----------------------------------------------------------------------------- triplet
def slow_triplet_all(x, y, margin, kind, reduction):
    d = dist_table(x, kind, True)
    yl = y.tolist()
    n = len(yl)
    terms = [relu(d[a][p] - d[a][q] + margin)
             for a in range(n) for p in range(n) for q in range(n)
             if a != p and yl[a] == yl[p] and yl[q] != yl[a]]
    return reduce_list(terms, reduction)


def slow_triplet_hard(x, y, margin, kind):
    d = dist_table(x, kind, True)
    yl = y.tolist()
    n = len(yl)
    terms = []
    for a in range(n):
        ps = [p for p in range(n) if p != a and yl[p] == yl[a]]
        ns = [q for q in range(n) if yl[q] != yl[a]]
        if not ps or not ns:
            continue
        p = max(ps, key=lambda j: d[a][j].item())
        q = min(ns, key=lambda j: d[a][j].item())
        terms.append(relu(d[a][p] - d[a][q] + margin))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero", "sum"])
@pytest.mark.parametrize("kind", ["euclidean", "squared_euclidean", "cosine"])
def test_triplet_batch_all_matches_loop(reduction, kind):
    x, y = batch()
    margin = 0.3
    loss = L.TripletMarginLoss(margin=margin, strategy="batch-all", distance=kind, reduction=reduction)
    v_fast = compare(lambda e: loss(e, y), lambda e: slow_triplet_all(e, y, margin, kind, reduction), x)
    # a wrong margin would give another value
    assert abs(L.TripletMarginLoss(margin=margin + 0.1, distance=kind, reduction=reduction)(x, y).item()
               - v_fast) > 1e-4


@pytest.mark.parametrize("kind", ["euclidean", "cosine"])
def test_triplet_batch_hard_matches_loop(kind):
    x, y = batch(b_per_class=4, classes=3, seed=3)
    loss = L.TripletMarginLoss(margin=0.2, strategy="batch-hard", distance=kind)
    compare(lambda e: loss(e, y), lambda e: slow_triplet_hard(e, y, 0.2, kind), x)
    # the same as batch-all's loss on BatchHardMiner's triplets
    mined = BatchHardMiner(distance=kind)(x, y)
    torch.testing.assert_close(loss(x, y), L.TripletMarginLoss(margin=0.2, distance=kind)(x, y, mined))


def test_triplet_with_miner_triplets():
    x, y = batch(seed=4)
    miner = SemiHardMiner(margin=0.5)
    a, p, n = miner(x, y)
    assert len(a) > 0

    def slow(e):
        d = dist_table(e, "euclidean", True)
        trip = zip(a.tolist(), p.tolist(), n.tolist())
        return sum(relu(d[i][j] - d[i][k] + 0.5) for i, j, k in trip) / len(a)

    loss = L.TripletMarginLoss(margin=0.5)
    compare(lambda e: loss(e, y, (a, p, n)), slow, x)


# ----------------------------------------------------------------------------- quadruplet
def slow_quadruplet_all(x, y, a1, a2, kind):
    d = dist_table(x, kind, True)
    yl = y.tolist()
    n = len(yl)
    terms = []
    for i in range(n):
        for j in range(n):
            if i == j or yl[i] != yl[j]:
                continue
            for k in range(n):
                if yl[k] == yl[i]:
                    continue
                for l in range(n):
                    if yl[l] == yl[i] or yl[l] == yl[k]:
                        continue
                    terms.append(relu(d[i][j] - d[i][k] + a1) + relu(d[i][j] - d[l][k] + a2))
    return sum(terms) / len(terms)


def slow_quadruplet_hard(x, y, a1, a2, kind):
    d = dist_table(x, kind, True)
    yl = y.tolist()
    n = len(yl)
    terms = []
    for i in range(n):
        ps = [j for j in range(n) if j != i and yl[j] == yl[i]]
        ns = [k for k in range(n) if yl[k] != yl[i]]
        pairs = [(k, l) for k in ns for l in ns if yl[k] != yl[l]]
        if not ps or not ns or not pairs:
            continue
        j = max(ps, key=lambda t: d[i][t].item())
        k = min(ns, key=lambda t: d[i][t].item())
        kk, ll = min(pairs, key=lambda kl: d[kl[0]][kl[1]].item())
        terms.append(relu(d[i][j] - d[i][k] + a1) + relu(d[i][j] - d[ll][kk] + a2))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("kind", ["squared_euclidean", "euclidean"])
def test_quadruplet_batch_all_matches_loop(kind):
    x, y = batch(b_per_class=2, classes=4, seed=5)
    a1, a2 = (1.0, 0.5) if kind == "squared_euclidean" else (0.4, 0.2)
    loss = L.QuadrupletLoss(alpha1=a1, alpha2=a2, distance=kind)
    v = compare(lambda e: loss(e, y), lambda e: slow_quadruplet_all(e, y, a1, a2, kind), x)
    # swapping the two margins changes the value: each term carries its own margin
    assert abs(L.QuadrupletLoss(alpha1=a2, alpha2=a1, distance=kind)(x, y).item() - v) > 1e-4


def test_quadruplet_batch_hard_matches_loop():
    x, y = batch(b_per_class=3, classes=4, seed=6)
    loss = L.QuadrupletLoss(alpha1=1.0, alpha2=0.5, strategy="batch-hard")
    compare(lambda e: loss(e, y), lambda e: slow_quadruplet_hard(e, y, 1.0, 0.5, "squared_euclidean"), x)


def test_quadruplet_with_given_quadruplets():
    x, y = batch(b_per_class=2, classes=4, seed=7)
    yl = y.tolist()
    quads = [(i, j, k, l) for i in range(8) for j in range(8) for k in range(8) for l in range(8)
             if i != j and yl[i] == yl[j] and yl[k] != yl[i] and yl[l] not in (yl[i], yl[k])][::7]
    idx = tuple(torch.tensor(c) for c in zip(*quads))
    loss = L.QuadrupletLoss()

    def slow(e):
        d = dist_table(e, "squared_euclidean", True)
        return sum(relu(d[i][j] - d[i][k] + 1.0) + relu(d[i][j] - d[l][k] + 0.5)
                   for i, j, k, l in quads) / len(quads)

    compare(lambda e: loss(e, y, idx), slow, x)


# ----------------------------------------------------------------------------- multi-similarity, supcon
def slow_ms(x, y, alpha, beta, base):
    s = cos_table(x)
    yl = y.tolist()
    n = len(yl)
    terms = []
    for i in range(n):
        pos = sum((torch.exp(-alpha * (s[i][j] - base)) for j in range(n) if j != i and yl[j] == yl[i]),
                  torch.zeros((), dtype=DT))
        neg = sum((torch.exp(beta * (s[i][j] - base)) for j in range(n) if yl[j] != yl[i]),
                  torch.zeros((), dtype=DT))
        terms.append(torch.log(1 + pos) / alpha + torch.log(1 + neg) / beta)
    return sum(terms) / n


@pytest.mark.parametrize("alpha,beta,base", [(2.0, 50.0, 0.5), (1.0, 10.0, 0.2)])
def test_multi_similarity_matches_loop(alpha, beta, base):
    x, y = batch()
    loss = L.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
    compare(lambda e: loss(e, y), lambda e: slow_ms(e, y, alpha, beta, base), x)


def slow_supcon(x, y, t):
    s = cos_table(x)
    yl = y.tolist()
    n = len(yl)
    terms = []
    for i in range(n):
        ps = [j for j in range(n) if j != i and yl[j] == yl[i]]
        if not ps:
            continue
        den = sum(torch.exp(s[i][a] / t) for a in range(n) if a != i)
        terms.append(-sum(torch.log(torch.exp(s[i][p] / t) / den) for p in ps) / len(ps))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_supcon_matches_loop(t):
    x, y = batch()
    y = y.clone()
    y[0] = 99  # one anchor without positives: left out of the mean
    loss = L.SupConLoss(temperature=t)
    compare(lambda e: loss(e, y), lambda e: slow_supcon(e, y, t), x)


# ----------------------------------------------------------------------------- classification losses
def slow_ce(logit_rows, y):
    terms = []
    for row, t in zip(logit_rows, y.tolist()):
        terms.append(-torch.log(torch.exp(row[t]) / sum(torch.exp(v) for v in row)))
    return sum(terms) / len(terms)


def cos_rows(x, w):
    return [[(unit(xi) * unit(wc)).sum() for wc in w] for xi in x]


def compare_cls(loss, slow, x, y, w, extra=()):
    """Compare a classification loss; gradients w.r.t. embeddings and weight (+extras)."""
    w2 = w.clone().requires_grad_(True)
    extra2 = [e.detach().clone().requires_grad_(True) for e in extra]
    return compare(lambda e: loss(e, y), lambda e: slow(e, y, w2, *extra2), x,
                   extra_fast=[loss.weight, *extra], extra_slow=[w2, *extra2])


def test_softmax_matches_loop():
    x, y, w = cls_batch()
    loss = with_weight(L.SoftmaxLoss(C, D), w)

    def slow(e, y, w2, b2):
        rows = [[(xi * w2[c]).sum() + b2[c] for c in range(C)] for xi in e]
        return slow_ce(rows, y)

    compare_cls(loss, slow, x, y, w, extra=[loss.bias])


def test_center_loss_matches_loop():
    x, y, w = cls_batch(1)
    loss = with_weight(L.CenterLoss(C, D, lambda_c=0.7), w)

    def slow(e, y, w2, b2, c2):
        rows = [[(xi * w2[c]).sum() + b2[c] for c in range(C)] for xi in e]
        centre = sum(((xi - c2[t]) ** 2).sum() for xi, t in zip(e, y.tolist())) / len(e)
        return slow_ce(rows, y) + 0.7 / 2 * centre

    compare_cls(loss, slow, x, y, w, extra=[loss.bias, loss.centers])


def test_center_loss_sgd_moves_centres_like_the_paper():
    """One SGD step at center_lr_from_alpha reproduces the paper's centre update
    c_j -= alpha * sum_i (c_j - x_i) / (1 + n_j) (P x K batch: n_j = K)."""
    torch.manual_seed(0)
    p, k, alpha, lam = 3, 4, 0.5, 0.01
    loss = L.CenterLoss(p, 6, lambda_c=lam).double()
    x = torch.randn(p * k, 6, dtype=DT)
    y = torch.arange(p).repeat_interleave(k)
    before = loss.centers.detach().clone()
    center_lr = L.CenterLoss.center_lr_from_alpha(alpha, lam, p * k, k)
    opt = torch.optim.SGD(loss.param_groups(lr=0.1, center_lr=center_lr))
    opt.zero_grad()
    loss(x, y).backward()
    opt.step()
    for j in range(p):
        members = x[y == j]
        expected = before[j] - alpha * (before[j] - members).sum(0) / (1 + k)
        torch.testing.assert_close(loss.centers[j].detach(), expected)


@pytest.mark.parametrize("s", [1.0, 16.0])
def test_normface_matches_loop(s):
    x, y, w = cls_batch(2)
    loss = with_weight(L.NormalizedSoftmaxLoss(C, D, s=s), w)

    def slow(e, y, w2):
        return slow_ce([[s * c for c in row] for row in cos_rows(e, w2)], y)

    compare_cls(loss, slow, x, y, w)


def slow_psi(c, m):
    theta = math.acos(max(-1.0, min(1.0, c.item())))
    k = min(m - 1, int(math.floor(theta * m / math.pi)))
    return (-1) ** k * torch.cos(m * torch.acos(c)) - 2 * k


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_matches_loop(m):
    x, y, w = cls_batch(3)
    loss = with_weight(L.SphereFaceLoss(C, D, m=m), w)

    def slow(e, y, w2):
        rows = []
        for xi, row, t in zip(e, cos_rows(e, w2), y.tolist()):
            nx = torch.sqrt((xi * xi).sum())
            rows.append([nx * (slow_psi(c, m) if j == t else c) for j, c in enumerate(row)])
        return slow_ce(rows, y)

    compare_cls(loss, slow, x, y, w)


def test_sphereface_psi_is_monotonic_and_continuous():
    loss = L.SphereFaceLoss(3, 2, m=4).double()
    theta = torch.linspace(0, math.pi, 2001, dtype=DT)
    psi = loss.psi(torch.cos(theta))
    assert (psi[1:] - psi[:-1] <= 1e-12).all()
    assert (psi[1:] - psi[:-1]).abs().max() < 0.05  # no jumps at the k boundaries
    torch.testing.assert_close(psi[theta < math.pi / 4], torch.cos(4 * theta[theta < math.pi / 4]))
    assert psi[-1].item() == pytest.approx(1 - 2 * 4)


def test_sphereface_lambda_annealing_matches_loop():
    x, y, w = cls_batch(4)
    loss = with_weight(L.SphereFaceLoss(C, D, m=4, lambda_annealing=True), w).train()

    def slow(e, y, w2, it):
        lam = max(5.0, 1000.0 * (1 + 0.12 * it) ** -1.0)
        rows = []
        for xi, row, t in zip(e, cos_rows(e, w2), y.tolist()):
            nx = torch.sqrt((xi * xi).sum())
            rows.append([nx * ((lam * c + slow_psi(c, 4)) / (1 + lam) if j == t else c)
                         for j, c in enumerate(row)])
        return slow_ce(rows, y)

    for it in (0, 1, 2):
        assert int(loss.iteration) == it
        compare_cls(loss, lambda e, y, w2: slow(e, y, w2, it), x, y, w)
    loss.iteration.fill_(10_000)  # late in training lambda bottoms out at lambda_min
    assert loss.current_lambda() == 5.0
    loss.eval()
    loss(x, y)
    assert int(loss.iteration) == 10_000  # eval forward does not advance the schedule


@pytest.mark.parametrize("s,m", [(64.0, 0.35), (10.0, 0.2)])
def test_cosface_matches_loop(s, m):
    x, y, w = cls_batch(5)
    loss = with_weight(L.CosFaceLoss(C, D, s=s, m=m), w)

    def slow(e, y, w2):
        return slow_ce([[s * (c - m) if j == t else s * c for j, c in enumerate(row)]
                        for row, t in zip(cos_rows(e, w2), y.tolist())], y)

    compare_cls(loss, slow, x, y, w)


def slow_arc_target(c, m, easy):
    theta = torch.acos(c)
    if easy:
        return torch.cos(theta + m) if c.item() > 0 else c
    # the obvious statement: the margin applies while theta + m stays within pi
    if theta.item() + m <= math.pi:
        return torch.cos(theta + m)
    return c - m * math.sin(m)


@pytest.mark.parametrize("easy", [False, True])
@pytest.mark.parametrize("s,m", [(64.0, 0.5), (8.0, 0.3)])
def test_arcface_matches_loop(s, m, easy):
    x, y, w = cls_batch(6)
    loss = with_weight(L.ArcFaceLoss(C, D, s=s, m=m, easy_margin=easy), w)
    theta = torch.acos(F.cosine_similarity(x, w[y]))
    assert (theta > math.pi - m).any() and (theta < math.pi / 2).any()  # both branches used

    def slow(e, y, w2):
        return slow_ce([[s * slow_arc_target(c, m, easy) if j == t else s * c for j, c in enumerate(row)]
                        for row, t in zip(cos_rows(e, w2), y.tolist())], y)

    compare_cls(loss, slow, x, y, w)


def test_arcface_target_is_monotonic():
    loss = L.ArcFaceLoss(2, 2, m=0.5).double()
    theta = torch.linspace(0, math.pi, 4001, dtype=DT)
    t = loss.margin_cosine(torch.cos(theta))
    assert (t[1:] - t[:-1] <= 1e-12).all()
    # fallback value at the far end: cos(pi) - m sin(m)
    assert t[-1].item() == pytest.approx(-1 - 0.5 * math.sin(0.5))


@pytest.mark.parametrize("m1,m2,m3", [(1.0, 0.5, 0.0), (1.2, 0.3, 0.1), (2.0, 0.0, 0.0), (1.0, 0.0, 0.35)])
def test_combined_margin_matches_loop(m1, m2, m3):
    x, y, w = cls_batch(7)
    s = 30.0
    loss = with_weight(L.CombinedMarginLoss(C, D, s=s, m1=m1, m2=m2, m3=m3), w)
    theta_b = (math.pi - m2) / m1

    def target(c):
        theta = torch.acos(c)
        if theta.item() <= theta_b:
            return torch.cos(m1 * theta + m2) - m3
        return c - m3 - (1 + math.cos(theta_b))

    def slow(e, y, w2):
        return slow_ce([[s * target(c) if j == t else s * c for j, c in enumerate(row)]
                        for row, t in zip(cos_rows(e, w2), y.tolist())], y)

    compare_cls(loss, slow, x, y, w)


def test_combined_margin_special_cases():
    """(1, m, 0) is ArcFace inside theta <= pi - m; (1, 0, m) is CosFace everywhere."""
    theta = torch.linspace(1e-3, math.pi - 0.5 - 1e-3, 500, dtype=DT)
    c = torch.cos(theta)
    comb = L.CombinedMarginLoss(2, 2, m1=1.0, m2=0.5, m3=0.0)
    arc = L.ArcFaceLoss(2, 2, m=0.5)
    torch.testing.assert_close(comb.margin_cosine(c), arc.margin_cosine(c), rtol=0, atol=1e-6)
    full = torch.cos(torch.linspace(0, math.pi, 500, dtype=DT))
    cosface = L.CombinedMarginLoss(2, 2, m1=1.0, m2=0.0, m3=0.35).margin_cosine(full)
    torch.testing.assert_close(cosface, full.clamp(-1 + 1e-7, 1 - 1e-7) - 0.35)
    t = L.CombinedMarginLoss(2, 2, m1=1.5, m2=0.3, m3=0.1).margin_cosine(full)
    assert (t[1:] - t[:-1] <= 1e-12).all()


@pytest.mark.parametrize("include_positive", [True, False])
@pytest.mark.parametrize("scale", [1.0, 9.0])
def test_proxy_nca_matches_loop(include_positive, scale):
    x, y, w = cls_batch(8)
    loss = with_weight(L.ProxyNCALoss(C, D, softmax_scale=scale, include_positive=include_positive), w)
    assert loss.proxies is loss.weight

    def slow(e, y, w2):
        terms = []
        for xi, t in zip(e, y.tolist()):
            logits = [-scale * ((unit(xi) - unit(pc)) ** 2).sum() for pc in w2]
            den = sum(torch.exp(v) for j, v in enumerate(logits) if include_positive or j != t)
            terms.append(-torch.log(torch.exp(logits[t]) / den))
        return sum(terms) / len(terms)

    compare_cls(loss, slow, x, y, w)


# ----------------------------------------------------------------------------- registry and contract
def test_package_import_stays_light():
    import subprocess
    import sys
    code = ("import sys, lookalike.training as t; assert 'torch' not in sys.modules; "
            "t.ArcFaceLoss; assert 'torch' in sys.modules; print(sorted(t.__all__)[:2])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr



def test_registry_names_flags_and_errors():
    expected = {"contrastive", "ntxent", "triplet", "triplet-hard", "quadruplet", "multi-similarity",
                "supcon", "proxy-nca", "softmax", "center", "normface", "sphereface", "cosface",
                "arcface", "combined"}
    assert set(L.LOSSES) == expected
    needs = {n for n in expected if L.loss_needs_num_classes(n)}
    assert needs == {"proxy-nca", "softmax", "center", "normface", "sphereface", "cosface",
                     "arcface", "combined"}
    assert L.make_loss("triplet-hard").strategy == "batch-hard"
    assert L.make_loss("arcface", 10, 8, s=30, m=0.4).m == 0.4
    assert "margin" in L.loss_parameters("triplet") and "strategy" not in L.loss_parameters("triplet")
    with pytest.raises(ConfigError, match="valid"):
        L.make_loss("nope")
    with pytest.raises(ConfigError, match="margin"):
        L.make_loss("arcface", 10, 8, margin=0.5)  # paper name is m
    with pytest.raises(ConfigError, match="num_classes"):
        L.make_loss("cosface")
    with pytest.raises(ConfigError):
        L.make_loss("triplet", reduction="avg")


def test_bad_inputs_raise_input_error():
    loss = L.ArcFaceLoss(3, 4)
    with pytest.raises(InputError):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))      # wrong dim
    with pytest.raises(InputError):
        loss(torch.randn(4, 4), torch.tensor([0, 1, 3, 0]))      # label out of range
    with pytest.raises(InputError):
        L.TripletMarginLoss()(torch.randn(4, 4), torch.tensor([0.0, 1, 1, 0]))  # float labels
    with pytest.raises(InputError):
        L.TripletMarginLoss()(torch.randn(4, 4), torch.tensor([0, 1, 1]))       # length mismatch


def test_degenerate_batches_give_zero_with_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.arange(4)  # no positives anywhere
    for name in ["contrastive", "ntxent", "triplet", "triplet-hard", "quadruplet", "supcon"]:
        v = L.make_loss(name)(x, y)
        v.backward()
        assert torch.isfinite(x.grad).all()
        x.grad = None
    x2 = torch.zeros(4, 3, requires_grad=True)  # identical embeddings: sqrt(0) must not NaN
    L.make_loss("triplet")(x2 + torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(x2.grad).all()


@pytest.mark.parametrize("name", sorted(L.LOSSES))
def test_every_loss_trains_with_an_optimizer(name):
    """A trainer's view: parameters() holds the learned weights; a few Adam steps on free
    embeddings (and the loss's own parameters) lower the loss."""
    torch.manual_seed(0)
    loss = L.make_loss(name, num_classes=4, embedding_size=8)
    emb = torch.nn.Parameter(torch.randn(16, 8))
    y = torch.arange(4).repeat_interleave(4)
    own = list(loss.parameters())
    assert bool(own) == L.loss_needs_num_classes(name)
    opt = torch.optim.Adam([emb, *own], lr=0.05)
    first = loss(emb, y).item()
    for _ in range(25):
        opt.zero_grad()
        v = loss(emb, y)
        v.backward()
        opt.step()
    assert loss(emb, y).item() < first
