"""Protocol readers on the real shared data, user-data readers on temp files, the
one-call reports, and a smoke test of every plot."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ConfigError, InputError
from lookalike.evaluation import metrics as M
from lookalike.evaluation import plots, protocols as P, report as R


# --------------------------------------------------------------------------- LFW
def test_lfw_view2_pairs(shared_data):
    p = P.load_protocol("lfw-pairs", shared_data)
    assert len(p.is_same) == 6000
    assert np.bincount(p.folds).tolist() == [600] * 10
    for f in range(10):
        fold = p.is_same[p.folds == f]
        assert fold[:300].all() and not fold[300:].any()  # 300 same then 300 different
    assert all(path.is_file() for path in p.paths)
    assert len(set(p.paths)) == len(p.paths)  # each image listed once
    # first line after the header "10 300": Abel_Pacheco 1 4
    assert p.path_a[0] == shared_data / "lfw/images/Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert p.path_b[0] == shared_data / "lfw/images/Abel_Pacheco/Abel_Pacheco_0004.jpg"
    names_same = [a.parent.name == b.parent.name for a, b in zip(p.path_a, p.path_b)]
    np.testing.assert_array_equal(names_same, p.is_same)
    # the lfw folder itself works as data_path too
    assert len(P.load_lfw_pairs(shared_data / "lfw", check_files=False).is_same) == 6000


def test_lfw_view1_dev_files(lfw_dir):
    train = P.load_protocol("lfw-view1", lfw_dir, split="train")
    test = P.load_protocol("lfw-view1", lfw_dir, split="test")
    assert len(train.is_same) == 2200 and train.is_same.sum() == 1100
    assert len(test.is_same) == 1000 and test.is_same.sum() == 500
    assert set(train.folds.tolist()) == {0}
    # View 1 is identity-disjoint between train and test
    people = lambda p: {x.parent.name for x in p.paths}  # noqa: E731
    assert not people(train) & people(test)


def _fake_lfw(tmp_path: Path, pairs: str, name: str = "pairs.txt") -> Path:
    lfw = tmp_path / "lfw"
    for person, n in (("Ann", 2), ("Bob", 1)):
        (lfw / "images" / person).mkdir(parents=True)
        for i in range(1, n + 1):
            (lfw / "images" / person / f"{person}_{i:04d}.jpg").write_bytes(b"x")
    (lfw / name).write_text(pairs)
    return lfw


def test_lfw_pairs_errors_name_file_and_line(tmp_path):
    good = "1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"
    p = P.load_lfw_pairs(_fake_lfw(tmp_path / "a", good))
    assert p.is_same.tolist() == [True, False] and p.folds.tolist() == [0, 0]
    with pytest.raises(InputError, match=r"pairs\.txt:3: image not found"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "b", "1\t1\nAnn\t1\t2\nAnn\t1\tBob\t2\n"))
    with pytest.raises(InputError, match=r"pairs\.txt:2: expected 'name i j'"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "c", "1\t1\nAnn\t1\n Ann 1 Bob 1\n"))
    with pytest.raises(InputError, match=r"pairs\.txt:2: image number must be an integer"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "d", "1\t1\nAnn\tone\t2\nAnn\t1\tBob\t1\n"))
    with pytest.raises(InputError, match="header promises 4 pairs"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "e", "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"))
    with pytest.raises(InputError, match=r"pairs\.txt:2: expected a same pair"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "f", "1\t1\nAnn\t1\tBob\t1\nAnn\t1\t2\n"))
    with pytest.raises(InputError, match=r"pairsDevTest\.txt:1: header must be one pair count"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "g", "1 1\n", "pairsDevTest.txt"), view="dev-test")
    with pytest.raises(InputError, match="no such file"):
        P.load_lfw_pairs(_fake_lfw(tmp_path / "h", good), view="dev-train")
    with pytest.raises(InputError, match="no lfw dataset"):
        P.load_lfw_pairs(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="dev-train"):
        P.load_lfw_pairs(tmp_path, view="3")


def test_lfw_identification_split(lfw_dir):
    closed = P.load_lfw_identification(lfw_dir, non_mated_fraction=0.0)
    assert len(closed.paths) == 13233
    assert len(closed.gallery_indices) == 5749  # one image per person enrolled
    assert closed.mated.all() and len(closed.probe_indices) == 13233 - 5749
    assert closed.n_distractors == 4069  # people with exactly one image
    first = {}
    for i in closed.gallery_indices:
        first[closed.labels[i]] = closed.paths[i]
    for i in closed.probe_indices[:500]:  # probes come after the enrolled (first) image
        assert closed.paths[i].name > first[closed.labels[i]].name

    open_set = P.load_lfw_identification(lfw_dir, non_mated_fraction=0.1, seed=0)
    s = open_set.summary()
    assert s["n_distractors"] == 4069
    assert s["n_gallery"] == 5749 - 168  # 10% of the 1,680 people with 2+ images left out
    assert s["n_mated_probes"] + s["n_nonmated_probes"] == 13233 - s["n_gallery"]
    assert not set(open_set.probe_indices) & set(open_set.gallery_indices)
    # every mated probe's identity has exactly one enrolled image
    g = open_set.gallery_labels
    assert np.all([np.sum(g == lab) == 1 for lab in open_set.probe_labels[open_set.mated][:300]])


def test_lfw_identification_subset_is_seeded(lfw_dir):
    a = P.load_lfw_identification(lfw_dir, max_identities=40, max_distractors=60, seed=3)
    b = P.load_lfw_identification(lfw_dir, max_identities=40, max_distractors=60, seed=3)
    c = P.load_lfw_identification(lfw_dir, max_identities=40, max_distractors=60, seed=4)
    assert a.paths == b.paths and a.paths != c.paths
    assert len(a.label_names) == 100 and a.n_distractors == 60
    assert a.summary()["n_gallery"] == 36 + 60  # 4 of 40 unenrolled


# --------------------------------------------------------------------------- COIL, CIFAR, ORL
def test_coil100_instance_retrieval(shared_data):
    p = P.load_protocol("coil100", shared_data)
    assert len(p.label_names) == 99
    assert len(p.query_indices) == 99 and len(p.gallery_indices) == 2366 - 99
    assert all(p.paths[i].name.endswith("__0.png") for i in p.query_indices)
    assert not set(p.query_indices) & set(p.gallery_indices) and not p.exclude_self
    assert sorted(p.query_labels.tolist()) == list(range(99))
    assert (p.self_index == -1).all()
    # object 22 has 22 views: 1 query, 21 gallery
    obj22 = p.label_names.index("obj22")
    assert np.sum(p.gallery_labels == obj22) == 21
    split = P.load_coil100(shared_data, query_angle=90, object_ids=range(51, 101))
    assert len(split.query_indices) == 50
    assert all(p.name.endswith("__90.png") for p in (split.paths[i] for i in split.query_indices))


def test_cifar10_counts_and_seeded_subset(shared_data):
    full = P.load_protocol("cifar10", shared_data, per_class=None)
    assert len(full.label_names) == 10 and len(full.paths) == 10000
    assert np.bincount(full.labels).tolist() == [1000] * 10
    sub = P.load_cifar10(shared_data, per_class=20, seed=1)
    assert len(sub.paths) == 200 and sub.exclude_self
    np.testing.assert_array_equal(sub.query_indices, sub.gallery_indices)
    np.testing.assert_array_equal(sub.self_index, np.arange(200))
    assert sub.paths == P.load_cifar10(shared_data, per_class=20, seed=1).paths
    assert sub.paths != P.load_cifar10(shared_data, per_class=20, seed=2).paths
    assert all(path.parent.name == sub.label_names[lab] for path, lab in zip(sub.paths, sub.labels))


def test_orl_leave_one_out(shared_data):
    p = P.load_protocol("orl", shared_data)
    assert len(p.label_names) == 38 and np.bincount(p.labels).tolist() == [10] * 38
    assert p.label_names[0] == "s10" and p.paths[0].name == "1.pgm" and p.paths[9].name == "10.pgm"
    small = P.load_orl(shared_data, variant="small_23x28")
    assert len(small.paths) == 400 and len(small.label_names) == 40


# --------------------------------------------------------------------------- texmex
def test_sift_vectors_and_groundtruth(shared_data):
    ann = P.load_protocol("lfw-sift-10k", shared_data)
    assert ann.base.shape == (10000, 128) and ann.base.dtype == np.float32
    assert ann.queries.shape == (100, 128)
    assert ann.groundtruth.shape[0] == 100
    for i in range(5):
        d = ((ann.base.astype(np.float64) - ann.queries[i]) ** 2).sum(1)
        assert d[ann.groundtruth[i, 0]] == pytest.approx(d.min())
        assert np.argmin(d) == ann.groundtruth[i, 0] or d[np.argmin(d)] == d[ann.groundtruth[i, 0]]
    assert R.evaluate_ann(ann.groundtruth, ann)["recall_at_k"] == {"1": 1.0, "10": 1.0, "100": 1.0}
    shifted = np.roll(ann.groundtruth, 1, axis=1)  # same sets, one id pushed past k
    assert R.evaluate_ann(shifted, ann, ks=(10,))["recall_at_k"]["10"] == pytest.approx(0.9)


def _write_vecs(path: Path, rows, fmt: str):
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(struct.pack("<i", len(row)) + struct.pack(f"<{len(row)}{fmt}", *row))


def test_texmex_readers_round_trip_and_errors(tmp_path):
    _write_vecs(tmp_path / "a.fvecs", [[1.5, 2, 3], [4, 5, 6.25]], "f")
    np.testing.assert_array_equal(P.read_fvecs(tmp_path / "a.fvecs"), [[1.5, 2, 3], [4, 5, 6.25]])
    assert P.read_fvecs(tmp_path / "a.fvecs", max_rows=1).shape == (1, 3)
    _write_vecs(tmp_path / "a.ivecs", [[7, -1], [3, 2]], "i")
    got = P.read_ivecs(tmp_path / "a.ivecs")
    assert got.dtype == np.int32 and got.tolist() == [[7, -1], [3, 2]]
    _write_vecs(tmp_path / "a.bvecs", [[1, 255]], "B")
    assert P.read_bvecs(tmp_path / "a.bvecs").tolist() == [[1, 255]]
    _write_vecs(tmp_path / "mixed.fvecs", [[1, 2], [1, 2, 3, 4]], "f")  # 12 + 20 bytes
    (tmp_path / "mixed.fvecs").write_bytes((tmp_path / "mixed.fvecs").read_bytes()[:24])
    with pytest.raises(InputError, match="mixed.fvecs"):
        P.read_fvecs(tmp_path / "mixed.fvecs")
    _write_vecs(tmp_path / "dims.fvecs", [[1, 2], [3, 4]], "f")
    raw = bytearray((tmp_path / "dims.fvecs").read_bytes())
    raw[12:16] = struct.pack("<i", 3)
    (tmp_path / "dims.fvecs").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="row 1 declares dimension 3"):
        P.read_fvecs(tmp_path / "dims.fvecs")
    with pytest.raises(InputError, match="no such file"):
        P.read_ivecs(tmp_path / "missing.ivecs")


# --------------------------------------------------------------------------- user data
def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)
    return path


def test_csv_manifest_queries_split_and_leave_one_out(tmp_path):
    for name in ("a1", "a2", "b1", "b2", "c1"):
        _png(tmp_path / "img" / f"{name}.png")
    (tmp_path / "m.csv").write_text(
        "path,label,split,is_query\n"
        "img/a1.png,cat,test,1\nimg/a2.png,cat,test,0\nimg/b1.png,dog,test,yes\n"
        "img/b2.png,dog,test,\nimg/c1.png,cow,train,0\n")
    p = P.load_protocol("csv", tmp_path / "m.csv", split="test")
    assert [x.name for x in p.paths] == ["a1.png", "a2.png", "b1.png", "b2.png"]
    assert p.query_indices.tolist() == [0, 2] and p.gallery_indices.tolist() == [1, 3]
    assert not p.exclude_self and p.label_names == ["cat", "dog"]
    (tmp_path / "loo.csv").write_text("path,label\nimg/a1.png,cat\nimg/a2.png,cat\nimg/b1.png,dog\n")
    loo = P.load_csv_manifest(tmp_path / "loo.csv")
    assert loo.exclude_self and loo.labels.tolist() == [0, 0, 1]


@pytest.mark.parametrize("body, message", [
    ("path\nimg/a1.png\n", r"m\.csv:1: header.*missing \['label'\]"),
    ("path,label\nimg/a1.png,cat\nimg/zz.png,cat\n", r"m\.csv:3: image not found"),
    ("path,label\nimg/a1.png,cat\n,cat\n", r"m\.csv:3: empty path or label"),
    ("path,label\nimg/a1.png,cat\nimg/a1.png,dog\n", r"m\.csv:3: duplicate path.*line 2"),
    ("path,label,is_query\nimg/a1.png,cat,maybe\n", r"m\.csv:2: is_query must be"),
    ("path,label\nimg/a1.png,cat,extra\n", r"m\.csv:2: more fields"),
    ("path,label,is_query\nimg/a1.png,cat,0\n", r"need both queries and gallery"),
])
def test_csv_manifest_errors(tmp_path, body, message):
    _png(tmp_path / "img" / "a1.png")
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(InputError, match=message):
        P.load_csv_manifest(tmp_path / "m.csv")


def test_csv_manifest_missing_file_and_split_column(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        P.load_csv_manifest(tmp_path / "none.csv")
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(InputError, match="no split column"):
        P.load_csv_manifest(tmp_path / "m.csv", split="test")


def test_labelled_folder(tmp_path):
    for cls, n in (("cats", 3), ("dogs", 2)):
        for i in range(n):
            _png(tmp_path / "data" / cls / f"{i}.png")
    _png(tmp_path / "data" / "dogs" / "nested" / "x.png")
    (tmp_path / "data" / "cats" / "notes.txt").write_text("not an image")
    p = P.load_protocol("folder", tmp_path / "data")
    assert p.label_names == ["cats", "dogs"] and p.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert p.exclude_self and len(p.paths) == 6
    _png(tmp_path / "data" / "loose.png")
    with pytest.raises(InputError, match="loose.png: image outside any class folder"):
        P.load_folder(tmp_path / "data")
    (tmp_path / "data" / "loose.png").unlink()
    (tmp_path / "data" / "empty").mkdir()
    with pytest.raises(InputError, match="empty: class folder without images"):
        P.load_folder(tmp_path / "data")
    with pytest.raises(InputError, match="no such directory"):
        P.load_folder(tmp_path / "nope")


def test_load_protocol_rejects_unknown_names_and_options(shared_data):
    with pytest.raises(ConfigError, match="valid: lfw-pairs"):
        P.load_protocol("imagenet", shared_data)
    with pytest.raises(ConfigError, match="coil100"):
        P.load_protocol("coil100", shared_data, bogus=1)


# --------------------------------------------------------------------------- reports
def _pixels(paths, size=None):
    out = []
    for p in paths:
        img = Image.open(p).convert("L")
        if size:
            img = img.resize(size)
        out.append(np.asarray(img, dtype=np.float32).ravel() / 255.0)
    return np.stack(out)


def _l2(a, b):
    return np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0))


def test_evaluate_retrieval_on_orl_raw_pixels(shared_data):
    p = P.load_orl(shared_data, variant="small_23x28")
    x = _pixels(p.paths)
    d = _l2(x[p.query_indices], x[p.gallery_indices])
    out = R.evaluate_retrieval(d, p)
    # raw-pixel nearest neighbour on ORL is a classic strong baseline (> 0.9 rank-1);
    # counting each face as its own match would give exactly 1.0
    assert 0.85 < out["recall_at_k"]["1"] < 1.0
    assert out["n_queries"] == out["n_queries_scored"] == 400
    assert out["recall_at_k"]["1"] <= out["recall_at_k"]["5"] <= out["recall_at_k"]["10"]
    assert 0 < out["map_at_r"] <= out["map"] <= 1
    assert out["cmc"][0] == out["recall_at_k"]["1"] and len(out["cmc"]) == 20
    rel, n_rel = M.ranked_relevance(d, p.query_labels, p.gallery_labels, exclude_self=True)
    assert out["map"] == M.mean_average_precision(rel, n_rel)
    assert (n_rel == 9).all()
    import json
    json.dumps(out)  # JSON-able
    with pytest.raises(InputError, match="shape"):
        R.evaluate_retrieval(d[:10], p)


def test_evaluate_retrieval_on_coil_uses_query_gallery_layout(shared_data):
    p = P.load_coil100(shared_data, object_ids=range(2, 12))
    x = _pixels(p.paths, size=(16, 16))
    out = R.evaluate_retrieval(_l2(x[p.query_indices], x[p.gallery_indices]), p, ks=(1, 100))
    assert out["n_queries"] == 10 and out["n_gallery"] == len(p.gallery_indices)
    assert out["recall_at_k"]["1"] >= 0.8  # neighbouring views of a turntable object look alike
    assert "100" not in out["recall_at_k"] or out["recall_at_k"]["100"] == 1.0


def test_evaluate_verification_on_lfw_dev_test_raw_pixels(lfw_dir):
    p = P.load_lfw_pairs(lfw_dir, view="dev-test")
    x = _pixels(p.paths, size=(32, 32))
    d = np.linalg.norm(x[p.index_a] - x[p.index_b], axis=1)
    out = R.evaluate_verification(d, p, include_roc=True)
    # raw pixels are a weak but better-than-chance face verifier
    assert 0.55 < out["auc"] < 0.85
    assert 0.15 < out["eer"] < 0.45
    assert 0.5 < out["accuracy_at_best_threshold"] < 0.85 and "kfold" not in out
    assert out["auc"] == pytest.approx(M.roc_auc(-d, p.is_same))
    assert len(out["roc_far"]) == len(out["roc_tar"])
    # the k-fold branch, with 10 folds of 100 pairs (50 same + 50 different)
    folded = P.VerificationProtocol("dev-test-10fold", p.paths, p.index_a, p.index_b,
                                    p.is_same, np.r_[np.arange(500) // 50, np.arange(500) // 50])
    k = R.evaluate_verification(d, folded)["kfold"]
    assert len(k["fold_accuracies"]) == 10
    assert k["mean_accuracy"] <= out["accuracy_at_best_threshold"] + 0.02


def test_evaluate_identification_on_lfw_subset(lfw_dir):
    p = P.load_lfw_identification(lfw_dir, max_identities=60, max_distractors=40, seed=0)
    rng = np.random.default_rng(0)
    # an oracle-ish descriptor: mates 1.0 closer than everyone else, plus noise
    d = rng.random((len(p.probe_indices), len(p.gallery_indices))) + 1.0
    d[p.probe_labels[:, None] == p.gallery_labels[None, :]] -= 1.0
    out = R.evaluate_identification(d, p)
    assert out["n_mated"] == int(p.mated.sum()) and out["n_nonmated"] > 0
    assert out["rank_k"]["1"] == 1.0
    assert out["dir_at_fpir"]["0.01"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- plots
def _assert_png(path: Path, min_side: int = 200):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 2000
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert min(img.size) >= min_side and max(img.size) < 5000


def test_plots_write_valid_pngs(tmp_path, coil_dir):
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.5
    s = rng.normal(size=500) + 2 * y
    far, tar, _ = M.roc_curve(s, y)
    _assert_png(plots.plot_roc({"a": (far, tar), "b": (far, np.sqrt(tar))}, tmp_path / "roc.png"))
    _assert_png(plots.plot_precision_recall({"a": (np.linspace(0, 1, 20), np.linspace(1, 0.3, 20))},
                                            tmp_path / "pr.png"))
    _assert_png(plots.plot_cmc({"a": np.linspace(0.5, 0.9, 10)}, tmp_path / "cmc.png"))
    _assert_png(plots.plot_recall_vs_qps({"hnsw": [(0.9, 5000), (0.99, 800)],
                                          "ivf": [(0.8, 9000), (0.95, 1200)]},
                                         tmp_path / "qps.png"))
    _assert_png(plots.plot_bar_table({"color": {"R@1": 0.4, "mAP": 0.2},
                                      "cnn": {"R@1": 0.9, "mAP": 0.7}}, tmp_path / "sub" / "bar.png"))
    files = sorted(coil_dir.glob("obj2__*.png"))[:4] + sorted(coil_dir.glob("obj3__*.png"))[:4]
    rows = [{"query": files[0], "results": [
                {"image": files[1], "distance": 0.12, "relevant": True},
                {"image": files[4], "distance": 0.3, "relevant": False},
                {"image": files[2], "distance": 0.31, "relevant": None}]},
            {"query": files[5], "results": [{"image": files[6], "distance": 0.2, "relevant": True}]}]
    out = plots.plot_result_grid(rows, tmp_path / "grid.png", thumb_size=64)
    assert out == tmp_path / "grid.png"
    _assert_png(out, min_side=100)
    with Image.open(out) as img:  # green and red frames are drawn
        px = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    green = (px[:, 1] > 130) & (px[:, 0] < 60) & (px[:, 2] < 100)
    red = (px[:, 0] > 190) & (px[:, 1] < 80) & (px[:, 2] < 80)
    assert green.sum() > 50 and red.sum() > 50
    with pytest.raises(InputError):
        plots.plot_roc({}, tmp_path / "empty.png")
