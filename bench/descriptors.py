"""Every descriptor family on the same real protocols: one JSON table + bar charts.

    python bench/descriptors.py [--only color,cnn] [--cifar-per-class 100]

Protocols (from lookalike.evaluation.protocols): COIL-100 instance retrieval (queries:
one view per object at 0 degrees, gallery: the other views; mAP and Recall@1), CIFAR-10
category retrieval (leave-one-out on a seeded subset: mAP@R, Recall@1), ORL faces
(leave-one-out Recall@1). Learned descriptors are fitted on the protocol's gallery
images. Also images/s of each descriptor on the COIL images (1 process).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, emit  # noqa: E402

SPECS = [
    "color:space=hsv,bins=8",
    "color:space=lab,bins=8,grid=2",
    "colormoments:grid=2",
    "fourier",
    "wavelet",
    "lbp",
    "gabor",
    "pca",
    "nmf",
    "kmeans",
    "phash",
    "colorhash",
    "bovw",
    "vlad",
    "cnn:pool=mean",
    "cnn:pool=gem",
    "cnn:pool=gem,multiscale=1x0.707",
]


def describe(spec: str, paths, fit_indices) -> tuple[np.ndarray, float, object]:
    from lookalike import make_descriptor

    d = make_descriptor(spec)
    if d.requires_fit:
        d.fit([paths[i] for i in fit_indices])
    start = time.perf_counter()
    chunks = [d.transform(paths[i:i + 64]) for i in range(0, len(paths), 64)]
    seconds = time.perf_counter() - start
    return np.concatenate(chunks), seconds, d


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--cifar-per-class", type=int, default=100)
    args = parser.parse_args()
    from lookalike.evaluation.plots import plot_bar_table
    from lookalike.evaluation.protocols import load_protocol
    from lookalike.evaluation.report import evaluate_retrieval
    from lookalike.distances import exact_distances

    protocols = {
        "coil100": load_protocol("coil100", SHARED_DATA),
        "cifar10": load_protocol("cifar10", SHARED_DATA, per_class=args.cifar_per_class),
        "orl": load_protocol("orl", SHARED_DATA),
    }
    specs = [s for s in SPECS if not args.only or s.split(":")[0] in args.only.split(",") or s in args.only]
    table: dict[str, dict] = {}
    for spec in specs:
        row = {}
        for name, protocol in protocols.items():
            paths = [str(p) for p in protocol.paths]
            try:
                x, seconds, d = describe(spec, paths, protocol.gallery_indices)
            except Exception as exc:  # report and go on: one family must not sink the table
                row[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            distances = exact_distances(x[protocol.query_indices], x[protocol.gallery_indices], d.metric)
            scores = evaluate_retrieval(distances, protocol)
            row[name] = {"map": round(scores["map"], 4), "map_at_r": round(scores["map_at_r"], 4),
                         "recall_at_1": round(scores["recall_at_k"]["1"], 4),
                         "images_per_s": round(len(paths) / seconds, 1)}
            print(f"{spec:40s} {name:8s} {row[name]}", file=sys.stderr)
        table[spec] = row
    charts = {}
    img_dir = ROOT / "docs" / "img"
    for name, metrics in (("coil100", ("map", "recall_at_1")), ("cifar10", ("map_at_r", "recall_at_1")),
                          ("orl", ("recall_at_1",))):
        values = {spec: {m: row[name][m] for m in metrics} for spec, row in table.items()
                  if "error" not in row.get(name, {"error": 1})}
        if values:
            charts[name] = str(plot_bar_table(values, img_dir / f"descriptors_{name}.png",
                                              title=f"descriptors on {name}").relative_to(ROOT))
    emit("descriptors", {"cifar_per_class": args.cifar_per_class, "table": table, "charts": charts})


if __name__ == "__main__":
    main()
