"""MilvusIndex (milvus-lite, in-process) against FaissIndex on the same SIFT vectors.

Data: ``lfw-sift-10k`` (shared data): 10,000 x 128 base, 100 queries, exact top-100.
For each kind (exact ``flat``, ``hnsw`` M=16/efConstruction=64 with an efSearch sweep,
``ivf`` nlist=64 with an nprobe sweep) it reports build seconds (add + flush + load
for Milvus, which builds its index in the background), recall@10 against the ground
truth, queries/second for the 100 queries in one call and for one query per call
(median of ``--repeats`` passes, the two backends interleaved). FAISS runs with one
thread: milvus-lite's engine is FAISS behind a Python gRPC server, so the ratio is the
price of the client/server path, not of a different ANN algorithm.

Run::

    python bench/milvus.py [--repeats 3]

Output: JSON on stdout and in ``bench/results/milvus.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, emit  # noqa: E402

from lookalike.evaluation.protocols import read_fvecs, read_ivecs  # noqa: E402
from lookalike.index.faiss import FaissIndex, set_faiss_threads  # noqa: E402
from lookalike.index.milvus import MilvusIndex  # noqa: E402


def recall10(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(ids[i, :10]) & set(truth[i, :10])) / 10 for i in range(len(ids))]))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=30, help="queries timed one per call")
    args = parser.parse_args()
    folder = SHARED_DATA / "ann" / "lfw-sift-10k"
    base, queries = read_fvecs(folder / "base.fvecs"), read_fvecs(folder / "query.fvecs")
    truth = read_ivecs(folder / "groundtruth.ivecs")
    ids = np.arange(len(base))
    set_faiss_threads(1)
    tmp = tempfile.mkdtemp(prefix="lk-milvus-bench-")
    db = f"{tmp}/bench.db"

    configs = [("flat", "flat", "index=flat", [{}]),
               ("hnsw", "hnsw:M=16,efConstruction=64", "index=hnsw,M=16,efConstruction=64",
                [{"efSearch": ef} for ef in (16, 32, 64, 128)]),
               ("ivf", "ivf:nlist=64", "index=ivf,nlist=64", [{"nprobe": p} for p in (1, 4, 16)])]
    rows = []
    for kind, faiss_spec, milvus_extra, sweep in configs:
        faiss_index = FaissIndex(faiss_spec, 128, "l2", n_hint=len(base))
        faiss_build = timed(lambda: (faiss_index.train(base), faiss_index.add(base, ids)))
        milvus_index = MilvusIndex(f"milvus:uri={db},collection=b_{kind},{milvus_extra}", 128, "l2",
                                   n_hint=len(base), reset=True)
        milvus_build = timed(lambda: (milvus_index.add(base, ids), milvus_index.flush(), milvus_index.reload()))
        for knobs in sweep:
            point = {"kind": kind, "knobs": knobs}
            for name, index, build in (("faiss", faiss_index, faiss_build), ("milvus", milvus_index, milvus_build)):
                point[name] = {"build_s": round(build, 3),
                               "recall_at_10": recall10(index.search(queries, 10, **knobs).ids, truth)}
            batch = {"faiss": [], "milvus": []}
            single = {"faiss": [], "milvus": []}
            for _ in range(args.repeats):  # interleaved: both see the same machine load
                for name, index in (("faiss", faiss_index), ("milvus", milvus_index)):
                    batch[name].append(timed(lambda: index.search(queries, 10, **knobs)))
                    single[name].append(timed(lambda: [index.search(queries[i:i + 1], 10, **knobs)
                                                       for i in range(args.single)]))
            for name in ("faiss", "milvus"):
                point[name]["qps_batch"] = round(len(queries) / statistics.median(batch[name]), 1)
                point[name]["qps_single"] = round(args.single / statistics.median(single[name]), 1)
            point["faiss_over_milvus_qps_batch"] = round(point["faiss"]["qps_batch"] / point["milvus"]["qps_batch"], 1)
            point["faiss_over_milvus_qps_single"] = round(point["faiss"]["qps_single"] / point["milvus"]["qps_single"], 1)
            rows.append(point)
            print(point, file=sys.stderr)
        milvus_index.drop()
    import milvus_lite
    import pymilvus

    emit("milvus", {"data": "lfw-sift-10k (10,000 x 128, 100 queries)", "k": 10, "repeats": args.repeats,
                    "faiss_threads": 1, "pymilvus": pymilvus.__version__,
                    "milvus_lite": getattr(milvus_lite, "__version__", "?"), "results": rows})


if __name__ == "__main__":
    main()
