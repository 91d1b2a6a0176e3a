"""Near-duplicate benchmark on real images: lookalike dedup vs imagededup's hashes.

Builds (fixed seed, nothing downloaded) a test set of ~1,000 originals from
../shared/data (LFW faces, COIL-100 objects, the UKBench and Sacré-Cœur photos) plus a
transformed copy of a few hundred of them (JPEG q30, 50% resize, 10% border crop,
5-degree rotation, horizontal flip, brightness +30%, grayscale, text overlay, blur),
and a disjoint calibration set built the same way from other originals.

Ours: thresholds calibrated on the calibration set (labelled candidate pairs ->
``lookalike calibrate``), then ``lookalike dedup`` end to end on the test folder (describe
every file: phash + CNN, candidates, verification). Also reported with the built-in
default thresholds. Peer: imagededup PHash/DHash/WHash/AHash at default thresholds, run
in a separate venv (BENCH_DEDUP_PYTHON, default /work/bench-dedup-venv/bin/python).

Ground truth: each (original, copy) pair. Other images of the same person (LFW) or
other turntable views of the same object (COIL) are *not* duplicates.

    python bench/dedup.py [--originals 1000] [--copies 360] [--calib-originals 300] [--calib-copies 180]
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


def run_ours(folder: Path, db: Path, thresholds, workers: int):
    from lookalike.dedup.pipeline import find_duplicates, prepare_folder

    start = time.perf_counter()
    coll, failures = prepare_folder(folder, db=db, workers=workers)
    describe = time.perf_counter() - start
    result = find_duplicates(coll, thresholds)
    total = time.perf_counter() - start
    pairs = []
    for g in result.groups:  # every pair inside a group counts as found
        members = [g.keeper] + [m.path for m in g.members]
        names = sorted(Path(p).name for p in members)
        pairs += [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    return coll, result, pairs, {"total": total, "describe": describe, "search_verify_group": total - describe}


def score(pairs, true_pairs, kinds) -> dict:
    from lookalike.evaluation.metrics import per_group_scores

    out = per_group_scores(pairs, true_pairs, kinds)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in out["overall"].items()},
            "recall_by_transform": {k: round(v["recall"], 3) for k, v in out["by_kind"].items()}}


def calibrate_on(folder: Path, db: Path, true_pairs, workers: int):
    """Label every candidate pair of a loose run (plus all true pairs) and calibrate."""
    from lookalike.dedup.calibrate import calibrate
    from lookalike.dedup.pipeline import find_duplicates, prepare_folder
    from lookalike.dedup.verify import Thresholds

    coll, _ = prepare_folder(folder, db=db, workers=workers)
    loose = Thresholds(hash_radius=16, cnn_hash=0.5, cnn_any=0.5, cnn_k=10, geo_inliers=0)
    result = find_duplicates(coll, loose, candidate_pairs_only=True)
    paths = {r["id"]: r["path"] for r in coll.items()}
    truth = {frozenset((str(folder / a), str(folder / b))) for a, b in true_pairs}
    labelled = {frozenset((paths[p.a], paths[p.b])) for p in result.pairs}
    labelled |= truth
    csv_path = db / "labelled_pairs.csv"
    with csv_path.open("w") as fh:
        fh.write("a,b,is_duplicate\n")
        for pair in sorted(labelled, key=sorted):
            a, b = sorted(pair)
            fh.write(f"{a},{b},{int(pair in truth)}\n")
    start = time.perf_counter()
    thresholds, scores = calibrate(coll, csv_path)
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
    parser.add_argument("--calib-originals", type=int, default=300)
    parser.add_argument("--calib-copies", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
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

        thresholds, calib_scores = calibrate_on(work / "calib", work / "calib_db", calib_pairs, args.workers)
        _, result, pairs, seconds = run_ours(work / "test", work / "test_db", thresholds, args.workers)
        ours = {"thresholds": thresholds.to_dict(), "calibration": calib_scores, "seconds": seconds,
                "stats": result.stats, **score(pairs, test_pairs, test_kinds)}
        # Same stored vectors, built-in defaults (no calibration): search + verify only.
        from lookalike.collection import Collection
        from lookalike.dedup.pipeline import find_duplicates

        coll = Collection.open(work / "test_db")
        start = time.perf_counter()
        default_result = find_duplicates(coll, Thresholds())
        default_pairs = [tuple(sorted((Path(a).name, Path(b).name)))
                         for g in default_result.groups
                         for i, a in enumerate([g.keeper] + [m.path for m in g.members])
                         for b in ([g.keeper] + [m.path for m in g.members])[i + 1:]]
        ours_default = {"thresholds": Thresholds().to_dict(), "search_seconds": time.perf_counter() - start,
                        **score(default_pairs, test_pairs, test_kinds)}

        peer = run_peer(work / "test")
        peers = {}
        for name, m in peer.get("methods", {}).items():
            peers[name] = {"seconds": round(m["seconds"], 3), **score([tuple(p) for p in m["pairs"]], test_pairs, test_kinds)}
        best_peer = max(peers, key=lambda k: peers[k]["f1"]) if peers else None
        comparison = {}
        if best_peer:
            comparison = {
                "best_peer": best_peer,
                "f1_ours": ours["f1"], "f1_best_peer": peers[best_peer]["f1"],
                "f1_ours_higher": ours["f1"] > peers[best_peer]["f1"],
                "seconds_ours": round(seconds["total"], 3),
                "seconds_best_peer": peers[best_peer]["seconds"],
                "seconds_all_four_peers": round(sum(p["seconds"] for p in peers.values()), 3),
                "speed_ratio_vs_best_peer": round(peers[best_peer]["seconds"] / seconds["total"], 3),
                "speed_ratio_vs_all_four": round(sum(p["seconds"] for p in peers.values()) / seconds["total"], 3),
            }
        emit("dedup", {
            "seed": args.seed, "files": n_files, "originals": len(test_orig), "copies": len(test_pairs),
            "calibration_files": len(list((work / "calib").iterdir())),
            "transforms": {k: sum(v == k for v in test_kinds.values()) for k in TRANSFORMS},
            "ours_calibrated": ours, "ours_default_thresholds": ours_default,
            "imagededup": {"version": peer.get("version"), "error": peer.get("error"), "methods": peers},
            "comparison": comparison,
        })
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
