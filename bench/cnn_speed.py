"""CNN descriptor throughput: onnxruntime vs torch eager on the same real images.

Both engines run the same EfficientNet-Lite0 + GeM graph (``cnn:pool=gem,p=3``) with
the same thread count and batch size on ~300 real images (COIL-100 PNGs and LFW
JPEGs), decoded once beforehand so only preprocessing + inference is timed. Each
engine gets a warm-up pass (ONNX export / session creation / model build, reported
separately), then ``--repeats`` timed passes; the median is reported.

Usage::

    python bench/cnn_speed.py [--n 300] [--threads 0] [--batch 32] [--repeats 3]

Prints JSON and writes ``bench/results/cnn_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def real_image_files(n: int) -> list[Path]:
    """Half COIL-100 PNGs (128x128 colour), half LFW JPEGs (250x250 gray), deterministic."""
    coil = sorted((SHARED / "coil100" / "images").glob("*.png"))
    lfw = sorted((SHARED / "lfw" / "images").glob("*/*.jpg"))
    if not coil or not lfw:
        sys.exit(f"real data not found under {SHARED}")
    half = n // 2
    pick = lambda files, k: [files[i] for i in np.linspace(0, len(files) - 1, k).astype(int)]  # noqa: E731
    return pick(coil, half) + pick(lfw, n - half)


def time_engine(spec: str, pixels: list[np.ndarray], repeats: int) -> dict:
    from lookalike.descriptors import make_descriptor

    descriptor = make_descriptor(spec)
    start = time.perf_counter()
    descriptor.transform_pixels(pixels[:2])  # export / session / model build
    startup_s = time.perf_counter() - start
    runs, vectors = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = descriptor.transform_pixels(pixels)
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return {
        "spec": descriptor.spec,
        "engine": descriptor.resolved_engine,
        "startup_s": round(startup_s, 3),
        "runs_s": [round(r, 3) for r in runs],
        "median_s": round(median, 3),
        "images_per_s": round(len(pixels) / median, 2),
        "ms_per_image": round(1000 * median / len(pixels), 2),
    }, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="number of real images")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0 = all cores)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from lookalike.descriptors import make_descriptor
    from lookalike.images import load_pixels
    from lookalike.models.onnx_cache import available_cores

    threads = args.threads or available_cores()
    common = f"cnn:pool=gem,p=3,threads={threads},batch={args.batch}"
    files = real_image_files(args.n)
    start = time.perf_counter()
    max_side = make_descriptor(common).max_side
    pixels = [load_pixels(f, mode="RGB", max_side=max_side) for f in files]
    decode_s = time.perf_counter() - start

    onnx, x_onnx = time_engine(common + ",engine=onnx", pixels, args.repeats)
    eager, x_torch = time_engine(common + ",engine=torch", pixels, args.repeats)

    import onnxruntime
    import torch

    result = {
        "benchmark": "cnn_speed",
        "what": "EfficientNet-Lite0 + GeM descriptors, preprocessing + inference, pre-decoded images",
        "images": {"n": len(pixels), "coil100_png": args.n // 2, "lfw_jpg": args.n - args.n // 2},
        "decode_ms_per_image": round(1000 * decode_s / len(pixels), 2),
        "threads": threads,
        "batch": args.batch,
        "repeats": args.repeats,
        "onnxruntime": onnx,
        "torch_eager": eager,
        "speedup_onnx_over_torch": round(onnx["images_per_s"] / eager["images_per_s"], 2),
        "max_abs_diff_between_engines": float(np.abs(x_onnx - x_torch).max()),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
        "machine": {"cpu_cores_available": available_cores(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = ROOT / "bench" / "results" / "cnn_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
