"""Indexing throughput: `Collection.add` with the colour histogram against a bare loop
that only decodes the same files with Pillow, with the same number of processes.

    python bench/indexing.py [--workers 2] [--repeats 3] [--limit N]

Prints JSON (images/s for both, and the ratio ours / decode-only) for CIFAR-10 test
(10,000 tiny JPEGs) and LFW (13,233 250x250 JPEGs).
"""
from __future__ import annotations

import argparse
import multiprocessing
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


def ours(files: list[str], workers: int, spec: str) -> float:
    from lookalike import Collection

    folder = Path(tempfile.mkdtemp(prefix="lk-bench-"))
    try:
        coll = Collection.create(folder / "c", descriptors=[spec])
        start = time.perf_counter()
        report = coll.add(files, workers=workers)
        elapsed = time.perf_counter() - start
        assert report.added == len(files), report.failed[:3]
        coll.close()
        return elapsed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
    out = {"descriptor": args.descriptor, "workers": args.workers, "repeats": args.repeats, "sets": {}}
    for name, files in sets.items():
        if args.limit:
            files = files[: args.limit]
        base, mine = [], []
        for _ in range(args.repeats):  # interleaved so both see the same machine load
            base.append(decode_only(files, args.workers))
            mine.append(ours(files, args.workers, args.descriptor))
        b, m = statistics.median(base), statistics.median(mine)
        out["sets"][name] = {
            "images": len(files),
            "decode_only_images_per_s": round(len(files) / b, 1),
            "lookalike_add_images_per_s": round(len(files) / m, 1),
            "ratio_vs_decode_only": round(b / m, 3),
            "decode_only_seconds": [round(t, 3) for t in base],
            "lookalike_seconds": [round(t, 3) for t in mine],
        }
    emit("indexing", out)


if __name__ == "__main__":
    main()
