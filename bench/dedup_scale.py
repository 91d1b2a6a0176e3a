"""Scale of the hash candidate search: 10^4, 10^5, 10^6 stored 64-bit hashes.

Synthetic uniform 64-bit hashes with planted near-duplicates (1% of the items get a copy
0..radius bits away). For each size the same 2,000 query hashes are range-searched
(radius in bits, inclusive) with

* ``flat``: FAISS ``IndexBinaryFlat`` (what a small collection uses): every query scans
  all n codes, so all-pairs time grows as n^2;
* ``multihash``: :class:`lookalike.dedup.candidates.MultiHashRangeSearcher` (exact
  multi-index hashing with ``b ~ log2 n``-bit substrings): per-query work stays nearly
  flat, so all-pairs time grows close to linearly.

All-pairs time is per-query time x n (measured on 2,000 queries; the full all-pairs run
is also timed at 10^4). Recall of the planted pairs must be 1.0 (both are exact).
Memory: index bytes (codes + hash tables, estimated) and the process's peak RSS.

    python bench/dedup_scale.py [--sizes 10000,100000,1000000] [--radius 10]
"""
from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402


def planted_hashes(n: int, radius: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    n_planted = n // 100
    sources = rng.choice(n // 2, size=n_planted, replace=False)
    targets = n // 2 + rng.choice(n - n // 2, size=n_planted, replace=False)
    bits = np.unpackbits(codes[sources], axis=1)
    for row, flips in enumerate(rng.integers(0, radius + 1, size=n_planted)):
        bits[row, rng.choice(64, size=flips, replace=False)] ^= 1
    codes[targets] = np.packbits(bits, axis=1)
    return codes, sources, targets


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    from lookalike.dedup.candidates import MultiHashRangeSearcher

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        codes, sources, targets = planted_hashes(n, args.radius)
        ids = np.arange(n, dtype=np.int64)
        q_idx = sources[: args.queries]
        queries = codes[q_idx]
        row = {"n": n, "radius": args.radius, "queries": len(q_idx)}

        flat = faiss.IndexBinaryFlat(64)
        flat.add(codes)
        start = time.perf_counter()
        lims, _, found = flat.range_search(queries, args.radius + 1)
        flat_s = time.perf_counter() - start
        flat_hits = {(int(q_idx[i]), int(j)) for i in range(len(q_idx)) for j in found[lims[i]:lims[i + 1]]}

        start = time.perf_counter()
        searcher = MultiHashRangeSearcher(codes, ids, args.radius)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        results = searcher.range_search(queries)
        mih_s = time.perf_counter() - start
        mih_hits = {(int(q_idx[i]), int(j)) for i, (got, _) in enumerate(results) for j in got}
        planted = set(zip(q_idx.tolist(), targets[: args.queries].tolist()))

        per_q_flat, per_q_mih = flat_s / len(q_idx), mih_s / len(q_idx)
        # Hash tables: one (bucket key, id) entry per code per table, ~32 bytes each in
        # std::unordered_map plus the code array itself.
        index_bytes = int(n * 8 + searcher.nhash * n * 32)
        row.update({
            "multihash": {"b": searcher.b, "nhash": searcher.nhash, "nflip": searcher.nflip,
                          "probes_per_query": searcher.nhash * sum(math.comb(searcher.b, i) for i in range(searcher.nflip + 1)),
                          "build_s": round(build_s, 3), "per_query_ms": round(per_q_mih * 1e3, 4),
                          "all_pairs_s_est": round(per_q_mih * n, 2),
                          "planted_recall": len(planted & mih_hits) / len(planted),
                          "same_results_as_flat": mih_hits == flat_hits,
                          "index_bytes_est": index_bytes},
            "flat": {"per_query_ms": round(per_q_flat * 1e3, 4), "all_pairs_s_est": round(per_q_flat * n, 2),
                     "planted_recall": len(planted & flat_hits) / len(planted), "index_bytes": n * 8},
            "peak_rss_mb": round(peak_rss_mb(), 1),
        })
        if n <= 10_000:  # the real all-pairs run, both ways
            start = time.perf_counter()
            searcher.range_search(codes)
            row["multihash"]["all_pairs_s_measured"] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            flat.range_search(codes, args.radius + 1)
            row["flat"]["all_pairs_s_measured"] = round(time.perf_counter() - start, 3)
        rows.append(row)
        print(row, file=sys.stderr)
        del flat, searcher
    growth = {}
    for a, b in zip(rows, rows[1:]):
        k = f"{a['n']}->{b['n']}"
        ratio = b["n"] / a["n"]
        growth[k] = {
            "n_ratio": ratio,
            "multihash_all_pairs_ratio": round(b["multihash"]["all_pairs_s_est"] / max(a["multihash"]["all_pairs_s_est"], 1e-9), 2),
            "flat_all_pairs_ratio": round(b["flat"]["all_pairs_s_est"] / max(a["flat"]["all_pairs_s_est"], 1e-9), 2),
            "multihash_exponent": round(math.log(b["multihash"]["all_pairs_s_est"] / max(a["multihash"]["all_pairs_s_est"], 1e-9)) / math.log(ratio), 3),
            "flat_exponent": round(math.log(b["flat"]["all_pairs_s_est"] / max(a["flat"]["all_pairs_s_est"], 1e-9)) / math.log(ratio), 3),
        }
    emit("dedup_scale", {"radius": args.radius, "faiss_threads": args.threads, "sizes": rows, "growth": growth,
                         "peak_rss_mb": round(peak_rss_mb(), 1)})


if __name__ == "__main__":
    main()
