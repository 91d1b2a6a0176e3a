"""Batched perceptual hashes (lookalike) vs imagehash 4.3, same files, same process.

Measures images/s for each family, median of repeats, one process, on real files:
CIFAR-10 test JPEGs (32x32) and COIL-100 PNGs (128x128) from ../shared/data.

* ``with_decode``: from file paths to hashes. lookalike: ``descriptor.transform(paths)``
  (decoding through ``lookalike.images``); imagehash: ``fn(Image.open(path))``.
* ``hash_only``: from already-decoded images. lookalike: ``transform_pixels(arrays)``;
  imagehash: ``fn(pil_image)`` on loaded PIL images.

Also checks that both produce the same hex strings on every file. Prints JSON and
writes ``bench/results/hashes.json``.

Run: ``python bench/hashes.py [--per-set 1000] [--repeats 3]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LOOKALIKE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _files(per_set: int) -> list[Path]:
    cifar = sorted((DATA / "cifar10" / "test").glob("*/*.jpg"))
    coil = sorted((DATA / "coil100" / "images").glob("*.png"))
    pick = lambda xs: xs[:: max(1, len(xs) // per_set)][:per_set]  # noqa: E731
    return pick(cifar) + pick(coil)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import imagehash

    from lookalike.descriptors import make_descriptor
    from lookalike.images import load_pixels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=1000, help="files from CIFAR and from COIL each")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    files = _files(args.per_set)
    paths = [str(p) for p in files]
    families = {
        "ahash": (imagehash.average_hash, "ahash"),
        "dhash": (imagehash.dhash, "dhash"),
        "phash": (imagehash.phash, "phash"),
        "whash": (imagehash.whash, "whash"),
        "colorhash": (imagehash.colorhash, "colorhash"),
    }
    pil_images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            pil_images.append(im.copy())
    decoded = {mode: [load_pixels(p, mode=mode) for p in paths] for mode in ("L", "RGB")}

    results = {}
    for family, (reference, spec) in families.items():
        descriptor = make_descriptor(spec)
        pixels = decoded[descriptor.image_mode]
        ours_hex = [descriptor.to_hex(row) for row in descriptor.transform(paths)]
        ref_hex = [str(reference(im)) for im in pil_images]
        mismatches = sum(a != b for a, b in zip(ours_hex, ref_hex))

        t_ours_dec = _median_time(lambda: descriptor.transform(paths), args.repeats)
        t_ref_dec = _median_time(lambda: [reference(Image.open(p)) for p in paths], args.repeats)
        t_ours_hash = _median_time(lambda: descriptor.transform_pixels(pixels), args.repeats)
        t_ref_hash = _median_time(lambda: [reference(im) for im in pil_images], args.repeats)
        n = len(paths)
        results[family] = {
            "spec": descriptor.spec,
            "hex_mismatches": mismatches,
            "with_decode": {
                "lookalike_img_per_s": round(n / t_ours_dec, 1),
                "imagehash_img_per_s": round(n / t_ref_dec, 1),
                "ratio": round(t_ref_dec / t_ours_dec, 2),
            },
            "hash_only": {
                "lookalike_img_per_s": round(n / t_ours_hash, 1),
                "imagehash_img_per_s": round(n / t_ref_hash, 1),
                "ratio": round(t_ref_hash / t_ours_hash, 2),
            },
        }
        print(family, json.dumps(results[family]), flush=True)

    report = {
        "benchmark": "perceptual hashes: lookalike (batched) vs imagehash",
        "peer": f"imagehash {imagehash.__version__}",
        "files": {"total": len(paths), "cifar10_jpeg_32x32": args.per_set, "coil100_png_128x128": args.per_set},
        "repeats": args.repeats,
        "statistic": "median wall time of repeats, 1 process",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": os.getloadavg()},
        "families": results,
    }
    out = ROOT / "bench" / "results" / "hashes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
