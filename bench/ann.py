"""ANN benchmark: recall@10 against queries/second for lookalike's FAISS-backed indexes
and three peers (hnswlib, Annoy, USearch), on two real vector sets, single-threaded and
with 2 threads, in one run.

Data:
    * ``lfw-sift-10k`` (shared data): 10,000 x 128 SIFT base, 100 queries, exact top-100.
    * Fashion-MNIST 784-d (``apt-get install dataset-fashion-mnist``): the 60,000 train
      images as base, a seeded sample of the 10,000 test images as queries (1,000 by
      default), exact L2 ground truth by brute force (FAISS flat). This is the
      ann-benchmarks ``fashion-mnist-784-euclidean`` set.

Contenders (all queried in batches where the library allows; Annoy has only a
one-query call, so its 2-thread runs split the queries over two Python threads):
    * lookalike ``flat`` (exact: the reference line), ``hnsw`` (efSearch sweep on one
      built graph), ``ivf`` (nprobe sweep), ``ivfpqfs`` (4-bit fast-scan PQ + exact
      re-ranking; nprobe x k_factor);
    * hnswlib and USearch HNSW with the same M / efConstruction as ours, ef sweep;
    * Annoy (n_trees fixed, search_k sweep).

Timing (the machine is shared, so noisy): a first pass measures recall (and stops a
sweep once recall saturates or a point gets too slow); then ``--repeats`` timed passes
run every kept point, libraries interleaved round-robin, for each thread count; the
reported queries/second is the median over passes.

Peers are never project dependencies: run this with the bench venv, e.g.::

    /work/bench-venv/bin/python bench/ann.py

A missing peer is reported and skipped. Output: JSON on stdout and in
``bench/results/ann.json``; the plot ``docs/img/ann_recall_qps.png``.
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, emit  # noqa: E402

from lookalike.evaluation.metrics import ann_recall_at_k  # noqa: E402
from lookalike.evaluation.protocols import load_ann_sift  # noqa: E402
from lookalike.index import make_index, set_faiss_threads  # noqa: E402

K = 10
TARGETS = (0.90, 0.95, 0.99)
SATURATED = 0.999
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_SWEEP = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192)
ANNOY_SEARCH_K = (100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


# --------------------------------------------------------------------------- data
def _read_idx_images(path: Path) -> np.ndarray:
    """IDX3 ubyte (gzip) -> (n, rows*cols) float32."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX3 image file (magic {magic})")
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, rows * cols).astype(np.float32)


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact L2 top-k ids by brute force (FAISS flat)."""
    index = make_index("flat", base.shape[1], "l2")
    index.add(base, np.arange(len(base)))
    return index.search(queries, k=k).ids


def load_sets(names: list[str], n_queries: int, seed: int) -> dict[str, dict]:
    sets = {}
    if "sift" in names:
        p = load_ann_sift(SHARED_DATA)
        sets["lfw-sift-10k"] = {"base": p.base, "queries": p.queries, "gt": p.groundtruth[:, :K],
                                "note": p.description}
    if "fashion" in names:
        train = FASHION_DIR / "train-images-idx3-ubyte.gz"
        if not train.exists():
            print(f"[ann] Fashion-MNIST missing ({train}): apt-get install dataset-fashion-mnist; "
                  "skipping", file=sys.stderr)
        else:
            base = _read_idx_images(train)
            test = _read_idx_images(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
            rng = np.random.default_rng(seed)
            queries = test[np.sort(rng.choice(len(test), size=min(n_queries, len(test)),
                                              replace=False))]
            t0 = time.perf_counter()
            gt = exact_neighbours(base, queries, K)
            sets["fashion-mnist-784"] = {
                "base": base, "queries": queries, "gt": gt,
                "note": (f"Fashion-MNIST: 60,000 train images as base, {len(queries)} of the 10,000 "
                         f"test images as queries (seed={seed}); exact L2 top-{K} by FAISS flat in "
                         f"{time.perf_counter() - t0:.1f}s")}
    return sets


# --------------------------------------------------------------------------- contenders
class Contender:
    """A built index plus its knob sweep: ``search(queries, knob, threads) -> ids``."""

    library = ""
    name = ""
    knobs: tuple = ()
    build_seconds = 0.0
    build_info = ""

    def search(self, queries: np.ndarray, knob, threads: int) -> np.ndarray:
        raise NotImplementedError


class Ours(Contender):
    library = "lookalike"

    def __init__(self, spec: str, base: np.ndarray, knob_name: str | None, knobs, train_sample=None):
        self.name = f"lookalike {spec.split(',efConstruction')[0]}"
        self.spec, self.knob_name, self.knobs = spec, knob_name, tuple(knobs)
        t0 = time.perf_counter()
        self.index = make_index(spec, base.shape[1], "l2", n_hint=len(base))
        if train_sample is not None and not self.index.is_trained:
            self.index.train(train_sample)
        self.index.add(base, np.arange(len(base)))
        self.build_seconds = time.perf_counter() - t0
        self.build_info = self.index.spec

    def search(self, queries, knob, threads):
        set_faiss_threads(threads)
        if self.knob_name is None:
            kw = {}
        elif isinstance(knob, dict):
            kw = knob
        else:
            kw = {self.knob_name: knob}
        return self.index.search(queries, k=K, **kw).ids


class Hnswlib(Contender):
    library = "hnswlib"

    def __init__(self, base, m: int, ef_construction: int, threads: int):
        import hnswlib

        self.name = f"hnswlib M={m}"
        self.knobs = EF_SWEEP
        t0 = time.perf_counter()
        self.index = hnswlib.Index(space="l2", dim=base.shape[1])
        self.index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction,
                              random_seed=0)
        self.index.add_items(base, np.arange(len(base)), num_threads=threads)
        self.build_seconds = time.perf_counter() - t0
        self.build_info = f"M={m}, ef_construction={ef_construction}"

    def search(self, queries, knob, threads):
        self.index.set_ef(max(knob, K))
        labels, _ = self.index.knn_query(queries, k=K, num_threads=threads)
        return labels.astype(np.int64)


class USearch(Contender):
    library = "usearch"

    def __init__(self, base, m: int, ef_construction: int, threads: int):
        from usearch.index import Index

        self.name = f"usearch M={m}"
        self.knobs = EF_SWEEP
        t0 = time.perf_counter()
        self.index = Index(ndim=base.shape[1], metric="l2sq", dtype="f32", connectivity=m,
                           expansion_add=ef_construction, expansion_search=64)
        self.index.add(np.arange(len(base), dtype=np.uint64), base, threads=threads)
        self.build_seconds = time.perf_counter() - t0
        self.build_info = f"connectivity={m}, expansion_add={ef_construction}, dtype=f32"

    def search(self, queries, knob, threads):
        self.index.expansion_search = max(knob, K)
        matches = self.index.search(queries, K, threads=threads)
        return np.asarray(matches.keys, dtype=np.int64)


class Annoy(Contender):
    library = "annoy"

    def __init__(self, base, n_trees: int, threads: int):
        from annoy import AnnoyIndex

        self.name = f"annoy trees={n_trees}"
        self.knobs = ANNOY_SEARCH_K
        t0 = time.perf_counter()
        self.index = AnnoyIndex(base.shape[1], "euclidean")
        self.index.set_seed(0)
        for i, v in enumerate(base):
            self.index.add_item(i, v)
        self.index.build(n_trees, n_jobs=threads)
        self.build_seconds = time.perf_counter() - t0
        self.build_info = f"n_trees={n_trees}"

    def _run(self, queries, search_k):
        out = np.full((len(queries), K), -1, dtype=np.int64)
        for i, q in enumerate(queries):
            found = self.index.get_nns_by_vector(q, K, search_k=search_k)
            out[i, :len(found)] = found
        return out

    def search(self, queries, knob, threads):
        if threads == 1:
            return self._run(queries, knob)
        parts = np.array_split(np.arange(len(queries)), threads)
        with ThreadPoolExecutor(threads) as pool:  # Annoy releases the GIL while searching
            results = list(pool.map(lambda idx: self._run(queries[idx], knob), parts))
        return np.concatenate(results)


def _peer(name: str):
    """Import a peer library or explain how to get it."""
    try:
        __import__(name)
        return True
    except ImportError:
        print(f"[ann] peer {name!r} is not installed in this Python ({sys.executable}); skipping it. "
              f"Install it in the bench venv: /work/bench-venv/bin/pip install {name}",
              file=sys.stderr)
        return False


def build_contenders(data: dict, config: dict, build_threads: int) -> list[Contender]:
    base = data["base"]
    n, dim = base.shape
    out: list[Contender] = []
    nlist = int(4 * np.sqrt(n))
    set_faiss_threads(build_threads)
    rng = np.random.default_rng(0)
    train = base[np.sort(rng.choice(n, size=min(n, config["train_sample"]), replace=False))]
    log = lambda c: print(f"[ann]   built {c.name:28s} in {c.build_seconds:6.1f}s", file=sys.stderr)  # noqa: E731
    out.append(Ours("flat", base, None, [None]))
    log(out[-1])
    peers = {name: _peer(name) for name in ("hnswlib", "usearch", "annoy")}
    for m in config["hnsw_m"]:
        # Same graph parameters for every HNSW library; built with the same thread count.
        out.append(Ours(f"hnsw:M={m},efConstruction={config['ef_construction']}", base,
                        "efSearch", EF_SWEEP))
        log(out[-1])
        if peers["hnswlib"]:
            out.append(Hnswlib(base, m, config["ef_construction"], build_threads))
            log(out[-1])
        if peers["usearch"]:
            out.append(USearch(base, m, config["ef_construction"], build_threads))
            log(out[-1])
    out.append(Ours(f"ivf:nlist={nlist}", base, "nprobe", [p for p in NPROBE_SWEEP if p <= nlist],
                    train_sample=train))
    log(out[-1])
    m = dim // 4
    pq_knobs = [{"nprobe": p, "k_factor": kf} for p in NPROBE_SWEEP if 4 <= p <= nlist
                for kf in (2, 4, 8, 16)]
    out.append(Ours(f"ivfpqfs:nlist={nlist},m={m}", base, "grid", pq_knobs, train_sample=train))
    log(out[-1])
    if peers["annoy"]:
        out.append(Annoy(base, config["annoy_trees"], build_threads))
        log(out[-1])
    return out


# --------------------------------------------------------------------------- measuring
def _knob_label(knob) -> str:
    if knob is None:
        return "exact"
    if isinstance(knob, dict):
        return ",".join(f"{k}={v}" for k, v in knob.items())
    return str(knob)


def sweep_recall(contenders: list[Contender], data: dict, slow_seconds: float) -> list[dict]:
    """First pass (1 thread): recall of every knob, stopping a sweep once recall
    saturates or one batch takes longer than ``slow_seconds``."""
    points = []
    for c in contenders:
        # For the ivfpqfs grid, saturation must be judged per nprobe: keep going.
        for knob in c.knobs:
            t0 = time.perf_counter()
            ids = c.search(data["queries"], knob, threads=1)
            elapsed = time.perf_counter() - t0
            recall = ann_recall_at_k(ids, data["gt"], K)
            points.append({"contender": c, "knob": knob, "recall": recall, "times": {}})
            grid_end = not isinstance(knob, dict) or knob.get("k_factor") == 16
            if (recall >= SATURATED and grid_end) or elapsed > slow_seconds:
                break
    return points


def timing_queries(queries: np.ndarray, min_rows: int = 1000) -> np.ndarray:
    """The query batch used for timing: tiled to at least ``min_rows`` rows, so a
    100-query set is not timed in fractions of a millisecond (recall uses the originals)."""
    reps = max(1, -(-min_rows // len(queries)))
    return np.tile(queries, (reps, 1)) if reps > 1 else queries


def time_points(points: list[dict], data: dict, threads_list, repeats: int) -> None:
    """Timed passes, libraries interleaved round-robin, median later."""
    queries = data["timing_queries"]
    by_contender: dict[str, list[dict]] = {}
    for p in points:
        by_contender.setdefault(p["contender"].name, []).append(p)
    # Round-robin order: point 0 of every contender, then point 1, ...
    order = []
    for i in range(max(len(v) for v in by_contender.values())):
        order += [v[i] for v in by_contender.values() if i < len(v)]
    for threads in threads_list:
        for _ in range(repeats):
            for p in order:
                t0 = time.perf_counter()
                p["contender"].search(queries, p["knob"], threads)
                p["times"].setdefault(threads, []).append(time.perf_counter() - t0)


def best_at_targets(rows: list[dict], threads: int) -> dict[str, float | None]:
    out = {}
    for target in TARGETS:
        ok = [r["qps"][str(threads)] for r in rows if r["recall"] >= target]
        out[f"{target:.2f}"] = round(max(ok), 1) if ok else None
    return out


# --------------------------------------------------------------------------- plot
def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(recall, qps)`` points nobody beats on both axes, by recall (ann-benchmarks style):
    a knob grid (ivfpqfs nprobe x k_factor) becomes its best trade-off line."""
    out: list[tuple[float, float]] = []
    for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not out or qps > out[-1][1]:
            out.append((recall, qps))
    return out[::-1]


def plot_panels(results: dict, threads_list, path: Path) -> Path:
    """One panel per dataset x thread count; each contender's Pareto frontier, one
    colour per contender name across panels (flat = dashed reference)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sets = list(results)
    names = list(dict.fromkeys(c for res in results.values() for c in res["contenders"]))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf", "#000000"]
    colour = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    fig = Figure(figsize=(6.0 * len(threads_list), 4.6 * len(sets)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(sets), len(threads_list), squeeze=False)
    for i, name in enumerate(sets):
        for j, threads in enumerate(threads_list):
            ax = axes[i][j]
            for cname, c in results[name]["contenders"].items():
                pts = pareto_frontier([(r["recall"], r["qps"][str(threads)]) for r in c["points"]
                                       if str(threads) in r["qps"]])
                if not pts:
                    continue
                recall, qps = zip(*pts)
                flat = c["library"] == "lookalike" and cname.endswith("flat")
                if flat:
                    ax.axhline(qps[0], color=colour[cname], linestyle="--", linewidth=1,
                               label=f"{cname} (exact)")
                    continue
                ax.plot(recall, qps, "-", marker="o", markersize=3, color=colour[cname],
                        label=cname, linewidth=2 if c["library"] == "lookalike" else 1.2)
            ax.set_yscale("log")
            ax.set_xlim(0.8, 1.002)
            for t in TARGETS:
                ax.axvline(t, color="#bbbbbb", linewidth=0.8)
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries per second (log)")
            ax.set_title(f"{name}, {threads} thread{'s' if threads > 1 else ''} (Pareto frontiers)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="x-small", loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------- main
CONFIG = {
    "lfw-sift-10k": {"hnsw_m": (16, 32), "ef_construction": 200, "annoy_trees": 50,
                     "train_sample": 10_000, "slow_seconds": 5.0},
    "fashion-mnist-784": {"hnsw_m": (16,), "ef_construction": 100, "annoy_trees": 32,
                          "train_sample": 25_000, "slow_seconds": 6.0},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="sift,fashion", help="comma list: sift, fashion")
    ap.add_argument("--queries", type=int, default=1000, help="Fashion-MNIST test queries sampled")
    ap.add_argument("--threads", default="1,2", help="thread counts to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "ann_recall_qps.png"))
    ap.add_argument("--name", default="ann", help="bench/results/NAME.json")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the plot from bench/results/NAME.json (no measuring)")
    args = ap.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    if args.replot:
        import json

        saved = json.loads((ROOT / "bench" / "results" / f"{args.name}.json").read_text())
        print(plot_panels(saved["datasets"], saved["threads"], Path(args.plot)))
        return 0
    started = time.perf_counter()
    sets = load_sets([s.strip() for s in args.datasets.split(",")], args.queries, args.seed)
    results: dict[str, dict] = {}
    versions = {}
    for lib in ("faiss", "hnswlib", "usearch", "annoy"):
        try:
            mod = __import__(lib)
            versions[lib] = getattr(mod, "__version__", "installed")
        except ImportError:
            versions[lib] = None
    for name, data in sets.items():
        config = CONFIG[name]
        print(f"[ann] {name}: base {data['base'].shape}, {len(data['queries'])} queries",
              file=sys.stderr)
        t0 = time.perf_counter()
        contenders = build_contenders(data, config, build_threads=max(threads_list))
        build_s = time.perf_counter() - t0
        points = sweep_recall(contenders, data, config["slow_seconds"])
        data["timing_queries"] = timing_queries(data["queries"])
        time_points(points, data, threads_list, args.repeats)
        table: dict[str, dict] = {}
        for c in contenders:
            rows = []
            for p in (p for p in points if p["contender"] is c):
                rows.append({"knob": _knob_label(p["knob"]), "recall": round(p["recall"], 4),
                             "qps": {str(t): round(len(data["timing_queries"]) / statistics.median(ts), 1)
                                     for t, ts in p["times"].items()},
                             "seconds": {str(t): [round(x, 4) for x in ts]
                                         for t, ts in p["times"].items()}})
            table[c.name] = {"library": c.library, "build": c.build_info,
                             "build_seconds": round(c.build_seconds, 2), "points": rows,
                             "best_qps_at_recall": {str(t): best_at_targets(rows, t)
                                                    for t in threads_list}}
        results[name] = {"note": data["note"], "n_base": int(len(data["base"])),
                         "dim": int(data["base"].shape[1]), "n_queries": int(len(data["queries"])),
                         "n_timed_queries": int(len(data["timing_queries"])),
                         "config": {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in config.items()},
                         "build_seconds_total": round(build_s, 1),
                         "measure_seconds": round(time.perf_counter() - t0 - build_s, 1),
                         "contenders": table}
        del contenders, points
    plot = plot_panels(results, threads_list, Path(args.plot))
    summary = {name: {c: r["best_qps_at_recall"] for c, r in res["contenders"].items()}
               for name, res in results.items()}
    emit(args.name, {
        "k": K, "targets": list(TARGETS), "threads": threads_list, "repeats": args.repeats,
        "versions": versions, "plot": str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot),
        "timing_method": ("query sets shorter than 1,000 rows are tiled to 1,000 for timing; "
                          "batch queries per call (Annoy: one call per query, 2 threads = 2 "
                          "Python threads); first pass for recall, then repeats timed "
                          "with libraries interleaved; qps = n_queries / median seconds"),
        "summary_best_qps_at_recall": summary, "datasets": results,
        "total_seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
