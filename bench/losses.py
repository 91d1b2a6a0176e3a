"""Every metric-learning loss, same backbone, data and budget, on classes never seen in training.

Backbone: EfficientNet-Lite0 with its ImageNet weights, **frozen**; its GeM features
(the ``cnn`` descriptor's default vector, with a mirrored copy of each training image
as a second view) are computed once and cached in ``bench/.cache/``. Each loss trains
the same head (1280 -> 512 hidden, BN, ReLU -> 128, BN; L2-normalised for search) with
:func:`lookalike.training.loop.train_head_on_features`: AdamW, lr 1e-3, cosine decay,
``EPOCHS x STEPS`` batches, the losses' paper defaults (``s``, ``m``, margins), P x K
batches for pair losses and shuffled batches of the same size for classification
losses; 3 seeds, mean and standard deviation reported. No validation peeking: the last
epoch is scored.

Data (test classes never seen in training; scored leave-one-out over every test image,
cosine distance, Recall@1 and mAP@R from :mod:`lookalike.evaluation`):

* COIL-100: objects 2-50 train (all views), objects 51-100 test (1,200 images), input 128 px;
* CIFAR-10 (test split JPEGs): airplane, automobile, bird, cat, deer train; dog, frog,
  horse, ship, truck test; ``PER_CLASS`` images per class, input 96 px.

Baselines: the untrained ImageNet descriptor (``cnn`` default: GeM features, cosine)
and the plain softmax embedding.

Also draws ``docs/img/embedding_before_after.png``: t-SNE of 10 COIL test objects with
the ImageNet descriptor and with the ArcFace head.

Usage:  python bench/losses.py [--seeds 3] [--epochs 8] [--steps 40]
Writes bench/results/losses.json, docs/img/losses_coil100.png, docs/img/losses_cifar10.png.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import ROOT, SHARED_DATA, emit  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
IMG = ROOT / "docs" / "img"
LOSSES = ["softmax", "contrastive", "triplet", "triplet-hard", "multi-similarity", "supcon",
          "proxy-nca", "center", "normface", "sphereface", "cosface", "arcface", "combined"]
LABELS = {"triplet": "triplet (semi-hard)", "triplet-hard": "triplet (batch-hard)"}
CIFAR_TRAIN = ("airplane", "automobile", "bird", "cat", "deer")
PER_CLASS = 400


def _features(name: str, paths: list, size: int, flip: bool) -> np.ndarray:
    """Frozen Lite0 features, cached on disk by dataset name."""
    from lookalike.training.data import decode_images, lite0_frozen_features

    path = CACHE / f"{name}-{size}-{'flip' if flip else 'plain'}-{len(paths)}.npy"
    if path.exists():
        return np.load(path)
    pixels, kept, failed = decode_images(paths, 2 * size)
    if failed:
        raise SystemExit(f"{name}: {len(failed)} images failed to load: {failed[:3]}")
    features = lite0_frozen_features(pixels, size, flip_view=flip)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    return features


def load_coil():
    import csv

    root = SHARED_DATA / "coil100"
    rows = sorted((int(r["object_id"]), int(r["angle_deg"]), root / "images" / r["file"])
                  for r in csv.DictReader(open(root / "labels.csv")))
    train = [(o, p) for o, _, p in rows if 2 <= o <= 50]
    test = [(o, p) for o, _, p in rows if 51 <= o <= 100]
    return ("coil100", 128, [p for _, p in train], np.array([o for o, _ in train]),
            [p for _, p in test], np.array([o for o, _ in test]), (16, 4))


def load_cifar():
    root = SHARED_DATA / "cifar10" / "test"
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    split = {"train": ([], []), "test": ([], [])}
    for i, c in enumerate(classes):
        files = sorted((root / c).iterdir())[:PER_CLASS]
        paths, labels = split["train" if c in CIFAR_TRAIN else "test"]
        paths += files
        labels += [i] * len(files)
    return ("cifar10", 96, split["train"][0], np.array(split["train"][1]),
            split["test"][0], np.array(split["test"][1]), (5, 13))


def run_dataset(loader, seeds: int, epochs: int, steps: int, plot_tsne: bool):
    from lookalike.evaluation.plots import plot_bar_table
    from lookalike.training.loop import TrainConfig, head_embeddings, retrieval_scores, train_head_on_features

    name, size, train_paths, train_labels, test_paths, test_labels, (p, k) = loader()
    t0 = time.perf_counter()
    train_x = _features(f"{name}-train", train_paths, size, True)
    test_x = _features(f"{name}-test", test_paths, size, False)[0]
    feature_seconds = time.perf_counter() - t0
    rows = {"imagenet (untrained, GeM)": {"runs": [retrieval_scores(test_x, test_labels)], "seconds": 0.0}}
    heads = {}
    for loss in LOSSES:
        runs, seconds = [], []
        for seed in range(seeds):
            config = TrainConfig(loss=loss, backbone="efficientnet-lite0", frozen=True, dim=128,
                                 hidden=(512,), epochs=epochs, steps_per_epoch=steps, batch_p=p,
                                 batch_k=k, lr=1e-3, seed=seed, threads=1)
            start = time.perf_counter()
            head, _ = train_head_on_features(train_x, train_labels, None, None, config)
            seconds.append(time.perf_counter() - start)
            runs.append(retrieval_scores(head_embeddings(head, test_x), test_labels))
            if seed == 0:
                heads[loss] = head
        rows[LABELS.get(loss, loss)] = {"runs": runs, "seconds": statistics.median(seconds)}
        r = rows[LABELS.get(loss, loss)]
        print(f"{name} {loss:18s} R@1 {np.mean([x['recall_at_1'] for x in runs]):.3f} "
              f"mAP@R {np.mean([x['map_at_r'] for x in runs]):.3f} ({r['seconds']:.1f}s/run)",
              file=sys.stderr)
    table = {}
    for method, row in rows.items():
        r1 = [x["recall_at_1"] for x in row["runs"]]
        mp = [x["map_at_r"] for x in row["runs"]]
        table[method] = {"recall_at_1": float(np.mean(r1)), "recall_at_1_std": float(np.std(r1)),
                         "map_at_r": float(np.mean(mp)), "map_at_r_std": float(np.std(mp)),
                         "recall_at_1_runs": r1, "map_at_r_runs": mp,
                         "train_seconds_per_run": round(row["seconds"], 2)}
    chart = plot_bar_table({m: {"Recall@1": v["recall_at_1"], "mAP@R": v["map_at_r"]}
                            for m, v in table.items()}, IMG / f"losses_{name}.png",
                           title=f"{name}: test classes never seen in training "
                                 f"(frozen Lite0 + trained head, mean of {seeds} seeds)")
    if plot_tsne:
        from lookalike.training.embedding_plot import plot_before_after

        keep = np.isin(test_labels, np.unique(test_labels)[:10])
        plot_before_after(test_x[keep], head_embeddings(heads["arcface"], test_x[keep]),
                          test_labels[keep], IMG / "embedding_before_after.png", method="tsne",
                          title="COIL-100, 10 test objects never seen in training (t-SNE): "
                                "ImageNet GeM descriptor vs ArcFace-trained head",
                          label_names=[f"obj{o}" for o in np.unique(test_labels[keep])])
    return {"n_train_images": len(train_paths), "n_test_images": len(test_paths),
            "n_train_classes": int(len(np.unique(train_labels))),
            "n_test_classes": int(len(np.unique(test_labels))), "input_size": size,
            "batch": {"p": p, "k": k}, "feature_seconds": round(feature_seconds, 1),
            "table": table, "chart": str(chart.relative_to(ROOT))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    start = time.perf_counter()
    results = {"coil100": run_dataset(load_coil, args.seeds, args.epochs, args.steps, True),
               "cifar10": run_dataset(load_cifar, args.seeds, args.epochs, args.steps, False)}
    emit("losses", {"settings": {"backbone": "efficientnet-lite0 frozen (ImageNet), GeM p=3, L2",
                                 "head": "1280-512(BN,ReLU)-128(BN), L2 for search",
                                 "optimizer": "AdamW lr 1e-3 wd 1e-4, 5% warm-up, cosine",
                                 "epochs": args.epochs, "steps_per_epoch": args.steps,
                                 "seeds": args.seeds, "loss_parameters": "paper defaults of lookalike.training.losses",
                                 "miners": "semi-hard for triplet, none otherwise",
                                 "scoring": "leave-one-out over all test images, cosine distance"},
                    "datasets": results, "embedding_plot": "docs/img/embedding_before_after.png",
                    "total_seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    main()
