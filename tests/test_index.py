"""Index layer: every kind against exact search, conventions, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.errors import CollectionError, ConfigError, InputError
from lookalike.index import load_index, make_index, resolve_auto_spec


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    rows = raw.reshape(-1, dim + 1)
    return rows[:, 1:].view(dtype) if dtype == np.float32 else rows[:, 1:]


@pytest.fixture(scope="module")
def sift(shared_data):
    folder = shared_data / "ann" / "lfw-sift-10k"
    base = read_vecs(folder / "base.fvecs", np.float32)
    queries = read_vecs(folder / "query.fvecs", np.float32)
    truth = read_vecs(folder / "groundtruth.ivecs", np.int32)
    return base, queries, truth


def recall_at_10(found, truth):
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))


def test_flat_matches_ground_truth(sift):
    base, queries, truth = sift
    index = make_index("flat", 128, "l2")
    index.add(base, np.arange(len(base)))
    result = index.search(queries, 10)
    assert recall_at_10(result.ids, truth) > 0.99  # ties may swap at rank 10
    exact = np.sqrt(((queries[:, None, :] - base[None, result.ids[:, 0], :][0]) ** 2).sum(-1))
    np.testing.assert_allclose(result.distances[:, 0], np.diag(exact), rtol=1e-4)


# Documented settings that reach recall@10 >= 0.95 on the real SIFT vectors.
ANN_SETTINGS = [
    ("hnsw:M=32,efConstruction=80,efSearch=64", {}),
    ("ivf:nlist=100,nprobe=16", {}),
    ("ivfpq:nlist=100,m=16,nbits=6,refine=true,nprobe=16", {"k_factor": 8}),
    ("ivfpqfs:nlist=100,m=32,nprobe=16", {"k_factor": 16}),
]


@pytest.mark.parametrize("spec,knobs", ANN_SETTINGS)
def test_ann_recall_against_exact(sift, spec, knobs):
    base, queries, truth = sift
    index = make_index(spec, 128, "l2", n_hint=len(base))
    index.train(base)
    index.add(base, np.arange(len(base)))
    result = index.search(queries, 10, **knobs)
    assert recall_at_10(result.ids, truth) >= 0.95, spec
    assert np.all(np.diff(result.distances, axis=1) >= -1e-5)


def test_search_knobs_change_recall(sift):
    base, queries, truth = sift
    index = make_index("ivf:nlist=100", 128, "l2")
    index.train(base)
    index.add(base, np.arange(len(base)))
    low = recall_at_10(index.search(queries, 10, nprobe=1).ids, truth)
    high = recall_at_10(index.search(queries, 10, nprobe=32).ids, truth)
    assert low < 0.8 < 0.97 < high


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_metrics_follow_the_distance_convention(metric):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    index = make_index("flat", 16, metric)
    index.add(x, np.arange(300) * 10)
    result = index.search(q, 7)
    if metric == "l2":
        dist = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    elif metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        dist = 1 - qn @ xn.T
    else:
        dist = -(q @ x.T)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :7] * 10
    np.testing.assert_array_equal(result.ids, expected)
    np.testing.assert_allclose(result.distances, np.sort(dist, axis=1)[:, :7], rtol=1e-4, atol=1e-5)


def test_padding_remove_filter_and_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    for spec in ["flat", "hnsw:M=8"]:
        index = make_index(spec, 8, "l2")
        index.add(x, [10, 11, 12, 13, 14])
        result = index.search(x[:1], 8)
        assert list(result.ids[0, 5:]) == [-1, -1, -1] and np.isinf(result.distances[0, 5:]).all()
        assert index.remove([10, 99]) == 1 and index.ntotal == 4
        assert 10 not in index.search(x[:1], 5).ids
        only = index.search(x, 3, allowed_ids=[12, 13])
        assert set(only.ids[only.ids >= 0].tolist()) <= {12, 13}
        index.save(tmp_path / "i.lkidx")
        again = load_index(tmp_path / "i.lkidx")
        assert again.spec == index.spec and again.ntotal == 4 and again.metric == "l2"
        np.testing.assert_array_equal(again.search(x, 3).ids, index.search(x, 3).ids)


def test_binary_hamming_index():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (500, 8), dtype=np.uint8)
    index = make_index("binary", 64, "hamming")
    index.add(codes, np.arange(500))
    result = index.search(codes[:3], 4)
    bits = np.unpackbits(codes, axis=1)
    hamming = (bits[:3, None, :] != bits[None, :, :]).sum(-1)
    np.testing.assert_array_equal(result.distances, np.sort(hamming, axis=1)[:, :4])
    within = index.range_search(codes[:1], 24)[0]
    assert set(within[0].tolist()) == set(np.nonzero(hamming[0] <= 24)[0].tolist())


def test_auto_and_bad_specs(tmp_path):
    assert resolve_auto_spec(1000, 64, "l2")[0] == "flat"
    assert resolve_auto_spec(500_000, 64, "l2")[0].startswith("hnsw")
    assert resolve_auto_spec(10, 64, "hamming")[0] == "binary"
    auto = make_index("auto", 16, "l2", n_hint=10)
    assert auto.spec == "flat" and "exact" in auto.auto_reason
    with pytest.raises(ConfigError, match="valid"):
        make_index("annoy", 16, "l2")
    with pytest.raises(ConfigError):
        make_index("faiss:NotAThing", 16, "l2")
    with pytest.raises(InputError, match="shape"):
        make_index("flat", 16, "l2").add(np.zeros((2, 15), np.float32), [1, 2])
    (tmp_path / "junk.lkidx").write_bytes(b"garbage")
    with pytest.raises(CollectionError, match="not a lookalike index"):
        load_index(tmp_path / "junk.lkidx")


def test_spec_search_knobs_are_built_in_and_saved(tmp_path):
    import faiss

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    for spec, check in [
        ("ivfpqfs:nlist=30,m=16,nprobe=7,k_factor=4",
         lambda ix: (faiss.downcast_index(ix).k_factor, faiss.extract_index_ivf(ix).nprobe) == (4.0, 7)),
        ("hnsw:M=8,efSearch=33", lambda ix: faiss.downcast_index(ix).hnsw.efSearch == 33),
        ("ivf:nlist=30,nprobe=5", lambda ix: faiss.extract_index_ivf(ix).nprobe == 5),
    ]:
        index = make_index(spec, 32, "l2")
        index.train(x)
        index.add(x, np.arange(3000))
        index.save(tmp_path / "k.lkidx")
        assert check(index._index) and check(load_index(tmp_path / "k.lkidx")._index), spec
    with pytest.raises(ConfigError, match="no search knob"):
        make_index("flat:nprobe=3", 32, "l2")
