"""`lookalike evaluate` end to end on small real subsets (COIL-100, LFW View 1, the
user's own folder / CSV): the JSON report must let anyone recompute its numbers."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lookalike import Collection, make_descriptor
from lookalike.evaluation import metrics

SPEC = "color:space=hsv,bins=8"


def run_cli(*args, check=True):
    # A wide terminal: rich wraps console text at 80 columns when output is captured.
    env = {**os.environ, "COLUMNS": "1000"}
    proc = subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)],
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def full_relevance(query: dict) -> np.ndarray:
    """The whole ranking's relevance row rebuilt from ``relevant_ranks``."""
    row = np.zeros(query["ranking_length"], dtype=bool)
    row[np.array(query["relevant_ranks"], dtype=int) - 1] = True
    return row


@pytest.fixture(scope="module")
def coil_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("coil")
    run_cli("evaluate", "--protocol", "coil100", "--data", shared_data, "--descriptor", SPEC,
            "--limit", "6", "--seed", "3", "--top-k", "0", "--json", out / "r.json",
            "--plots", out / "plots")
    return json.loads((out / "r.json").read_text()), out


def test_coil_report_recomputes_exactly(coil_run):
    report, out = coil_run
    settings = report["settings"]
    assert settings["protocol"] == "coil100" and settings["seed"] == 3 and settings["limit"] == 6
    assert settings["descriptor"] == make_descriptor(SPEC).spec and settings["lookalike_version"]
    queries = report["queries"]
    assert len(queries) == 6 and len(report["gallery"]) == 6 * 23  # 24 views, one is the query
    # Flags per rank (top_k=0 stores the whole ranking) and relevant_ranks agree.
    flags = np.array([q["relevant"] for q in queries], dtype=bool)
    n_rel = np.array([q["n_relevant"] for q in queries])
    assert (n_rel == 23).all()
    assert all((full_relevance(q) == np.array(q["relevant"], bool)).all() for q in queries)
    m = report["metrics"]
    assert metrics.mean_average_precision(flags, n_rel) == m["map"]
    assert metrics.recall_at_k(flags, 1, n_rel) == m["recall_at_k"]["1"]
    assert metrics.map_at_r(flags, n_rel) == m["map_at_r"]
    assert metrics.cmc_curve(flags, 20, n_rel).tolist() == m["cmc"][:20]
    # Hand-written AP of one query: mean of precision at each relevant rank.
    ranks = np.array(queries[0]["relevant_ranks"])
    assert queries[0]["average_precision"] == pytest.approx(
        np.mean(np.arange(1, len(ranks) + 1) / ranks), abs=1e-12)
    assert 0.5 < m["map"] <= 1.0  # colour histograms separate COIL objects well
    for name in ("precision_recall.png", "cmc.png", "best_worst.png"):
        data = (out / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_coil_rankings_match_a_slow_oracle(coil_run):
    """Distances and order of two queries, recomputed image by image with a plain loop."""
    report, _ = coil_run
    d = make_descriptor(SPEC)
    gallery = report["gallery"]
    g_vec = d.transform(gallery)
    for q in report["queries"][:2]:
        qv = d.transform([q["path"]])[0].astype(np.float64)
        dist = [float(np.sqrt(((qv - g.astype(np.float64)) ** 2).sum())) for g in g_vec]
        order = sorted(range(len(gallery)), key=lambda j: (np.float32(dist[j]), j))
        assert q["ranked_ids"] == order
        assert q["distances"] == pytest.approx([dist[j] for j in order], abs=1e-5)
        labels = [Path(p).name.split("__")[0] for p in gallery]
        own = Path(q["path"]).name.split("__")[0]
        assert q["relevant"] == [int(labels[j] == own) for j in order]


def test_db_mode_matches_descriptor_mode(coil_run, tmp_path):
    report, _ = coil_run
    db = tmp_path / "coll.lk"
    with Collection.create(db, descriptors=[SPEC]) as coll:
        coll.add(report["gallery"][::2])  # half the gallery stored; the rest described on the fly
    out = tmp_path / "db.json"
    run_cli("evaluate", "--protocol", "coil100", "--data", Path(report["settings"]["data"]),
            "--db", db, "--limit", "6", "--seed", "3", "--top-k", "0", "--json", out)
    via_db = json.loads(out.read_text())
    source = via_db["settings"]["source"]
    assert source["kind"] == "collection" and source["from_collection"] == len(report["gallery"][::2])
    assert source["described"] == 6 + len(report["gallery"]) - len(report["gallery"][::2])
    assert via_db["metrics"] == report["metrics"]
    assert [q["ranked_ids"] for q in via_db["queries"]] == [q["ranked_ids"] for q in report["queries"]]


def test_lfw_view1_verification_subset(shared_data, tmp_path):
    out = tmp_path / "v.json"
    run_cli("evaluate", "--protocol", "lfw-view1", "--option", "split=test", "--data", shared_data,
            "--descriptor", SPEC, "--limit", "60", "--json", out, "--plots", tmp_path / "p")
    report = json.loads(out.read_text())
    pairs = report["pairs"]
    assert len(pairs) == 60 and report["protocol"]["n_pairs"] == 60
    assert report["settings"]["protocol_options"] == {"split": "test"}
    same = np.array([p["same"] for p in pairs])
    dist = np.array([p["distance"] for p in pairs])
    assert 0 < same.sum() < 60
    m = report["metrics"]
    assert m["auc"] == pytest.approx(roc_auc_score(same, -dist), abs=1e-12)
    thr = m["best_threshold"]  # one fold: threshold tuned on the same pairs
    assert m["accuracy_at_best_threshold"] == pytest.approx(((-dist >= thr) == same).mean())
    d = make_descriptor(SPEC)
    a, b = d.transform([pairs[0]["a"], pairs[0]["b"]]).astype(np.float64)
    assert pairs[0]["distance"] == pytest.approx(np.linalg.norm(a - b), abs=1e-9)
    assert (tmp_path / "p" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "p" / "hardest_pairs.png").exists()


def _user_images(coil_dir: Path, root: Path) -> dict[str, list[Path]]:
    """Three COIL objects, four views each, copied into class folders."""
    classes = {}
    for obj in ("obj3", "obj7", "obj12"):
        views = sorted(coil_dir.glob(f"{obj}__*.png"))[:4]
        (root / obj).mkdir(parents=True)
        classes[obj] = [Path(shutil.copy(v, root / obj / v.name)) for v in views]
    return classes


def _oracle_map(paths: list[Path], labels: list[str]) -> float:
    """Leave-one-out mAP by brute force with plain Python sorting."""
    v = make_descriptor(SPEC).transform(paths).astype(np.float64)
    aps = []
    for i in range(len(paths)):
        others = [j for j in range(len(paths)) if j != i]
        others.sort(key=lambda j: (np.float32(np.linalg.norm(v[i] - v[j])), j))
        hits, precisions = 0, []
        for rank, j in enumerate(others, 1):
            if labels[j] == labels[i]:
                hits += 1
                precisions.append(hits / rank)
        aps.append(np.mean(precisions))
    return float(np.mean(aps))


def test_labelled_folder_and_csv_manifest(coil_dir, tmp_path):
    classes = _user_images(coil_dir, tmp_path / "mine")
    paths = [p for obj in sorted(classes) for p in classes[obj]]
    labels = [p.parent.name for p in paths]
    expected = _oracle_map(paths, labels)

    out = tmp_path / "folder.json"
    run_cli("evaluate", "--data", tmp_path / "mine", "--descriptor", SPEC, "--json", out)
    folder = json.loads(out.read_text())
    assert folder["settings"]["protocol"] == "folder" and len(folder["queries"]) == 12
    assert folder["metrics"]["map"] == pytest.approx(expected, abs=1e-12)
    assert all(q["n_relevant"] == 3 and q["query"] not in q["ranked_ids"] for q in folder["queries"])

    manifest = tmp_path / "mine" / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "is_query"])
        for p in paths:
            w.writerow([p.relative_to(manifest.parent).as_posix(), p.parent.name,
                        int(p == classes[p.parent.name][0])])
    out = tmp_path / "csv.json"
    proc = run_cli("evaluate", "--protocol", "csv", "--data", manifest, "--descriptor", SPEC,
                   "--json", out)
    report = json.loads(out.read_text())
    assert len(report["queries"]) == 3 and len(report["gallery"]) == 9
    flags = np.array([q["relevant"] for q in report["queries"]], dtype=bool)
    assert metrics.recall_at_k(flags, 1, [3, 3, 3]) == report["metrics"]["recall_at_k"]["1"]
    assert "mAP" in proc.stdout


def test_bad_protocol_is_a_one_line_error(tmp_path):
    proc = run_cli("evaluate", "--protocol", "nope", "--data", tmp_path, "--descriptor", SPEC,
                   check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown protocol 'nope'" in lines[0] and "coil100" in lines[0]
    assert "Traceback" not in proc.stderr


def test_descriptor_and_db_are_exclusive(tmp_path):
    proc = run_cli("evaluate", "--protocol", "coil100", "--data", tmp_path, check=False)
    assert proc.returncode == 1 and "exactly one of" in proc.stderr


def test_learned_descriptor_is_fitted_on_the_gallery(coil_dir, tmp_path):
    """A PCA basis is fitted on the gallery first (here: every image, leave-one-out),
    then scored; the numbers match fitting and describing by hand."""
    classes = _user_images(coil_dir, tmp_path / "mine")
    spec = "pca:size=16x16,components=6"
    out = tmp_path / "pca.json"
    run_cli("evaluate", "--data", tmp_path / "mine", "--descriptor", spec, "--json", out)
    report = json.loads(out.read_text())
    assert report["settings"]["source"]["fitted_on"].startswith("12 of 12 gallery images")
    assert report["settings"]["dim"] == 6

    paths = [p for obj in sorted(classes) for p in sorted(classes[obj])]
    d = make_descriptor(spec).fit(paths)
    v = d.transform(paths).astype(np.float64)
    labels = np.array([p.parent.name for p in paths])
    dist = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
    rel, n_rel = metrics.ranked_relevance(dist, labels, labels, exclude_self=True)
    assert report["metrics"]["map"] == pytest.approx(metrics.mean_average_precision(rel, n_rel),
                                                     abs=1e-6)
