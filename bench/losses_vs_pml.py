"""lookalike's metric-learning losses against pytorch-metric-learning's same losses.

An oracle check, not a speed test: on identical float64 inputs, each of our losses
and PML's loss with the matching parameters must give the same value and the same
gradients with respect to the embeddings (and, for the classification losses, with
respect to the class weights / proxies, which are copied from ours into PML's module).
It also checks that our BatchHardMiner, SemiHardMiner and PairMarginMiner mine the same
index tuples as PML's. These were the ``test_pml_*`` tests of tests/test_losses.py (and
tests/test_miners.py's ``test_pml_miners_agree``); they live here because PML is a
benchmark peer, not a project dependency (the slow Python-loop oracles for every loss
stay in the test suite).

Runs in the bench venv (PML + the same CPU torch, see bench/README.md):

    /work/bench-venv/bin/python bench/losses_vs_pml.py

Prints JSON (per loss comparison: our value, PML's value, max abs difference of the
values, of the input gradients and of the weight gradients, pass/fail; per miner: the
tuple counts and how many differ) and writes it to
bench/results/losses_vs_pml.json. Exits with status 1 if any comparison fails.
Tolerances (as ``torch.testing.assert_close``): values rtol 1e-7 / atol 1e-9, input
gradients rtol 1e-6 / atol 1e-8, weight gradients rtol 1e-7 / atol 1e-7 (float64 default).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import emit  # noqa: E402
from lookalike.training import losses as L  # noqa: E402
from lookalike.training.check_batches import CLASSES as C, DIM as D  # noqa: E402
from lookalike.training.check_batches import classification_batch as cls_batch  # noqa: E402
from lookalike.training.check_batches import labelled_batch as batch, with_weight  # noqa: E402
from lookalike.training import miners as M  # noqa: E402
from lookalike.training.miners import SemiHardMiner  # noqa: E402

VALUE_TOL = {"rtol": 1e-7, "atol": 1e-9}
GRAD_TOL = {"rtol": 1e-6, "atol": 1e-8}
WEIGHT_GRAD_TOL = {"rtol": 1e-7, "atol": 1e-7}


# ----------------------------------------------------------------------------- comparisons
def _check(a, b, tol) -> str | None:
    try:
        torch.testing.assert_close(a, b, **tol)
    except AssertionError as exc:
        return str(exc).splitlines()[0]
    return None


def compare(name, ours_fn, pml_fn, x) -> dict:
    """Same value and same input gradients on identical inputs (one result row)."""
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    v1 = ours_fn(x1)
    v2 = pml_fn(x2)
    (g1,) = torch.autograd.grad(v1, [x1], allow_unused=True)
    (g2,) = torch.autograd.grad(v2, [x2], allow_unused=True)
    g1 = torch.zeros_like(x) if g1 is None else g1
    g2 = torch.zeros_like(x) if g2 is None else g2
    errors = []
    if (err := _check(v1.detach(), v2.detach(), VALUE_TOL)) is not None:
        errors.append(f"value: {err}")
    if (err := _check(g1, g2, GRAD_TOL)) is not None:
        errors.append(f"input gradient: {err}")
    if not g1.abs().sum() > 0:
        errors.append("vacuous comparison: zero gradient")
    return {"name": name, "ours": v1.item(), "pml": v2.item(),
            "value_abs_diff": abs(v1.item() - v2.item()),
            "grad_max_abs_diff": (g1 - g2).abs().max().item(),
            "passed": not errors, "errors": errors}


def compare_cls(name, ours, theirs, their_weight, x, y) -> dict:
    """A classification loss pair with the same weights: value, input and weight gradients."""
    theirs = theirs.double()
    with torch.no_grad():
        their_weight(theirs).copy_(ours.weight.T if their_weight(theirs).shape != ours.weight.shape
                                   else ours.weight)
    row = compare(name, lambda e: ours(e, y), lambda e: theirs(e, y), x)
    # weight gradients too (PML keeps W as (D, C): compare transposed)
    ours.zero_grad()
    theirs.zero_grad()
    ours(x, y).backward()
    theirs(x, y).backward()
    g = their_weight(theirs).grad
    g = g.T if g.shape != ours.weight.shape else g
    row["weight_grad_max_abs_diff"] = (ours.weight.grad - g).abs().max().item()
    if (err := _check(ours.weight.grad, g, WEIGHT_GRAD_TOL)) is not None:
        row["errors"].append(f"weight gradient: {err}")
        row["passed"] = False
    return row


def run_all() -> list[dict]:
    from pytorch_metric_learning import losses, miners, reducers
    rows = []

    # Contrastive: PML averages each kind of pair over its non-zero terms by default
    # (AvgNonZeroReducer) = our mean_nonzero; our mean = PML with MeanReducer.
    x, y = batch(seed=10)
    rows.append(compare("contrastive mean_nonzero (PML default reducer)",
                        lambda e: L.ContrastiveLoss(0.3, 1.1, reduction="mean_nonzero")(e, y),
                        lambda e: losses.ContrastiveLoss(pos_margin=0.3, neg_margin=1.1)(e, y), x))
    rows.append(compare("contrastive mean (PML MeanReducer)",
                        lambda e: L.ContrastiveLoss(0.3, 1.1)(e, y),
                        lambda e: losses.ContrastiveLoss(pos_margin=0.3, neg_margin=1.1,
                                                         reducer=reducers.MeanReducer())(e, y), x))

    x, y = batch(seed=11)
    rows.append(compare("ntxent t=0.1", lambda e: L.NTXentLoss(0.1)(e, y),
                        lambda e: losses.NTXentLoss(temperature=0.1)(e, y), x))

    # Triplet batch-all, mean over all triplets (PML needs MeanReducer) and over the
    # non-zero ones (its default).
    x, y = batch(seed=12)
    rows.append(compare("triplet batch-all mean (PML MeanReducer)",
                        lambda e: L.TripletMarginLoss(0.3)(e, y),
                        lambda e: losses.TripletMarginLoss(margin=0.3,
                                                           reducer=reducers.MeanReducer())(e, y), x))
    rows.append(compare("triplet batch-all mean_nonzero (PML default reducer)",
                        lambda e: L.TripletMarginLoss(0.3, reduction="mean_nonzero")(e, y),
                        lambda e: losses.TripletMarginLoss(margin=0.3)(e, y), x))
    # batch-hard == PML's loss on PML's BatchHardMiner triplets
    pml_miner = miners.BatchHardMiner()
    rows.append(compare("triplet batch-hard (PML BatchHardMiner)",
                        lambda e: L.TripletMarginLoss(0.3, strategy="batch-hard")(e, y),
                        lambda e: losses.TripletMarginLoss(margin=0.3, reducer=reducers.MeanReducer())(
                            e, y, pml_miner(e, y)), x))
    # the same mined triplets fed to both
    trip = SemiHardMiner(margin=0.5)(x, y)
    rows.append(compare("triplet on given semi-hard triplets",
                        lambda e: L.TripletMarginLoss(0.3)(e, y, trip),
                        lambda e: losses.TripletMarginLoss(margin=0.3,
                                                           reducer=reducers.MeanReducer())(e, y, trip), x))

    x, y = batch(seed=13)
    rows.append(compare("multi-similarity alpha=2 beta=40 base=0.5",
                        lambda e: L.MultiSimilarityLoss(2, 40, 0.5)(e, y),
                        lambda e: losses.MultiSimilarityLoss(alpha=2, beta=40, base=0.5)(e, y), x))

    x, y = batch(seed=14)
    rows.append(compare("supcon t=0.1", lambda e: L.SupConLoss(0.1)(e, y),
                        lambda e: losses.SupConLoss(temperature=0.1)(e, y), x))

    x, y, w = cls_batch(20)
    # ProxyNCA: same proxies, same softmax scale (PML normalises both and uses squared L2).
    rows.append(compare_cls("proxy-nca softmax_scale=3",
                            with_weight(L.ProxyNCALoss(C, D, softmax_scale=3.0), w),
                            losses.ProxyNCALoss(C, D, softmax_scale=3.0), lambda m: m.proxies, x, y))
    # NormFace: PML's temperature is 1 / s; its W is (D, C).
    rows.append(compare_cls("normface s=16",
                            with_weight(L.NormalizedSoftmaxLoss(C, D, s=16.0), w),
                            losses.NormalizedSoftmaxLoss(C, D, temperature=1 / 16.0), lambda m: m.W, x, y))
    # SphereFace: PML's "margin" is the integer m, "scale" an extra factor (1 = paper).
    for m in (2, 4):
        rows.append(compare_cls(f"sphereface m={m}", with_weight(L.SphereFaceLoss(C, D, m=m), w),
                                losses.SphereFaceLoss(C, D, margin=m, scale=1), lambda mod: mod.W, x, y))
    # CosFace: margin = m, scale = s.
    rows.append(compare_cls("cosface s=30 m=0.35", with_weight(L.CosFaceLoss(C, D, s=30.0, m=0.35), w),
                            losses.CosFaceLoss(C, D, margin=0.35, scale=30.0), lambda m: m.W, x, y))
    # ArcFace: PML's margin is in degrees; same pi - m fallback (cos(theta) - m sin m).
    for m in (0.5, 0.3):
        rows.append(compare_cls(f"arcface s=30 m={m}", with_weight(L.ArcFaceLoss(C, D, s=30.0, m=m), w),
                                losses.ArcFaceLoss(C, D, margin=math.degrees(m), scale=30.0),
                                lambda mod: mod.W, x, y))
    return rows


def _tuples(t, cols=None) -> set:
    t = t if cols is None else [t[c] for c in cols]
    return set(zip(*(c.tolist() for c in t)))


def compare_mined(name, ours: set, theirs: set, need_some=True) -> dict:
    """Same mined index tuples (as sets)."""
    errors = []
    if ours != theirs:
        errors.append(f"{len(ours - theirs)} only ours, {len(theirs - ours)} only PML")
    if need_some and not ours:
        errors.append("vacuous comparison: nothing mined")
    return {"name": name, "ours_count": len(ours), "pml_count": len(theirs),
            "mismatched": len(ours ^ theirs), "passed": not errors, "errors": errors}


def run_miners() -> list[dict]:
    """Our miners against PML's on the same float32 batch (was tests/test_miners.py's
    test_pml_miners_agree)."""
    from pytorch_metric_learning import miners as pml_miners
    g = torch.Generator().manual_seed(2)
    x = torch.randn(24, 6, generator=g)
    y = torch.arange(6).repeat_interleave(4)
    rows = [compare_mined("BatchHardMiner triplets", _tuples(M.BatchHardMiner()(x, y)),
                          _tuples(pml_miners.BatchHardMiner()(x, y)))]
    # PML "semihard": 0 < d(a,n) - d(a,p) <= margin (ties have probability 0 here)
    rows.append(compare_mined(
        "SemiHardMiner margin=0.3 vs TripletMarginMiner semihard",
        _tuples(M.SemiHardMiner(margin=0.3)(x, y)),
        _tuples(pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")(x, y))))
    # PML PairMarginMiner: positives with d > pos_margin, negatives with d < neg_margin
    ours = M.PairMarginMiner(0.5, 0.9)(x, y)
    theirs = pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=0.9)(x, y)
    rows.append(compare_mined("PairMarginMiner 0.5/0.9 positive pairs",
                              _tuples(ours, (0, 1)), _tuples(theirs, (0, 1)), need_some=False))
    rows.append(compare_mined("PairMarginMiner 0.5/0.9 negative pairs",
                              _tuples(ours, (2, 3)), _tuples(theirs, (2, 3)), need_some=False))
    return rows


def main() -> int:
    import pytorch_metric_learning
    started = time.perf_counter()
    rows = run_all()
    mined = run_miners()
    failed = [r["name"] for r in rows + mined if not r["passed"]]
    weight_diffs = [r["weight_grad_max_abs_diff"] for r in rows if "weight_grad_max_abs_diff" in r]
    emit("losses_vs_pml", {
        "peer": f"pytorch-metric-learning {pytorch_metric_learning.__version__}",
        "torch": torch.__version__,
        "dtype": "float64",
        "tolerances": {"value": VALUE_TOL, "input_grad": GRAD_TOL, "weight_grad": WEIGHT_GRAD_TOL},
        "summary": {"comparisons": len(rows), "miner_comparisons": len(mined),
                    "passed": len(rows) + len(mined) - len(failed), "failed": failed,
                    "max_value_abs_diff": max(r["value_abs_diff"] for r in rows),
                    "max_grad_abs_diff": max(r["grad_max_abs_diff"] for r in rows),
                    "max_weight_grad_abs_diff": max(weight_diffs) if weight_diffs else None},
        "comparisons": rows,
        "miners": mined,
        "wall_s": round(time.perf_counter() - started, 2),
    })
    if failed:
        print(f"FAILED: {len(failed)} of {len(rows) + len(mined)} comparisons: {failed}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} loss and {len(mined)} miner comparisons agree", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
