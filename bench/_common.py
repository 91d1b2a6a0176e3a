"""Helpers shared by the bench scripts: data location, timing, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOOKALIKE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


def median_time(fn, repeats: int = 3) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs (and all of them)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def machine() -> dict:
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(), "platform": platform.platform()}


def emit(name: str, payload: dict) -> Path:
    """Print JSON to stdout and write it to bench/results/NAME.json."""
    payload = {"bench": name, "machine": machine(), **payload}
    text = json.dumps(payload, indent=2, default=float)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text + "\n")
    return path
