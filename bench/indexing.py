"""Indexing throughput: `Collection.add` with the colour histogram against a bare loop
that only decodes the same files with Pillow, with the same number of processes.

    python bench/indexing.py [--workers 2] [--repeats 3] [--limit N]

Prints JSON (images/s for both, and the ratio ours / decode-only) for CIFAR-10 test
(10,000 tiny JPEGs) and LFW (13,233 250x250 JPEGs), the 1-minute load average, and a
breakdown of where our time goes: CPU microseconds per image in the worker processes
(read, hash, decode, describe) and in the parent (planning, pool traffic, SQLite
commits, index build and save), plus both per-image loops timed on one core.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, emit  # noqa: E402

from PIL import Image  # noqa: E402


def decode(path: str) -> int:
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.load()
        return img.width


def decode_only(files: list[str], workers: int) -> float:
    ctx = multiprocessing.get_context("spawn")  # the same start method the collection uses
    start = time.perf_counter()
    with ctx.Pool(workers) as pool:
        for _ in pool.imap_unordered(decode, files, chunksize=64):
            pass
    return time.perf_counter() - start


def ours(files: list[str], workers: int, spec: str) -> tuple[float, float, float]:
    """Wall seconds of ``Collection.add``, CPU seconds of this (parent) process during
    it, and CPU seconds the workers spent reading, hashing, decoding and describing."""
    from lookalike import Collection

    folder = Path(tempfile.mkdtemp(prefix="lk-bench-"))
    try:
        coll = Collection.create(folder / "c", descriptors=[spec])
        start, cpu = time.perf_counter(), time.process_time()
        report = coll.add(files, workers=workers)
        elapsed, parent_cpu = time.perf_counter() - start, time.process_time() - cpu
        assert report.added == len(files), report.failed[:3]
        coll.close()
        return elapsed, parent_cpu, report.describe_cpu_seconds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def single_core_costs(files: list[str], spec: str, n: int = 1000, repeats: int = 3) -> dict:
    """CPU microseconds per image in one process, interleaved: the peer's decode
    function against our per-file work (read, hash, decode, describe), same files."""
    from lookalike.descriptors.base import make_descriptor
    from lookalike.extraction import Extractor, Job, pack_jobs

    sample = files[:: max(1, len(files) // n)][:n]
    extractor = Extractor({"d": make_descriptor(spec)})
    packs = [pack_jobs([Job(p) for p in sample[i:i + 64]]) for i in range(0, len(sample), 64)]
    peer, mine = [], []
    for _ in range(repeats):
        start = time.process_time()
        for path in sample:
            decode(path)
        peer.append(time.process_time() - start)
        start = time.process_time()
        for pack in packs:
            extractor.run_packed(pack)
        mine.append(time.process_time() - start)
    return {"images": len(sample),
            "decode_only_cpu_us_per_image": round(statistics.median(peer) / len(sample) * 1e6, 1),
            "lookalike_worker_cpu_us_per_image": round(statistics.median(mine) / len(sample) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--descriptor", default="color:space=hsv,bins=8")
    args = parser.parse_args()
    sets = {
        "cifar10-test": sorted(map(str, (SHARED_DATA / "cifar10" / "test").rglob("*.jpg"))),
        "lfw": sorted(map(str, (SHARED_DATA / "lfw" / "images").rglob("*.jpg"))),
    }
    out = {"descriptor": args.descriptor, "workers": args.workers, "repeats": args.repeats,
           "load_average_1min_start": round(os.getloadavg()[0], 2), "sets": {}}
    for name, files in sets.items():
        if args.limit:
            files = files[: args.limit]
        base, mine, parent, workers = [], [], [], []
        for _ in range(args.repeats):  # interleaved so both see the same machine load
            base.append(decode_only(files, args.workers))
            wall, parent_cpu, worker_cpu = ours(files, args.workers, args.descriptor)
            mine.append(wall)
            parent.append(parent_cpu)
            workers.append(worker_cpu)
        b, m = statistics.median(base), statistics.median(mine)
        per_image = 1e6 / len(files)
        out["sets"][name] = {
            "images": len(files),
            "decode_only_images_per_s": round(len(files) / b, 1),
            "lookalike_add_images_per_s": round(len(files) / m, 1),
            "ratio_vs_decode_only": round(b / m, 3),
            "decode_only_seconds": [round(t, 3) for t in base],
            "lookalike_seconds": [round(t, 3) for t in mine],
            # Where our time goes, CPU microseconds per image (medians of the repeats):
            # the workers (read, hash, decode, describe) and the parent (planning, pool
            # traffic, SQLite commits, index build and save); then both loops on one core.
            "breakdown": {
                "worker_cpu_us_per_image": round(statistics.median(workers) * per_image, 1),
                "parent_cpu_us_per_image": round(statistics.median(parent) * per_image, 1),
                "single_core": single_core_costs(files, args.descriptor),
            },
        }
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    emit("indexing", out)


if __name__ == "__main__":
    main()
