"""Index tuning on real image vectors: the chosen setting meets its recall target when
measured independently (numpy brute force) on the collection's applied index."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lookalike import Collection
from lookalike.tuning import candidate_builds, recall_with_ties, tune_index

N_IMAGES = 1500


def run_cli(*args):
    env = {**os.environ, "COLUMNS": "1000"}
    proc = subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cifar_collection(shared_data, tmp_path_factory):
    root = shared_data / "cifar10" / "test"
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    files = [f for c in classes for f in sorted(c.glob("*.jpg"))[:N_IMAGES // len(classes)]]
    db = tmp_path_factory.mktemp("tune") / "cifar.lk"
    with Collection.create(db, descriptors=["color:space=hsv,bins=8"]) as coll:
        coll.add(files, workers=1)
        assert len(coll) == N_IMAGES
    return db


def brute_force_recall(coll, k: int = 10) -> float:
    """Recall@k of the collection's own index, every stored vector as a query (self
    excluded), against exact float64 numpy distances; ties at the k-th distance count."""
    ids, x = coll.vectors()
    x64 = x.astype(np.float64)
    sq = (x64 ** 2).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x64 @ x64.T, 0))
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, k - 1]
    row_of = {int(i): r for r, i in enumerate(ids)}
    found = coll.index().search(x, k=k + 1).ids
    hits = 0
    for r in range(len(ids)):
        got = [row_of[int(i)] for i in found[r] if i >= 0 and int(i) != ids[r]][:k]
        hits += int((d[r, got] <= kth[r] + 1e-6).sum())
    return hits / (k * len(ids))


def test_tune_index_apply_meets_recall_independently(cifar_collection, tmp_path):
    db = cifar_collection
    out, plot = tmp_path / "tune.json", tmp_path / "tune.png"
    # Approximate families only: on 1,500 vectors exact search may well be the fastest.
    proc = run_cli("tune-index", db, "--recall", "0.95", "--queries", N_IMAGES, "--threads", "1",
                   "--kinds", "hnsw,ivf,ivfpqfs", "--apply", "--json", out, "--plot", plot)
    tuned = json.loads(out.read_text())
    best = tuned["best"]
    assert tuned["applied"] and best["recall"] >= 0.95 and best["family"] != "flat"
    assert "best:" in proc.stdout and best["spec"] in proc.stdout
    families = {p["family"] for p in tuned["points"]}
    assert families == {"hnsw", "ivf", "ivfpqfs"}
    # The best is the fastest point meeting the target, and knobs are in its spec.
    meeting = [p for p in tuned["points"] if p["recall"] >= 0.95]
    assert best["qps"] == max(p["qps"] for p in meeting)
    assert all(f"{k}={v}" in best["spec"] for k, v in best["knobs"].items())
    assert all(p["memory_bytes"] > 0 and p["build_seconds"] >= 0 for p in tuned["points"])
    assert plot.read_bytes()[:4] == b"\x89PNG"

    with Collection.open(db) as coll:
        in_use = coll.info()["descriptors"]["color"]
        assert in_use["index"] == best["spec"]
        assert in_use["index_in_use"]["spec"] == best["spec"]
        recall = brute_force_recall(coll)
    assert recall >= 0.95
    assert recall == pytest.approx(best["recall"], abs=0.005)


def test_flat_always_reaches_recall_one(cifar_collection):
    with Collection.open(cifar_collection) as coll:
        ids, x = coll.vectors()
    tuned = tune_index(ids, x, "l2", x.shape[1], target_recall=0.99, n_queries=100,
                       families=["flat", "ivf"], repeats=1)
    flat = [p for p in tuned.points if p.family == "flat"]
    assert len(flat) == 1 and flat[0].recall == 1.0
    ivf = [p for p in tuned.points if p.family == "ivf"]
    # nprobe sweeps upward: recall never drops as more lists are scanned.
    recalls = [p.recall for p in ivf]
    assert recalls == sorted(recalls) and recalls[0] < 1.0
    assert tuned.best is not None and tuned.best.recall >= 0.99


def test_candidates_skip_what_cannot_train():
    builds, skipped = candidate_builds(100, 64, "l2")
    assert [b[0] for b in builds] == ["flat", "hnsw", "hnsw"]
    assert set(skipped) == {"ivf", "ivfpqfs", "ivfpq"}
    builds, _ = candidate_builds(1500, 512, "l2")
    ivf = [b for b in builds if b[0] == "ivf"][0]
    assert ivf[1] == "ivf:nlist=38"  # min(4 sqrt(1500), 1500 / 39)
    assert max(k["nprobe"] for k in ivf[2]) <= 38


def test_recall_with_ties_counts_equal_distances():
    exact_kth = np.array([2.0])
    approx = np.array([[5, 6, 7]])
    dist = {5: 1.0, 6: 2.0, 7: 3.0}
    r = recall_with_ties(approx, exact_kth, lambda row, ids: np.array([dist[int(i)] for i in ids]), 3)
    assert r == pytest.approx(2 / 3)
