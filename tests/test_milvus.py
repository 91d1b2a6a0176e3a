"""MilvusIndex against the real engine (milvus-lite, in-process and as a gRPC server),
checked against FAISS exact search, numpy brute force and the SIFT ground truth.

milvus-lite opens a ``.db`` file from one process at a time (and keeps it until the
process exits), so tests in this process share one ``.db`` (a collection each); tests
that need other processes (reload after exit, parallel shard writers) give them their
own file or talk to a ``milvus-lite server`` over gRPC, as a cluster would be reached.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from lookalike.errors import CollectionError, ConfigError, InputError  # noqa: E402
from lookalike.evaluation.protocols import read_fvecs, read_ivecs  # noqa: E402
from lookalike.index.faiss import FaissIndex  # noqa: E402
from lookalike.index.milvus import MilvusIndex, is_milvus_pointer, is_milvus_spec, parse_milvus_spec  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def sift(shared_data):
    folder = shared_data / "ann" / "lfw-sift-10k"
    return (read_fvecs(folder / "base.fvecs"), read_fvecs(folder / "query.fvecs"),
            read_ivecs(folder / "groundtruth.ivecs").astype(np.int64))


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory) -> str:
    """One milvus-lite file for this process (one collection per test)."""
    return str(tmp_path_factory.mktemp("milvus") / "lk.db")


def milvus(db: str, collection: str, extra: str = "", **kwargs) -> MilvusIndex:
    spec = f"milvus:uri={db},collection={collection}" + (f",{extra}" if extra else "")
    return MilvusIndex(spec, kwargs.pop("dim", 128), kwargs.pop("metric", "l2"), reset=True, **kwargs)


def recall_at(ids: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(ids[i, :k]) & set(truth[i, :k])) / k for i in range(len(ids))]))


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_flat_matches_faiss_exact(sift, lite_db):
    base, queries, _ = sift
    index = milvus(lite_db, "flat_sift", "index=flat")
    index.add(base, np.arange(len(base)) + 1000)  # ids unrelated to row numbers
    index.flush()  # a sealed segment is searched by the engine's FLAT index (the buffer is scanned row-wise)
    assert index.ntotal == len(base)
    got = index.search(queries, k=10)
    exact = FaissIndex("flat", 128, "l2")
    exact.add(base, np.arange(len(base)) + 1000)
    want = exact.search(queries, k=10)
    assert got.ids.dtype == np.int64 and got.ids.shape == (100, 10)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-3)
    assert np.mean(got.ids == want.ids) >= 0.99  # SIFT is integer-valued: exact ties may swap
    # Every returned id really sits at its reported Euclidean distance (ties included).
    true = np.linalg.norm(base[got.ids - 1000] - queries[:, None, :], axis=2)
    np.testing.assert_allclose(got.distances, true, rtol=1e-4, atol=1e-3)


def test_hnsw_recall_and_search_knobs(sift, lite_db):
    base, queries, truth = sift
    index = milvus(lite_db, "hnsw_sift", "index=hnsw,M=16,efConstruction=64,efSearch=64")
    index.add(base, np.arange(len(base)))
    index.flush()  # sealed segments are where Milvus builds (and searches) the HNSW graph
    index.reload()  # loading waits for the graph; before that the segment is searched exactly
    full = recall_at(index.search(queries, k=10).ids, truth)
    low = recall_at(index.search(queries, k=10, efSearch=10).ids, truth)
    assert full >= 0.95
    assert low < full  # the knob reaches the graph: a small ef loses neighbours
    assert index.describe()["index_type"] == "HNSW"


def test_ivf_nprobe_trades_recall(sift, lite_db):
    base, queries, truth = sift
    index = milvus(lite_db, "ivf_sift", "index=ivf,nlist=64,nprobe=4")
    index.add(base, np.arange(len(base)))
    index.flush()
    index.reload()
    one = recall_at(index.search(queries, k=10, nprobe=1).ids, truth)
    every = recall_at(index.search(queries, k=10, nprobe=64).ids, truth)
    assert every == pytest.approx(1.0)  # probing every list is exact search
    assert one < 0.9 < every


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_metric_conventions_against_numpy(lite_db, metric):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    q = rng.standard_normal((5, 24)).astype(np.float32)
    index = milvus(lite_db, f"conv_{metric}", dim=24, metric=metric)
    index.add(x, np.arange(300) * 3)
    got = index.search(q, k=7)
    if metric == "l2":
        dist = np.linalg.norm(q[:, None] - x[None], axis=2)
    elif metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T
    else:
        dist = -(q @ x.T)
    order = np.argsort(dist, axis=1)[:, :7]
    np.testing.assert_array_equal(got.ids, order * 3)
    np.testing.assert_allclose(got.distances, np.take_along_axis(dist, order, 1), rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(got.distances, axis=1) >= -1e-6)  # ascending, smaller = closer


def test_remove_filter_and_padding(lite_db):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    index = milvus(lite_db, "small", dim=16)
    index.add(x, np.arange(40) + 100)
    assert index.remove([100, 101, 101, 999]) == 2  # duplicates and unknown ids ignored
    assert index.remove([100]) == 0
    assert index.ntotal == 38
    np.testing.assert_array_equal(index.ids, np.arange(102, 140))
    hit = index.search(x[:2], k=1)
    assert not np.isin(hit.ids, [100, 101]).any()
    allowed = [105, 110, 120, 101]  # 101 is gone: never returned
    res = index.search(x[:3], k=5, allowed_ids=allowed)
    assert set(res.ids[res.ids >= 0].tolist()) <= {105, 110, 120}
    assert (res.ids[:, 3:] == -1).all() and np.isinf(res.distances[:, 3:]).all()
    dist = np.linalg.norm(x[[5, 10, 20]][None] - x[:3, None], axis=2)
    np.testing.assert_allclose(res.distances[:, :3], np.sort(dist, axis=1), rtol=1e-4, atol=1e-5)
    nothing = index.search(x[:2], k=3, allowed_ids=[])
    assert (nothing.ids == -1).all() and np.isinf(nothing.distances).all()
    padded = index.search(x[:1], k=50)
    assert (padded.ids[0, 38:] == -1).all() and np.isfinite(padded.distances[0, :38]).all()
    index.add(x[:1] + 1.0, [102])  # upsert: the id now points at the new vector
    assert index.ntotal == 38
    assert index.search(x[:1] + 1.0, k=1).ids[0, 0] == 102
    with pytest.raises(InputError):
        index.add(x[:2, :8], [1, 2])
    with pytest.raises(InputError):
        index.add(x[:2], [1, 1])
    with pytest.raises(ConfigError):
        index.search(x[:1], k=1, efConstruction=3)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_range_search_against_numpy(lite_db, metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    q = rng.standard_normal((4, 8)).astype(np.float32)
    index = milvus(lite_db, f"range_{metric}", dim=8, metric=metric)
    index.add(x, np.arange(200))
    if metric == "l2":
        dist, radius = np.linalg.norm(q[:, None] - x[None], axis=2), 2.5
    else:
        dist = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
        radius = 0.3
    found = index.range_search(q, radius)
    assert sum(len(ids) for ids, _ in found) >= 8  # the radius catches something
    for row, (ids, d) in enumerate(found):
        want = np.flatnonzero(dist[row] <= radius)
        np.testing.assert_array_equal(np.sort(ids), want)
        np.testing.assert_allclose(d, np.sort(dist[row][want]), rtol=1e-4, atol=1e-5)


def test_hamming_when_the_engine_has_binary_vectors(lite_db):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (150, 8), dtype=np.uint8)
    try:
        index = milvus(lite_db, "bits", dim=64, metric="hamming")
    except ConfigError as exc:  # milvus-lite 3.x has no BINARY_VECTOR; clusters and lite 2.x do
        pytest.skip(f"this Milvus engine has no binary vectors: {exc}")
    index.add(codes, np.arange(150))
    got = index.search(codes[:4], k=5)
    bits = np.unpackbits(codes[:4, None] ^ codes[None], axis=2).sum(2)
    np.testing.assert_array_equal(got.distances, np.sort(bits, axis=1)[:, :5])
    np.testing.assert_array_equal(got.ids[:, 0], np.arange(4))


def test_save_then_load_in_a_new_process(tmp_path):
    """A pointer written by one process reconnects (after that process exited) to the
    same .db file, and the vectors come back from the engine's own storage."""
    db, pointer = tmp_path / "own.db", tmp_path / "cnn.lkidx"
    run_python("""
        import sys, numpy as np
        from lookalike.index.milvus import MilvusIndex
        x = np.random.default_rng(11).standard_normal((120, 12)).astype(np.float32)
        index = MilvusIndex(f"milvus:uri={sys.argv[1]},collection=photos,index=ivf,nlist=4,nprobe=4",
                            12, "cosine", name="cnn")
        index.add(x, np.arange(120) + 7)
        index.remove([7, 8])
        index.save(sys.argv[2], extra={"generation": 5})
    """, str(db), str(pointer))
    assert is_milvus_pointer(pointer) and not list(tmp_path.glob("*.tmp"))
    header = json.loads(pointer.read_text())
    assert header["collection"] == "photos_cnn" and header["dim"] == 12 and header["metric"] == "cosine"
    assert header["uri"] == str(db.resolve())
    index, extra = MilvusIndex.load_with_extra(pointer)
    assert extra == {"generation": 5}
    assert (index.dim, index.metric, index.index_type, index.ntotal) == (12, "cosine", "IVF_FLAT", 118)
    x = np.random.default_rng(11).standard_normal((120, 12)).astype(np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    got = index.search(x[2:6], k=3)
    np.testing.assert_array_equal(got.ids[:, 0], np.arange(2, 6) + 7)
    dist = 1 - xn[2:6] @ xn[2:].T
    np.testing.assert_allclose(got.distances, np.sort(dist, axis=1)[:, :3], rtol=1e-4, atol=1e-5)
    # A collection that disagrees, a damaged pointer, a vanished collection: clear errors.
    with pytest.raises(CollectionError, match="dim"):
        MilvusIndex(f"milvus:uri={db},collection=photos_cnn,index=ivf", 16, "cosine")
    bad = tmp_path / "bad.lkidx"
    bad.write_text("{not json")
    with pytest.raises(CollectionError):
        MilvusIndex.load(bad)
    index.drop()
    with pytest.raises(CollectionError, match="gone"):
        MilvusIndex.load(pointer)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def milvus_server(tmp_path):
    """``milvus-lite server`` in its own process: a gRPC uri, as a cluster would give."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "srv"),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"milvus-lite server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("milvus-lite server did not open its port in 60 s")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


WORKER = """
    import sys, numpy as np
    from lookalike.evaluation.protocols import read_fvecs
    from lookalike.index.milvus import MilvusIndex
    uri, data, shard, n_shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    base = read_fvecs(data)[:2000]
    ids = np.arange(len(base))
    mine = ids % n_shards == shard  # interleaved ids: unique across workers
    index = MilvusIndex(f"milvus:uri={uri},collection=sift", 128, "l2", shard=shard)
    for start in range(0, int(mine.sum()), 500):  # several batches, so the workers interleave
        index.add(base[mine][start:start + 500], ids[mine][start:start + 500])
    assert index.ntotal == int(mine.sum()), index.ntotal
"""


def test_shard_writers_in_parallel_equal_a_single_writer(sift, milvus_server, shared_data):
    """Two worker processes write half each into one collection at the same time (through
    the server; a .db file admits one process); the result equals one writer's build."""
    base, queries, _ = sift
    base = base[:2000]
    data = str(shared_data / "ann" / "lfw-sift-10k" / "base.fvecs")
    # The collection is created once before the workers start (two creators would race).
    MilvusIndex(f"milvus:uri={milvus_server},collection=sift", 128, "l2", reset=True).close()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER), milvus_server, data, str(i), "2"],
                                env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err[-3000:]

    sharded = MilvusIndex(f"milvus:uri={milvus_server},collection=sift", 128, "l2")
    single = MilvusIndex(f"milvus:uri={milvus_server},collection=sift_single", 128, "l2", reset=True)
    single.add(base, np.arange(len(base)))
    assert sharded.ntotal == single.ntotal == len(base)
    got, want = sharded.search(queries, k=10), single.search(queries, k=10)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-6)

    # A writer sees and removes only its own shard; search spans every shard.
    shard0 = MilvusIndex(f"milvus:uri={milvus_server},collection=sift", 128, "l2", shard=0)
    np.testing.assert_array_equal(shard0.ids, np.arange(0, len(base), 2))
    assert shard0.ntotal == len(base) // 2 and shard0.ntotal_all == len(base)
    assert shard0.remove([1, 3]) == 0  # shard 1's rows are out of shard 0's reach
    assert shard0.remove([0, 2]) == 2
    assert sharded.ntotal == len(base) - 2


def test_spec_parsing_and_errors(tmp_path):
    assert parse_milvus_spec("milvus:uri=http://h:19530,index=hnsw,efSearch=32") == {
        "uri": "http://h:19530", "index": "hnsw", "efSearch": "32"}
    assert is_milvus_spec("milvus:uri=a.db") and not is_milvus_spec("hnsw:M=16")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_milvus_spec("milvus:uri=a.db,bogus=1")
    with pytest.raises(ConfigError, match="key=value"):
        parse_milvus_spec("milvus:uri")
    with pytest.raises(ConfigError, match=".db"):
        MilvusIndex(f"milvus:uri={tmp_path / 'x.sqlite'}", 8, "l2")
    with pytest.raises(ConfigError, match="hnsw"):
        MilvusIndex(f"milvus:uri={tmp_path / 'x.db'},index=hnsw", 64, "hamming")
    with pytest.raises(ConfigError, match="collection name"):
        MilvusIndex(f"milvus:uri={tmp_path / 'x.db'},collection=bad-name", 8, "l2")
    with pytest.raises(ConfigError, match="metric"):
        MilvusIndex(f"milvus:uri={tmp_path / 'x.db'}", 8, "manhattan")


def test_import_stays_light_and_missing_package_names_the_extra():
    run_python("""
        import sys
        import lookalike, lookalike.index, lookalike.index.milvus
        assert "pymilvus" not in sys.modules and "grpc" not in sys.modules
        sys.modules["pymilvus"] = None  # as if not installed
        from lookalike.errors import MissingDependencyError
        from lookalike.index.milvus import MilvusIndex
        try:
            MilvusIndex("milvus:uri=/tmp/never.db", 8, "l2")
        except MissingDependencyError as exc:
            assert "lookalike[milvus]" in str(exc), exc
        else:
            raise SystemExit("no MissingDependencyError")
    """)
