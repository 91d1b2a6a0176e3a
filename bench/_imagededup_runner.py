"""Runs imagededup's hash methods on one folder (executed by bench/dedup.py with the
separate bench venv's python; imagededup is never a lookalike dependency).

Usage: python _imagededup_runner.py FOLDER  -> JSON on stdout:
{"version", "methods": {name: {"seconds", "pairs": [[a, b], ...]}}}
"""
import json
import sys
import time
import warnings


def main() -> None:
    folder = sys.argv[1]
    warnings.filterwarnings("ignore")
    import imagededup
    from imagededup.methods import AHash, DHash, PHash, WHash

    import multiprocessing

    # imagededup's defaults: num_enc_workers = num_dist_workers = cpu_count() (hashing.py).
    out = {"version": imagededup.__version__, "processes": multiprocessing.cpu_count(), "methods": {}}
    for cls in (PHash, DHash, WHash, AHash):
        start = time.perf_counter()
        method = cls(verbose=False)
        found = method.find_duplicates(image_dir=folder)  # default max_distance_threshold=10
        seconds = time.perf_counter() - start
        pairs = sorted({tuple(sorted((a, b))) for a, dups in found.items() for b in dups})
        out["methods"][cls.__name__] = {"seconds": seconds, "pairs": pairs}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
