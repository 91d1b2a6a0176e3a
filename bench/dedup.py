"""Near-duplicate benchmark on real images: lookalike dedup vs imagededup's hashes.

Builds (fixed seed, nothing downloaded) a test set of ~1,000 originals from
../shared/data (LFW faces, COIL-100 objects, the UKBench and Sacré-Cœur photos) plus a
transformed copy of a few hundred of them (JPEG q30, 50% resize, 10% border crop,
5-degree rotation, horizontal flip, brightness +30%, grayscale, text overlay, blur),
and a disjoint calibration set built the same way from other originals.

Ours: thresholds calibrated on the calibration set (its labelled hash-candidate pairs ->
``lookalike calibrate``), then ``lookalike dedup DIR`` end to end on the test folder
(a fresh cache: one reduced-size decode per file, variant-hash range search, thumbnail
verification, complete-linkage groups). Also reported with the built-in default
thresholds, and with the optional CNN neighbour source (``cnn_k=5``: CNN on every file). Peer: imagededup PHash/DHash/WHash/AHash at default thresholds, run
in a separate venv (BENCH_DEDUP_PYTHON, default /work/bench-dedup-venv/bin/python).

Ground truth: each (original, copy) pair. Other images of the same person (LFW) or
other turntable views of the same object (COIL) are *not* duplicates.

Timing: ours (fresh cache each time, ``--workers`` processes) and the imagededup runner
(its default ``num_enc_workers = num_dist_workers = cpu_count()`` processes) run
``--repeats`` times each, interleaved, on the same folder; medians are compared (the
1-minute load average is recorded with each run: the machine may be shared).

    python bench/dedup.py [--originals 1000] [--copies 360] [--calib-originals 1000] [--calib-copies 360]
                          [--workers 2] [--repeats 3] [--target-precision 0.95]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, emit  # noqa: E402

TRANSFORMS = ("jpeg30", "resize50", "crop10", "rotate5", "hflip", "bright30", "gray", "text", "blur")
PEER_PYTHON = os.environ.get("BENCH_DEDUP_PYTHON", "/work/bench-dedup-venv/bin/python")


def source_pool(seed: int) -> list[Path]:
    """All candidate originals, shuffled by source with a fixed seed."""
    rng = random.Random(seed)
    lfw = sorted((SHARED_DATA / "lfw" / "images").glob("*/*.jpg"))
    coil = sorted((SHARED_DATA / "coil100" / "images").glob("*.png"))
    photos = sorted((SHARED_DATA / "fixtures" / "neardup_ukbench" / "base_images").glob("*.jpg")) + \
        sorted((SHARED_DATA / "fixtures" / "sacre_coeur").glob("*.jpg"))
    rng.shuffle(lfw)
    rng.shuffle(coil)
    rng.shuffle(photos)
    return lfw, coil, photos


def transform(image, name: str, rng: random.Random):
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

    w, h = image.size
    if name == "resize50":
        return image.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS)
    if name == "crop10":
        dx, dy = round(0.1 * w), round(0.1 * h)
        return image.crop((dx, dy, w - dx, h - dy))
    if name == "rotate5":
        return image.rotate(5, resample=Image.BICUBIC)
    if name == "hflip":
        return ImageOps.mirror(image)
    if name == "bright30":
        return ImageEnhance.Brightness(image).enhance(1.3)
    if name == "gray":
        return image.convert("L")
    if name == "text":
        out = image.copy()
        draw = ImageDraw.Draw(out)
        size = max(10, h // 9)
        font = ImageFont.load_default(size=size)
        draw.text((w // 20, h - 2 * size), "(c) lookalike 2024", font=font, fill=(255, 255, 255),
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
        return out
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=2))
    return image  # jpeg30: only the re-encoding below


def build_set(folder: Path, originals: list[Path], n_copies: int, seed: int) -> tuple[list, dict]:
    """Copy originals, write transformed copies; returns (true pairs, kind of each pair)."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    names = []
    for i, src in enumerate(originals):
        name = f"o{i:04d}_{src.parent.name if src.parent.name != 'images' else 'coil'}_{src.name}"
        shutil.copyfile(src, folder / name)
        names.append(name)
    chosen = rng.sample(range(len(originals)), n_copies)
    pairs, kinds = [], {}
    for j, i in enumerate(chosen):
        kind = TRANSFORMS[j % len(TRANSFORMS)]
        with Image.open(originals[i]) as im:
            im = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
            if im.mode == "L" and kind == "text":
                im = im.convert("RGB")
            out = transform(im, kind, rng)
        copy_name = f"c{j:04d}_{kind}.jpg"
        out.save(folder / copy_name, format="JPEG", quality=30 if kind == "jpeg30" else 90)
        pair = (names[i], copy_name)
        pairs.append(pair)
        kinds[pair] = kind
    return pairs, kinds


def pick_originals(lfw, coil, photos, n: int, offset: dict) -> list[Path]:
    """n originals: all photos (first call), the rest split between LFW and COIL."""
    take_photos = photos[offset["photos"]:offset["photos"] + min(20, n // 20)]
    offset["photos"] += len(take_photos)
    rest = n - len(take_photos)
    n_lfw = rest // 2
    out = take_photos + lfw[offset["lfw"]:offset["lfw"] + n_lfw] + coil[offset["coil"]:offset["coil"] + rest - n_lfw]
    offset["lfw"] += n_lfw
    offset["coil"] += rest - n_lfw
    return out


def group_pairs(groups) -> list[tuple[str, str]]:
    """Every pair inside a group counts as found (file names)."""
    pairs = []
    for g in groups:
        names = sorted(Path(p).name for p in [g.keeper] + [m.path for m in g.members])
        pairs += [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    return pairs


def run_ours(folder: Path, cache: Path, thresholds, workers: int):
    """One end-to-end run; the seconds include ``cpu``: this process's CPU seconds and
    those of the workers (which have exited when the run returns, give or take the
    short wait here), and the workers' minor page faults."""
    import resource

    from lookalike.dedup.pipeline import find_duplicates_in_folder

    kids0, own0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    start = time.perf_counter()
    result = find_duplicates_in_folder(folder, cache, thresholds, workers=workers)
    total = time.perf_counter() - start
    own = time.process_time() - own0
    time.sleep(0.3)  # the pool's workers exit just after the run (shutdown without waiting)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {"parent_s": round(own, 3),
           "workers_s": round(kids.ru_utime - kids0.ru_utime + kids.ru_stime - kids0.ru_stime, 3),
           "workers_minor_faults": kids.ru_minflt - kids0.ru_minflt}
    return result, group_pairs(result.groups), {"total": total, **result.stats.get("seconds", {}), "cpu": cpu}


def score(pairs, true_pairs, kinds) -> dict:
    from lookalike.evaluation.metrics import per_group_scores

    out = per_group_scores(pairs, true_pairs, kinds)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in out["overall"].items()},
            "recall_by_transform": {k: round(v["recall"], 3) for k, v in out["by_kind"].items()}}


def source_of(name: str) -> str:
    if name.startswith("c"):
        return "copy"
    return "coil" if "_coil_" in name else ("photo" if "ukbench" in name or name.count("_") < 2 else "lfw")


def false_positive_breakdown(pairs, true_pairs, folder: Path) -> dict:
    """Where the false pairs come from: the sources of their two files (a copy counts as
    its original's source), and whether both show the same LFW person / COIL object."""
    import re
    from collections import Counter

    truth = {frozenset(p) for p in true_pairs}
    copy_of = {b: a for a, b in true_pairs}
    def base(n):
        n = copy_of.get(n, n)
        m = re.search(r"_coil_obj(\d+)__", n)
        if m:
            return "coil", m.group(1)
        parts = n.split("_", 2)
        return source_of(n), parts[2].rsplit("_", 1)[0] if len(parts) > 2 else n
    kinds, same = Counter(), Counter()
    for a, b in pairs:
        if frozenset((a, b)) in truth:
            continue
        (sa, ia), (sb, ib) = base(a), base(b)
        key = "-".join(sorted((sa, sb)))
        kinds[key] += 1
        same[key + (" same identity/object" if ia == ib else " different")] += 1
    return {"by_source": dict(kinds), "by_identity": dict(same)}


def calibrate_on(folder: Path, cache: Path, true_pairs, workers: int, target_precision: float | None = None):
    """Label every hash-candidate pair of the calibration folder (plus all true pairs)
    and calibrate (``lookalike calibrate`` on the folder)."""
    from lookalike.dedup.calibrate import calibrate
    from lookalike.dedup.pipeline import folder_table, search_table
    from lookalike.dedup.verify import Thresholds

    table, _, _ = folder_table(folder, cache, workers)
    result = search_table(table, Thresholds(), candidate_pairs_only=True)
    paths = {i: it["path"] for i, it in table.items.items()}
    truth = {frozenset((str(folder / a), str(folder / b))) for a, b in true_pairs}
    labelled = {frozenset((paths[p.a], paths[p.b])) for p in result.pairs} | truth
    csv_path = cache / "labelled_pairs.csv"
    with csv_path.open("w") as fh:
        fh.write("a,b,is_duplicate\n")
        for pair in sorted(labelled, key=sorted):
            a, b = sorted(pair)
            fh.write(f"{a},{b},{int(pair in truth)}\n")
    start = time.perf_counter()
    thresholds, scores = calibrate(table, csv_path, target_precision=target_precision, directory=cache)
    scores["seconds"] = round(time.perf_counter() - start, 3)
    return thresholds, scores


def run_peer(folder: Path) -> dict:
    if not Path(PEER_PYTHON).exists():
        return {"error": f"{PEER_PYTHON} not found; create the bench venv (see bench/dedup.py)"}
    runner = Path(__file__).resolve().parent / "_imagededup_runner.py"
    start = time.perf_counter()
    proc = subprocess.run([PEER_PYTHON, str(runner), str(folder)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    out = json.loads(proc.stdout)
    out["subprocess_wall"] = wall
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--originals", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=360)
    parser.add_argument("--calib-originals", type=int, default=1000)
    parser.add_argument("--calib-copies", type=int, default=360)
    parser.add_argument("--no-cnn-variant", action="store_true", help="skip the cnn_k=5 run (CNN on every file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2,
                        help="our scan/verify processes (imagededup uses cpu_count() by default)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing runs of ours and imagededup")
    parser.add_argument("--target-precision", type=float, default=0.95,
                        help="calibration objective (0 = best F1)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()

    lfw, coil, photos = source_pool(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lookalike-dedup-bench-"))
    try:
        offset = {"lfw": 0, "coil": 0, "photos": 0}
        test_orig = pick_originals(lfw, coil, photos, args.originals, offset)
        calib_orig = pick_originals(lfw, coil, photos[offset["photos"]:] and photos, args.calib_originals, offset)
        # Calibration never sees a test original (photos are all used by the test set).
        calib_orig = [p for p in calib_orig if p not in set(test_orig)]
        test_pairs, test_kinds = build_set(work / "test", test_orig, args.copies, args.seed)
        calib_pairs, _ = build_set(work / "calib", calib_orig, min(args.calib_copies, len(calib_orig)), args.seed + 1)
        n_files = len(list((work / "test").iterdir()))

        from lookalike.dedup.verify import Thresholds

        import statistics

        thresholds, calib_scores = calibrate_on(work / "calib", work / "calib_cache", calib_pairs, args.workers,
                                                args.target_precision or None)
        # Timing: ours and the peer alternately, each on a fresh cache / process.
        runs, peer_runs = [], []
        for r in range(max(1, args.repeats)):
            cache = work / f"test_cache_{r}"
            runs.append(run_ours(work / "test", cache, thresholds, args.workers) + (os.getloadavg()[0],))
            if r < args.repeats - 1:
                shutil.rmtree(cache, ignore_errors=True)
            peer_runs.append((run_peer(work / "test"), os.getloadavg()[0]))
        result, pairs, seconds, _ = runs[-1]
        totals = [r[2]["total"] for r in runs]
        seconds = {**seconds, "total": statistics.median(totals), "total_runs": [round(t, 3) for t in totals],
                   "load_avg_1min_runs": [round(r[3], 2) for r in runs],
                   "cpu_runs": [r[2]["cpu"] for r in runs]}
        ours = {"thresholds": thresholds.to_dict(), "calibration": calib_scores, "processes": args.workers,
                "seconds": seconds, "stats": result.stats, **score(pairs, test_pairs, test_kinds),
                "false_positives": false_positive_breakdown(pairs, test_pairs, work / "test")}
        # Built-in defaults (fresh cache again: end to end).
        d_result, d_pairs, d_seconds = run_ours(work / "test", work / "test_cache_default", Thresholds(), args.workers)
        ours_default = {"thresholds": Thresholds().to_dict(), "seconds": d_seconds,
                        **score(d_pairs, test_pairs, test_kinds)}
        ours_cnn = None
        if not args.no_cnn_variant:
            t_cnn = Thresholds.from_dict({**thresholds.to_dict(), "cnn_k": 5})
            c_result, c_pairs, c_seconds = run_ours(work / "test", work / "test_cache_cnn", t_cnn, args.workers)
            ours_cnn = {"thresholds": t_cnn.to_dict(), "seconds": c_seconds, "stats": c_result.stats,
                        **score(c_pairs, test_pairs, test_kinds)}

        peer = peer_runs[-1][0]
        peers = {}
        for name, m in peer.get("methods", {}).items():
            times = [p.get("methods", {}).get(name, {}).get("seconds") for p, _ in peer_runs]
            times = [t for t in times if t is not None]
            peers[name] = {"seconds": round(statistics.median(times), 3), "seconds_runs": [round(t, 3) for t in times],
                           **score([tuple(p) for p in m["pairs"]], test_pairs, test_kinds)}
        best_peer = max(peers, key=lambda k: peers[k]["f1"]) if peers else None
        fastest_peer = min(peers, key=lambda k: peers[k]["seconds"]) if peers else None
        comparison = {}
        if best_peer:
            comparison = {
                "best_peer": best_peer, "fastest_peer": fastest_peer,
                "processes_ours": args.workers, "processes_imagededup": peer.get("processes"),
                "f1_ours": ours["f1"], "f1_best_peer": peers[best_peer]["f1"],
                "f1_ours_higher": ours["f1"] > peers[best_peer]["f1"],
                "seconds_ours_median": round(seconds["total"], 3),
                "seconds_best_peer_median": peers[best_peer]["seconds"],
                "seconds_fastest_peer_median": peers[fastest_peer]["seconds"],
                "seconds_all_four_peers": round(sum(p["seconds"] for p in peers.values()), 3),
                "speed_ratio_vs_best_peer": round(peers[best_peer]["seconds"] / seconds["total"], 3),
                "speed_ratio_vs_fastest_peer": round(peers[fastest_peer]["seconds"] / seconds["total"], 3),
                "speed_ratio_vs_all_four": round(sum(p["seconds"] for p in peers.values()) / seconds["total"], 3),
                "speed_ratio_vs_best_peer_per_run": [
                    round(p.get("methods", {}).get(best_peer, {}).get("seconds", float("nan")) / r[2]["total"], 3)
                    for r, (p, _) in zip(runs, peer_runs)],
                "load_avg_1min_peer_runs": [round(l, 2) for _, l in peer_runs],
            }
        emit("dedup", {
            "seed": args.seed, "files": n_files, "originals": len(test_orig), "copies": len(test_pairs),
            "calibration_files": len(list((work / "calib").iterdir())),
            "transforms": {k: sum(v == k for v in test_kinds.values()) for k in TRANSFORMS},
            "ours_calibrated": ours, "ours_default_thresholds": ours_default,
            "ours_with_cnn_neighbours": ours_cnn,
            "imagededup": {"version": peer.get("version"), "error": peer.get("error"),
                           "processes": peer.get("processes"), "methods": peers},
            "comparison": comparison,
        })
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
