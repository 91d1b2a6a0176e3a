"""Scale of the hash candidate search: all-pairs range search over 10^4, 10^5, 10^6
stored 64-bit hashes.

Synthetic uniform 64-bit hashes with planted near-duplicates (1% of the items get a copy
0..radius bits away). "All pairs" means every stored hash is queried against all of
them (what ``lookalike dedup`` does with each image's identity hash), by

* ``mih``: :class:`lookalike.dedup.mih.MultiIndexHash` (numpy multi-index hashing; the
  chunk count from its cost model: 4 chunks of 16 bits at 10^4..10^6, where radius 7 probes each chunk value and its 16 one-bit flips). Per query it
  checks about ``probes x n / 2^16`` candidates instead of ``n``: ~1,000x less work
  than the scan, but once the buckets fill (n >> 2^16) that term grows with n again;
* ``flat``: FAISS ``IndexBinaryFlat`` range search (SIMD brute force, what small sets
  use): every query scans all n codes, all-pairs time grows as n^2. Measured in full
  up to ``--flat-full-max`` (10^5), estimated above it from ``--flat-sample`` queries
  x n / sample.

Both are exact: where the full brute force ran, the two pair sets must be identical
(``same_pairs_as_flat``); at 10^6 the sampled queries' results are compared. Memory:
MIH table bytes and the process's peak RSS after each size.

    python bench/dedup_scale.py [--sizes 10000,100000,1000000] [--radius 7] [--threads 1]
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
    parser.add_argument("--radius", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flat-full-max", type=int, default=100_000)
    parser.add_argument("--flat-sample", type=int, default=5000)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    from lookalike.dedup.mih import MultiIndexHash, brute_force_range_search

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        codes, sources, targets = planted_hashes(n, args.radius)
        row = {"n": n, "radius": args.radius}
        start = time.perf_counter()
        mih = MultiIndexHash(codes, radius=args.radius)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        qi, ci, _ = mih.range_search(codes, args.radius)
        mih_s = time.perf_counter() - start
        planted = set(zip(sources.tolist(), targets.tolist()))
        found = set(zip(qi.tolist(), ci.tolist()))
        row["mih"] = {"chunks": mih.chunks, "probes_per_query": mih.probes_per_query(args.radius),
                      "build_s": round(build_s, 3), "all_pairs_s": round(mih_s, 3),
                      "pairs_found": int(len(qi)), "planted_recall": len(planted & found) / len(planted),
                      "table_bytes": mih.table_bytes}
        if n <= args.flat_full_max:
            start = time.perf_counter()
            fq, fc, _ = brute_force_range_search(codes, codes, args.radius)
            flat_s = time.perf_counter() - start
            row["flat"] = {"all_pairs_s": round(flat_s, 3), "measured": "full"}
            row["same_pairs_as_flat"] = bool(np.array_equal(fq, qi) and np.array_equal(fc, ci))
        else:
            sample = np.random.default_rng(1).choice(n, size=args.flat_sample, replace=False)
            sample.sort()
            start = time.perf_counter()
            fq, fc, _ = brute_force_range_search(codes, codes[sample], args.radius)
            flat_s = (time.perf_counter() - start) * n / len(sample)
            row["flat"] = {"all_pairs_s": round(flat_s, 2), "measured": f"estimated from {len(sample)} queries"}
            mask = np.isin(qi, sample)
            mine = set(zip(qi[mask].tolist(), ci[mask].tolist()))
            row["same_pairs_as_flat"] = mine == set(zip(sample[fq].tolist(), fc.tolist()))
        row["speedup_mih_vs_flat"] = round(row["flat"]["all_pairs_s"] / max(mih_s, 1e-9), 2)
        row["peak_rss_mb"] = round(peak_rss_mb(), 1)
        rows.append(row)
        print(row, file=sys.stderr)
        del mih
    growth = {}
    for a, b in zip(rows, rows[1:]):
        ratio = b["n"] / a["n"]
        growth[f"{a['n']}->{b['n']}"] = {
            "n_ratio": ratio,
            "mih_exponent": round(math.log(b["mih"]["all_pairs_s"] / a["mih"]["all_pairs_s"]) / math.log(ratio), 3),
            "flat_exponent": round(math.log(b["flat"]["all_pairs_s"] / a["flat"]["all_pairs_s"]) / math.log(ratio), 3),
        }
    emit("dedup_scale", {"radius": args.radius, "faiss_threads": args.threads, "sizes": rows, "growth": growth,
                         "peak_rss_mb": round(peak_rss_mb(), 1)})


if __name__ == "__main__":
    main()
