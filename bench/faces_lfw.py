"""LFW verification with lookalike's face pipeline (dlib HOG + 5 landmarks + ResNet 128-d).

What it measures (JSON to stdout and bench/results/faces_lfw.json; ROC to docs/img/lfw_roc.png):

* View 1 (pairsDevTest, 1,000 pairs, 10-fold CV inside it): one row per pipeline choice
  (face selection, upsample 0/1/2, no-face fallback, chip padding, mirror TTA, unit-length
  descriptors, test-time jitter: stage ``v1jitter``).
* ``select``: the setting reported as the best is picked from the View 1 rows by
  ``SELECTION_RULE`` (highest View 1 mean accuracy; ties -> fewer ResNet forward passes,
  then higher View 1 AUC), written to the JSON as ``selection`` before View 2 is run.
* ``v1norm``: cohort score normalisation (``lookalike.faces.score_norm``: Z/T/S-norm and
  adaptive S-norm over each face's top-k cohort scores, cosine or Euclidean) on five
  descriptor settings of the final chain, scored on the whole of View 1 (3,200 pairs): DevTest
  with a cohort of the DevTrain images, DevTrain with a cohort of the DevTest images (no
  person in both). ``select`` then applies ``SELECTION_RULE_NORM`` to these rows (the earlier
  DevTest-only pick is kept as ``selection_devtest_only``), and ``v2norm`` scores the chosen
  (descriptor, scoring) on View 2 with, for test fold k, a cohort of the other nine folds'
  images (``view2_norm``; the next five View 1 rows for the record).
* ``v1chip``: CLAHE contrast equalisation of the chip before the ResNet (DevTest only; worse).
* ``v1lm68``: the chip aligned on dlib's 68-point landmarks (found in the same u2+cnn+centre
  boxes, fallback boxes included; chip 150, padding 0.25) instead of the 5-point ones, + mirror
  and + mirror + unit length, scored under every v1norm scoring on the whole of View 1 exactly
  as v1norm (``view1_lm68``; descriptors in ``lfw_emb_p0.25_j0_lm68.npz``, keyed by the same
  5-point face key). ``selectlm68`` applies ``SELECTION_RULE_LM68`` (the v1norm candidates plus
  these rows; written after View 2 of the 5-point settings had been seen, before any 68-point
  View 2 number) -> ``selection_lm68``; ``v2lm68`` scores its pick on View 2 as v2norm does
  (``view2_lm68``), only if it is a 68-point row.
* View 2 (pairs.txt, 6,000 pairs, the standard 10 folds): the baseline, the earlier rows
  and the setting chosen on View 1 (``view2_best``; marked ``chosen_on_view1``), plus the
  ``face_recognition`` package with its defaults, run from a separate
  venv (``--peer-python``, default /work/bench-venv/bin/python) in the same run.
* images/s (``speed``): ``FacePipeline.embed_many`` in 1 process and in ``--workers`` forked
  processes vs face_recognition (1 process: its API has none), interleaved rounds, medians.
* ``metric``: fold-honest learned metrics (WCCN, LDA, PCA-whitening) on the descriptors,
  fitted per test fold on the other nine folds' people only (they did not help).

Compute is shared and small, so everything is cached under bench/results/cache/ and an
interrupted run resumes: per image the detections/landmarks (``lfw_geom_*.pkl``, not
tied to any embedding setting) and per face the descriptors, one file per embedding
setting (``lfw_emb_p{padding}_j{jitters}.npz``; mirrored chips are extra keys; ``j4`` is
lookalike's seeded jitter, ``lookalike.faces.embed.jitter_perturbations``).

* LFW open-set identification with distractors (``ident``: the evaluation package's
  ``lfw-identification`` protocol, 300 people with 2+ images + 1,000 distractors by default),
  our best setting vs the face_recognition-equivalent embeddings.

Usage:  python bench/faces_lfw.py [--workers 2] [--stages v1core,v1jitter,v1norm,select,v2,v2norm,...] [--limit N]
The View 1 -> selection -> View 2 path alone:
        nice -n 10 python bench/faces_lfw.py --workers 2 --stages v1core,v1jitter,v1norm,select,v2,peer2,v2norm
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lookalike.faces import FacePipeline, calibrate_threshold, read_lfw_pairs
from lookalike.faces.align import FaceAligner
from lookalike.faces.detect import FaceDetector
from lookalike.faces.embed import FaceEmbedder
from lookalike.faces.pipeline import select_face, Face

ROOT = Path(__file__).resolve().parents[1]
LFW = Path(os.environ.get("LOOKALIKE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "lfw"
CACHE = ROOT / "bench" / "results" / "cache"
RESULT = ROOT / "bench" / "results" / "faces_lfw.json"
ROC_PNG = ROOT / "docs" / "img" / "lfw_roc.png"
CENTER_FRACTION = 0.45
MISSING_DISTANCE = 10.0  # a pair with no face in one image is scored "very different"
SAVE_EVERY_S = 60.0


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


# -- stage 1: detections + landmarks per image (independent of embedding settings) ----------

CHIP_EQUALIZE = ("none", "clahe", "hist")


def equalize_chip(chip: np.ndarray, method: str = "clahe", clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-equalise an aligned chip on its luminance (stage v1chip: it lowered View 1 accuracy).

    Args:
        chip: ``uint8`` ``(S, S, 3)`` RGB chip from :meth:`FaceAligner.chip`.
        method: ``"clahe"`` (OpenCV contrast-limited adaptive histogram equalisation,
            ``clip_limit`` and ``tiles`` x ``tiles`` tiles), ``"hist"`` (global histogram
            equalisation) or ``"none"`` (the chip unchanged).

    Returns:
        ``uint8`` ``(S, S, 3)``; a gray chip (R == G == B) stays gray. Colour chips are
        equalised in YCrCb's Y channel, their chroma kept.
    """
    if method == "none":
        return chip
    import cv2

    if method not in CHIP_EQUALIZE:
        raise ValueError(f"unknown chip equalisation {method!r}; valid: {', '.join(CHIP_EQUALIZE)}")
    ycc = cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2YCrCb)
    y = ycc[:, :, 0]
    if method == "clahe":
        y = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles))).apply(y)
    else:
        y = cv2.equalizeHist(y)
    if np.array_equal(chip[:, :, 0], chip[:, :, 1]) and np.array_equal(chip[:, :, 1], chip[:, :, 2]):
        return np.repeat(y[:, :, None], 3, axis=2)
    ycc[:, :, 0] = y
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


_WORKER: dict = {}


def _geom_worker(job):
    """(relpath, levels) -> (relpath, record) with faces per upsample level and fallback boxes."""
    rel, levels = job
    pipe = _WORKER.setdefault("pipe", FacePipeline(center_fraction=CENTER_FRACTION))
    pixels = pipe.load(LFW / "images" / rel)
    h, w = pixels.shape[:2]
    record = {"size": (w, h)}
    for level in levels:
        if level == "cnn":  # dlib's MMOD CNN detector, no upsampling (~1 s per image on CPU)
            cnn = _WORKER.setdefault("cnn", FaceDetector(model="cnn", upsample=0))
            dets = cnn.detect(pixels)
            record[level] = [(d.box, d.score, pipe.aligner.landmarks(pixels, d.box).astype(int).tolist()) for d in dets]
        elif level.startswith("u"):
            pipe.detector.upsample = int(level[1:])
            dets = pipe.detector.detect(pixels)
            record[level] = [(d.box, d.score, pipe.aligner.landmarks(pixels, d.box).astype(int).tolist()) for d in dets]
        else:  # fallback boxes: "whole" / "center"
            box = pipe.fallback_box(w, h, kind=level)
            record[level] = [(box, float("nan"), pipe.aligner.landmarks(pixels, box).astype(int).tolist())]
    return rel, record


def _embed_worker(job):
    """(relpath, padding, jitters, [(key, box, landmarks, flip)], equalize, n_landmarks) -> [(key, vector)].

    With ``n_landmarks`` 68 the chip is aligned on the 68-point landmarks found in the same box
    (the cached 5-point ``landmarks`` then only identify the face, as in its key)."""
    rel, padding, jitters, faces, equalize, n_landmarks = job
    aligner = _WORKER.setdefault(("align", padding, n_landmarks), FaceAligner(padding=padding, landmarks=n_landmarks))
    embedder = _WORKER.setdefault(("emb", jitters), FaceEmbedder(num_jitters=jitters))
    pixels = FacePipeline.load(LFW / "images" / rel)
    chips, lm68 = [], {}
    for _, box, landmarks, flip in faces:
        if n_landmarks == 68:
            box = tuple(box)
            if box not in lm68:
                lm68[box] = aligner.landmarks(pixels, box)
            landmarks = lm68[box]
        chip = equalize_chip(aligner.chip(pixels, box, np.asarray(landmarks, dtype=np.float32)), equalize)
        chips.append(np.ascontiguousarray(chip[:, ::-1]) if flip else chip)
    vectors = embedder.embed(chips)
    return [(key, vec) for (key, *_), vec in zip(faces, vectors)]


def _worker_init():
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's save-on-SIGTERM is not for workers


def run_pool(worker, jobs, workers, on_result, label):
    """Map ``worker`` over ``jobs`` in ``workers`` processes, calling ``on_result`` as they land."""
    if not jobs:
        return
    t0 = time.perf_counter()
    log(f"{label}: {len(jobs)} jobs on {workers} workers")
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for i, result in enumerate(pool.imap_unordered(worker, jobs, chunksize=4), 1):
            on_result(result)
            if i % 200 == 0 or i == len(jobs):
                rate = i / (time.perf_counter() - t0)
                log(f"{label}: {i}/{len(jobs)}  {rate:.1f}/s  eta {(len(jobs) - i) / rate:.0f}s")


class GeometryCache:
    def __init__(self):
        self.path = CACHE / f"lfw_geom_hog_c{CENTER_FRACTION}.pkl"
        self.data = pickle.loads(self.path.read_bytes()) if self.path.exists() else {}

    def save(self):
        atomic_write(self.path, lambda fh: pickle.dump(self.data, fh))

    def ensure(self, rels, levels, workers):
        jobs = []
        for rel in rels:
            missing = [lv for lv in levels if lv not in self.data.get(rel, {})]
            if missing:
                jobs.append((rel, missing))
        last = [time.time()]

        def merge(result):
            rel, record = result
            self.data.setdefault(rel, {}).update(record)
            if time.time() - last[0] > SAVE_EVERY_S:
                self.save()
                last[0] = time.time()

        try:
            run_pool(_geom_worker, jobs, workers, merge, f"geometry {levels}")
        finally:
            if jobs:
                self.save()


class EmbeddingCache:
    """Descriptors per face, one file per (padding, jitters[, chip equalisation][, 68-point alignment])."""

    def __init__(self):
        self.tables: dict[tuple, dict] = {}

    def path(self, padding, jitters, equalize="none", landmarks=5):
        return CACHE / (f"lfw_emb_p{padding}_j{jitters}" + ("" if equalize == "none" else f"_{equalize}")
                        + ("" if landmarks == 5 else f"_lm{landmarks}") + ".npz")

    def table(self, padding, jitters, equalize="none", landmarks=5):
        key = (padding, jitters, equalize, landmarks)
        if key not in self.tables:
            p = self.path(padding, jitters, equalize, landmarks)
            table = {}
            if p.exists():
                z = np.load(p)
                table = dict(zip(z["keys"].tolist(), z["vectors"]))
            self.tables[key] = table
        return self.tables[key]

    def save(self, padding, jitters, equalize="none", landmarks=5):
        table = self.table(padding, jitters, equalize, landmarks)
        keys = np.array(list(table.keys()))
        vectors = np.array(list(table.values()), dtype=np.float32).reshape(len(keys), 128)
        atomic_write(self.path(padding, jitters, equalize, landmarks),
                     lambda fh: np.savez(fh, keys=keys, vectors=vectors))

    def ensure(self, requests, padding, jitters, workers, equalize="none", landmarks=5):
        """requests: {rel: [(key, box, landmarks, flip)]}; ``landmarks``: 5 or 68-point alignment."""
        table = self.table(padding, jitters, equalize, landmarks)
        jobs = []
        for rel, faces in requests.items():
            todo = [f for f in faces if f[0] not in table]
            if todo:
                jobs.append((rel, padding, jitters, todo, equalize, landmarks))
        last = [time.time()]

        def merge(result):
            table.update(result)
            if time.time() - last[0] > SAVE_EVERY_S:
                self.save(padding, jitters, equalize, landmarks)
                last[0] = time.time()

        try:
            run_pool(_embed_worker, jobs, workers, merge,
                     f"embed p={padding} j={jitters} equalize={equalize} landmarks={landmarks}")
        finally:
            if jobs:
                self.save(padding, jitters, equalize, landmarks)


# -- variants --------------------------------------------------------------------------

def face_key(rel, box, landmarks, flip):
    return f"{rel}|{','.join(map(str, box))}|{','.join(str(v) for p in landmarks for v in p)}|{int(flip)}"


def choose_face(record, variant):
    """The (box, landmarks, origin) a variant uses for one image, or None (no face)."""
    faces = record[f"u{variant['upsample']}"]
    origin = "detector"
    if not faces:
        for step in variant["fallback"].split("+"):
            if step == "none":
                break
            if step not in record:
                raise KeyError(f"geometry level {step!r} not computed for this image (run ensure_geometry)")
            faces = record[step]
            origin = step
            if faces:
                break
    if not faces:
        return None
    objs = [Face(tuple(b), s, np.asarray(lm, dtype=np.float32)) for b, s, lm in faces]
    chosen = select_face(objs, record["size"], variant["select"]) if len(objs) > 1 else objs[0]
    return chosen.box, chosen.landmarks.astype(int).tolist(), origin


def ensure_geometry(geom, variants, rels, workers):
    """Primary detection level for every image; fallback levels only where it found none."""
    primary = sorted({f"u{v['upsample']}" for v in variants})
    geom.ensure(rels, primary, workers)
    for v in variants:
        level = f"u{v['upsample']}"
        empty = [r for r in rels if not geom.data[r][level]]
        steps = [s for s in v["fallback"].split("+") if s != "none"]
        if steps and empty:
            geom.ensure(empty, steps, workers)


def variant_requests(variant, geom, rels):
    requests, chosen = {}, {}
    flips = (False, True) if variant["mirror"] else (False,)
    for rel in rels:
        pick = choose_face(geom.data[rel], variant)
        chosen[rel] = pick
        if pick is not None:
            box, lm, _ = pick
            requests[rel] = [(face_key(rel, box, lm, f), box, lm, f) for f in flips]
    return requests, chosen


def variant_vectors(variant, chosen, emb):
    table = emb.table(variant["padding"], variant["jitters"], variant.get("equalize", "none"),
                      variant.get("landmarks", 5))
    out = {}
    for rel, pick in chosen.items():
        if pick is None:
            continue
        box, lm, _ = pick
        vecs = [table[face_key(rel, box, lm, f)] for f in ((False, True) if variant["mirror"] else (False,))]
        vec = np.mean(vecs, axis=0)
        out[rel] = vec / np.linalg.norm(vec) if variant["normalize"] else vec  # = FaceEmbedder(normalize=True)
    return out


# -- metrics ---------------------------------------------------------------------------

def _kfold_local(scores, is_same, folds):
    """Threshold with the best accuracy on the other folds, accuracy on the held-out fold."""
    accs, thresholds = [], []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t = calibrate_threshold(-scores[train], is_same[train])["threshold"]  # distance threshold
        pred = -scores[test] <= t
        accs.append(float(np.mean(pred == is_same[test])))
        thresholds.append(-t)
    return {"mean_accuracy": float(np.mean(accs)), "std_accuracy": float(np.std(accs)),
            "fold_accuracies": accs, "thresholds": thresholds}


def kfold(scores, is_same, folds):
    try:
        from lookalike.evaluation.metrics import kfold_verification
    except ImportError:
        return _kfold_local(scores, is_same, folds), "bench-local"
    return kfold_verification(scores, is_same, folds), "lookalike.evaluation.metrics.kfold_verification"


def pair_metrics(pairs, vectors, folds):
    from sklearn.metrics import roc_auc_score, roc_curve

    d = np.array([
        np.linalg.norm(vectors[a] - vectors[b]) if (a in vectors and b in vectors) else MISSING_DISTANCE
        for a, b in ((rel_of(p.path_a), rel_of(p.path_b)) for p in pairs)
    ])
    y = np.array([p.same for p in pairs])
    kf, impl = kfold(-d, y, folds)
    fpr, tpr, _ = roc_curve(y, -d)
    tar = float(np.max(tpr[fpr <= 1e-3])) if np.any(fpr <= 1e-3) else 0.0
    return {
        "accuracy_mean": round(kf["mean_accuracy"], 5),
        "accuracy_std": round(kf["std_accuracy"], 5),
        "distance_threshold_median": round(float(-np.median(kf["thresholds"])), 4),
        "accuracy_at_0.6": round(float(np.mean((d <= 0.6) == y)), 5),
        "roc_auc": round(float(roc_auc_score(y, -d)), 5),
        "tar_at_far_1e-3": round(tar, 4),
        "pairs_missing_face": int(np.sum(d == MISSING_DISTANCE)),
        "kfold_impl": impl,
    }, (fpr, tpr)


def rel_of(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


# -- the face_recognition peer (separate venv) -----------------------------------------

PEER_SCRIPT = r'''
import json, sys, time
import face_recognition as fr
out_path, paths = sys.argv[1], sys.argv[2:]
done = set()
try:
    for line in open(out_path):
        done.add(json.loads(line)["rel"])
except FileNotFoundError:
    pass
with open(out_path, "a") as out:
    for rel_path in paths:
        rel, path = rel_path.split("|", 1)
        if rel in done:
            continue
        t = time.perf_counter()
        img = fr.load_image_file(path)          # defaults: RGB
        locs = fr.face_locations(img)           # defaults: hog, upsample 1
        encs = fr.face_encodings(img, locs)     # defaults: 5-point model, num_jitters=1
        rec = {"rel": rel, "locations": locs, "encodings": [e.tolist() for e in encs],
               "size": [img.shape[1], img.shape[0]]}
        if not locs:  # its no-face case: fall back to the whole image as the location
            h, w = img.shape[:2]
            rec["fallback"] = fr.face_encodings(img, [(0, w - 1, h - 1, 0)])[0].tolist()
        rec["seconds"] = time.perf_counter() - t
        out.write(json.dumps(rec) + "\n"); out.flush()
'''


def run_peer(peer_python, rels, workers, tag):
    out_files = [CACHE / f"lfw_peer_face_recognition_{tag}_{i}.jsonl" for i in range(workers)]
    chunks = [rels[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([peer_python, "-c", PEER_SCRIPT, str(f)] + [f"{r}|{LFW / 'images' / r}" for r in c])
        for f, c in zip(out_files, chunks)
    ]
    log(f"peer face_recognition: {len(rels)} images in {workers} processes")
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"peer process failed with {p.returncode}")
    records = {}
    for f in out_files:
        for line in open(f):
            rec = json.loads(line)
            records[rec["rel"]] = rec
    log(f"peer done in {time.perf_counter() - t0:.0f}s")
    return records


def peer_vectors(records, rels, policy, fallback):
    out = {}
    for rel in rels:
        rec = records[rel]
        encs = rec["encodings"]
        if not encs:
            if fallback:
                out[rel] = np.array(rec["fallback"])
            continue
        if policy == "first":  # face_recognition's usual `face_encodings(img)[0]`
            out[rel] = np.array(encs[0])
        else:
            w, h = rec["size"]
            centres = [((l + r) / 2 - (w - 1) / 2) ** 2 + ((t + b) / 2 - (h - 1) / 2) ** 2 for t, r, b, l in rec["locations"]]
            out[rel] = np.array(encs[int(np.argmin(centres))])
    return out


def peer_agreement(records, rels, geom, emb):
    """How far face_recognition's descriptors are from ours for the same (best-score) face."""
    ours_variant = V("select best score", select="best")
    _, chosen = variant_requests(ours_variant, geom, [r for r in rels if r in geom.data])
    ours = variant_vectors(ours_variant, {r: c for r, c in chosen.items() if c is not None and
                                          face_key(r, c[0], c[1], False) in emb.table(0.25, 0)}, emb)
    diffs, same_box = [], 0
    for rel in rels:
        rec = records[rel]
        if rec["encodings"] and rel in ours:
            diffs.append(float(np.linalg.norm(np.array(rec["encodings"][0]) - ours[rel])))
            t, r, b, l = rec["locations"][0]
            same_box += (l, t, r, b) == tuple(chosen[rel][0])
    diffs = np.array(diffs)
    return {"images_compared": int(diffs.size), "same_box": int(same_box),
            "identical_descriptor": int(np.sum(diffs < 1e-6)), "max_distance": float(diffs.max()) if diffs.size else None,
            "peer_no_face": int(sum(not records[r]["encodings"] for r in rels)),
            "peer_seconds_per_image_median": round(float(np.median([records[r]["seconds"] for r in rels])), 4)}


# -- speed -----------------------------------------------------------------------------

def _library_settings(variant):
    """FacePipeline keyword arguments equal to a bench variant."""
    return dict(upsample=variant["upsample"], select=variant["select"], fallback=variant["fallback"],
                padding=variant["padding"], mirror=variant["mirror"], num_jitters=variant["jitters"],
                normalize=variant["normalize"], center_fraction=CENTER_FRACTION,
                **({"landmarks": variant["landmarks"]} if variant.get("landmarks", 5) != 5 else {}))


def _peer_speed(peer_python, rels, tag):
    """face_recognition (defaults) on ``rels`` in one fresh process: images/s over the
    per-image seconds (its import and model loading excluded, as ours are) and wall."""
    out_file = CACHE / f"speed_peer_{tag}.jsonl"
    out_file.unlink(missing_ok=True)
    t = time.perf_counter()
    subprocess.run([peer_python, "-c", PEER_SCRIPT, str(out_file)] + [f"{r}|{LFW / 'images' / r}" for r in rels],
                   check=True)
    wall = time.perf_counter() - t
    secs = [json.loads(line)["seconds"] for line in open(out_file)]
    out_file.unlink(missing_ok=True)
    return len(secs) / sum(secs), len(secs) / wall


def measure_speed(rels, workers, peer_python, rounds, variants):
    """images/s on the same images, models loaded before timing, in interleaved rounds
    (the order of the contenders rotates each round; medians reported, as the machine is
    shared). Ours: ``FacePipeline.embed_many`` wall time (image loading included) in 1
    process and in ``workers`` forked processes; the peer: face_recognition's
    load_image_file + face_locations + face_encodings, one process (its API has no
    multi-process mode), summed per-image seconds."""
    from statistics import median

    paths = [LFW / "images" / r for r in rels]
    contenders = {}
    for v in variants:
        pipe = FacePipeline(**_library_settings(v))
        pipe.embed_many(paths[:2])  # load the models (inherited by forked workers)
        for step in v["fallback"].split("+"):
            if step not in ("none", "whole", "center"):  # the fallback detectors too
                pipe._fallback_detector(step)._load()
        contenders[f"lookalike {v['name']}, 1 process"] = (pipe, 1)
        if workers > 1 and v is not variants[0]:  # variants[0]: the face_recognition-equivalent, 1 process only
            contenders[f"lookalike {v['name']}, {workers} processes"] = (pipe, workers)
    peer_name = "face_recognition (defaults), 1 process"
    names = list(contenders) + ([peer_name] if Path(peer_python).exists() else [])
    rates: dict[str, list] = {n: [] for n in names}
    loads = []
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        loads.append(os.getloadavg()[0])
        for name in order:
            if name == peer_name:
                rates[name].append(_peer_speed(peer_python, rels, r)[0])
                continue
            pipe, procs = contenders[name]
            t = time.perf_counter()
            pipe.embed_many(paths, workers=procs)
            rates[name].append(len(paths) / (time.perf_counter() - t))
        log(f"speed round {r + 1}/{rounds}: " + ", ".join(f"{n}: {rates[n][-1]:.2f}" for n in names))
    loads.append(os.getloadavg()[0])
    out = {"images": len(paths), "rounds": rounds, "cpu_cores": os.cpu_count(),
           "load_avg_1min": [round(x, 2) for x in loads],
           "note": "machine shared with other benchmarks; medians of interleaved rounds",
           "images_per_s_median": {n: round(median(v), 3) for n, v in rates.items()},
           "images_per_s_rounds": {n: [round(x, 3) for x in v] for n, v in rates.items()},
           "settings": {v["name"]: _library_settings(v) for v in variants}}
    if peer_name in rates:
        per_round = {n: [a / b for a, b in zip(rates[n], rates[peer_name])] for n in contenders}
        out["ratio_vs_face_recognition_median"] = {n: round(median(v), 2) for n, v in per_round.items()}
    return out


def learned_metrics(pairs, folds, vectors):
    """Fold-honest learned metrics on the descriptors (negative result kept for the record).

    For each test fold: fit on the images of the other nine folds' people (LFW View 2
    folds are person-disjoint; the images are those of pairs.txt), choose the threshold
    on those nine folds, score the held-out fold.
    """
    from lookalike.evaluation.metrics import accuracy_at_threshold, best_threshold

    rels = sorted(vectors)
    x = np.stack([vectors[r] for r in rels]).astype(np.float64)
    person = np.array([r.split("/")[0] for r in rels])
    fold_of_person = {}
    for p in pairs:
        fold_of_person[p.path_a.parent.name] = p.fold
        fold_of_person[p.path_b.parent.name] = p.fold
    img_fold = np.array([fold_of_person[n] for n in person])
    index = {r: i for i, r in enumerate(rels)}
    ia = np.array([index[rel_of(p.path_a)] for p in pairs])
    ib = np.array([index[rel_of(p.path_b)] for p in pairs])
    y = np.array([p.same for p in pairs])

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    def within(xt, nt):
        sw, n = np.zeros((x.shape[1],) * 2), 0
        for c in np.unique(nt):
            z = xt[nt == c]
            if len(z) > 1:
                z = z - z.mean(0)
                sw += z.T @ z
                n += len(z)
        return sw / max(n, 1)

    def fit_wccn(reg, centre):
        def fit(xt, nt):
            sw = within(xt, nt)
            sw += reg * np.trace(sw) / len(sw) * np.eye(len(sw))
            w, u = np.linalg.eigh(sw)
            return (xt.mean(0) if centre else 0.0), u / np.sqrt(w)
        return fit

    def fit_lda(dim):
        def fit(xt, nt):
            m = xt.mean(0)
            sw = within(xt, nt)
            sw += 1e-3 * np.trace(sw) / len(sw) * np.eye(len(sw))
            w, u = np.linalg.eigh(sw)
            wh = u / np.sqrt(w)
            w2, u2 = np.linalg.eigh(wh.T @ np.cov((xt - m).T) @ wh)
            return m, wh @ u2[:, np.argsort(w2)[::-1][:dim]]
        return fit

    def fit_pcaw(dim):
        def fit(xt, nt):
            m = xt.mean(0)
            w, u = np.linalg.eigh(np.cov((xt - m).T))
            keep = np.argsort(w)[::-1][:dim]
            return m, u[:, keep] / np.sqrt(w[keep])
        return fit

    methods = {"euclidean (no training)": None, "cosine (no training)": "cos",
               "centred cosine (train mean)": lambda xt, nt: (xt.mean(0), np.eye(x.shape[1])),
               "WCCN + cosine, shrinkage 0.1": fit_wccn(0.1, True),
               "WCCN (uncentred) + cosine, shrinkage 1": fit_wccn(1.0, False),
               "LDA 64 + cosine": fit_lda(64), "LDA 100 + cosine": fit_lda(100),
               "PCA-whitening 64 + cosine": fit_pcaw(64), "PCA-whitening 128 + cosine": fit_pcaw(128)}
    rows = []
    for name, fit in methods.items():
        accs = []
        for k in np.unique(folds):
            if fit is None:
                s = -np.linalg.norm(x[ia] - x[ib], axis=1)
            elif fit == "cos":
                s = np.sum(unit(x[ia]) * unit(x[ib]), axis=1)
            else:
                train = img_fold != k  # never the test fold's people
                m, w = fit(x[train], person[train])
                z = unit((x - m) @ w)
                s = np.sum(z[ia] * z[ib], axis=1)
            test = folds == k
            thr = best_threshold(s[~test], y[~test])
            accs.append(accuracy_at_threshold(s[test], y[test], thr))
        rows.append({"metric": name, "accuracy_mean": round(float(np.mean(accs)), 5),
                     "accuracy_std": round(float(np.std(accs)), 5)})
        log("metric", rows[-1])
    return rows


def identification(geom, emb, variants, workers, max_identities, max_distractors):
    """LFW open-set 1:N (lookalike.evaluation protocol) for each variant's embeddings."""
    from lookalike.evaluation.protocols import load_protocol
    from lookalike.evaluation.report import evaluate_identification

    proto = load_protocol("lfw-identification", LFW.parent, max_identities=max_identities,
                          max_distractors=max_distractors, non_mated_fraction=0.1, seed=0)
    rels = [rel_of(p) for p in proto.paths]
    ensure_geometry(geom, variants, rels, workers)
    rows = []
    for v in variants:
        requests, _ = variant_requests(v, geom, rels)
        emb.ensure(requests, v["padding"], v["jitters"], workers, v.get("equalize", "none"), v.get("landmarks", 5))
    for v in variants:
        _, chosen = variant_requests(v, geom, rels)
        vectors = variant_vectors(v, chosen, emb)
        x = np.stack([vectors.get(r, np.full(128, np.nan)) for r in rels]).astype(np.float64)
        g, q = x[proto.gallery_indices], x[proto.probe_indices]
        d = np.sqrt(np.maximum(0, (q ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None] - 2 * q @ g.T))
        d[~np.isfinite(d)] = MISSING_DISTANCE  # no face in probe or gallery image: "very far"
        res = json.loads(json.dumps(evaluate_identification(d, proto, ranks=(1, 5, 10), fpirs=(0.01, 0.1)),
                                    default=float))
        res.pop("protocol", None)  # once, below
        res["images_without_face"] = sum(c is None for c in chosen.values())
        rows.append({"variant": v["name"], **res})
        log("ident", v["name"], json.dumps({k: res[k] for k in res if k != "protocol"})[:300])
    return {"protocol": proto.summary(), "rows": rows}


# -- main ------------------------------------------------------------------------------

BASE = dict(upsample=1, select="center", fallback="none", padding=0.25, mirror=False, jitters=0, normalize=False)


def V(name, **kw):
    return {"name": name, **BASE, **kw}


VIEW1_CORE = [
    V("baseline: u1, centre face, no fallback"),
    V("select largest", select="largest"),
    V("select best score", select="best"),
    V("fallback whole-image box", fallback="whole"),
    V("fallback centre box", fallback="center"),
    V("fallback u2 then centre box", fallback="u2+center"),
    V("mirror TTA", mirror=True),
    V("fallback centre + mirror", fallback="center", mirror=True),
    V("fallback u2+centre + mirror", fallback="u2+center", mirror=True),
    V("fallback u2+cnn+centre", fallback="u2+cnn+center"),
    V("fallback u2+cnn+centre + mirror", fallback="u2+cnn+center", mirror=True),
    V("fallback u2+cnn+centre + mirror + unit length", fallback="u2+cnn+center", mirror=True, normalize=True),
]
# The library settings these variants are (FacePipeline keyword arguments).
FAST = "fallback u2+cnn+centre"
BEST = "fallback u2+cnn+centre + mirror + unit length"
VIEW1_EXTRA = [
    V("upsample 0", upsample=0),
    V("upsample 2", upsample=2),
    V("padding 0.20", padding=0.2),
    V("padding 0.30", padding=0.3),
]
# Test-time jitter (lookalike's seeded version of dlib's jitter_image, every second copy
# mirrored; see lookalike.faces.embed.jitter_perturbations) on top of the current best chain.
_CHAIN = "u2+cnn+center"
VIEW1_JITTER = [
    V("fallback u2+cnn+centre + jitter 4", fallback=_CHAIN, jitters=4),
    V("fallback u2+cnn+centre + jitter 4 + unit length", fallback=_CHAIN, jitters=4, normalize=True),
]
# 8 forward passes per face: above MAX_FORWARD_PASSES, so measured (v1extra --jitter) but no candidates.
VIEW1_JITTER_MIRROR = [
    V("fallback u2+cnn+centre + mirror + jitter 4", fallback=_CHAIN, mirror=True, jitters=4),
    V("fallback u2+cnn+centre + mirror + jitter 4 + unit length", fallback=_CHAIN, mirror=True, jitters=4,
      normalize=True),
]
# Only for NORM_COMBOS (unit length without mirror was measured before as worse on View 1's DevTest).
VIEW1_NORM_EXTRA = [V("fallback u2+cnn+centre + unit length", fallback=_CHAIN, normalize=True)]
# Gray-chip contrast equalisation before the ResNet (stage v1chip, View 1 DevTest only): CLAHE
# lost 1.7 points there, so it went no further (no DevTrain pass, never a candidate).
VIEW1_CHIP = [V("fallback u2+cnn+centre + mirror + CLAHE chip", fallback=_CHAIN, mirror=True, equalize="clahe"),
              V("fallback u2+cnn+centre + mirror + unit length + CLAHE chip", fallback=_CHAIN, mirror=True,
                normalize=True, equalize="clahe")]
# 68-point alignment (stage v1lm68): the same boxes (and fallback boxes) as the u2+cnn+centre chain,
# the chip aligned by get_face_chip on the 68-point model's landmarks found in that box, chip 150,
# padding 0.25; plain + mirrored chip embedded (cache lfw_emb_p0.25_j0_lm68.npz).
LM68_MIRROR = "fallback u2+cnn+centre + mirror + 68-point alignment"
LM68_BEST = "fallback u2+cnn+centre + mirror + unit length + 68-point alignment"
VIEW1_LM68 = [V(LM68_MIRROR, fallback=_CHAIN, mirror=True, landmarks=68),
              V(LM68_BEST, fallback=_CHAIN, mirror=True, normalize=True, landmarks=68)]
STAGES = ("v1core", "v1jitter", "v1norm", "select", "v2", "v2norm", "v1extra", "v1chip", "peer1", "peer2", "speed",
          "ident", "metric", "v1lm68", "selectlm68", "v2lm68")

# How the setting reported on View 2 is chosen, written down before View 2 is looked at.
MAX_FORWARD_PASSES = 4
SELECTION_RULE = ("Among the View 1 rows (pairsDevTest, 10-fold CV within it; View 2 never consulted) "
                  f"whose setting costs at most {MAX_FORWARD_PASSES} ResNet forward passes per face (cost cap "
                  "fixed before any jitter result was seen, so that View 2 fits the compute budget): "
                  "the highest mean accuracy; ties (equal accuracy) -> the fewest ResNet forward passes "
                  "per face ((2 if mirror else 1) x max(1, jitters)); then the higher View 1 ROC AUC; "
                  "then the first row in the bench's variant order.")


def forward_passes(variant) -> int:
    """ResNet forward passes per face: the embedding cost of a variant."""
    return (2 if variant["mirror"] else 1) * max(1, variant["jitters"])


def select_by_rule(rows, variants):
    """Apply SELECTION_RULE to View 1 rows; returns (chosen variant, ranked candidate list)."""
    order = {v["name"]: i for i, v in enumerate(variants)}
    by_name = {v["name"]: v for v in variants}
    cands = [r for r in rows if r["variant"] in by_name and forward_passes(by_name[r["variant"]]) <= MAX_FORWARD_PASSES]
    ranked = sorted(cands, key=lambda r: (-round(r["accuracy_mean"], 9), forward_passes(by_name[r["variant"]]),
                                          -r["roc_auc"], order[r["variant"]]))
    table = [{"variant": r["variant"], "accuracy_mean": r["accuracy_mean"], "accuracy_std": r["accuracy_std"],
              "roc_auc": r["roc_auc"], "tar_at_far_1e-3": r["tar_at_far_1e-3"],
              "forward_passes_per_face": forward_passes(by_name[r["variant"]])} for r in ranked]
    return by_name[ranked[0]["variant"]], table


# -- cohort score normalisation (stages v1norm, select, v2norm) --------------------------------
# Descriptor settings of the final detection chain (u2+cnn+centre) whose scores are normalised.
NORM_BASES = [FAST, "fallback u2+cnn+centre + mirror", BEST, "fallback u2+cnn+centre + jitter 4",
              "fallback u2+cnn+centre + jitter 4 + unit length"]
# Above MAX_FORWARD_PASSES (measured on View 1 for the record, never candidates): averages of
# cached descriptors, each unit length, then the mean scaled to unit length.
NORM_COMBOS = {
    "combo: mirror + jitter 4 (unit, averaged)": ["fallback u2+cnn+centre + mirror + unit length",
                                                   "fallback u2+cnn+centre + jitter 4 + unit length"],
    "combo: plain + jitter 4 (unit, averaged)": ["fallback u2+cnn+centre + unit length",
                                                  "fallback u2+cnn+centre + jitter 4 + unit length"],
}
NORM_TOP_K = (50, 100, 200, 400)


def NS(name, method=None, top_k=None, score="euclidean"):
    return {"name": name, "method": method, "top_k": top_k, "score": score}


NORM_SCORINGS = [NS("raw distance")] + [
    NS(f"{m.upper()}-norm {sc}", m, None, sc) for sc in ("cosine", "euclidean") for m in ("z", "t", "s")] + [
    NS(f"AS-norm {sc} top-{k}", "s", k, sc) for sc in ("cosine", "euclidean") for k in NORM_TOP_K]

SELECTION_RULE_NORM = (
    "Candidates: every (descriptor setting, scoring) row of stage v1norm whose descriptor costs at most "
    f"{MAX_FORWARD_PASSES} ResNet forward passes per face; descriptor settings = the final chain "
    "u2+cnn+centre: plain, + mirror, + mirror + unit length, + jitter 4, + jitter 4 + unit length; scorings = "
    "raw Euclidean distance (the earlier rows), Z-/T-/S-norm over the whole cohort and adaptive S-norm "
    f"(AS-norm) over each face's top-k cohort scores, k in {list(NORM_TOP_K)}, each with cosine or "
    "Euclidean raw scores (lookalike.faces.score_norm). Scored on the whole of View 1 (View 2 never "
    "consulted; widened from DevTest alone because 1,000 pairs cannot separate 0.1% differences): the "
    "1,000 pairsDevTest pairs normalised with a cohort of the pairsDevTrain images plus the 2,200 "
    "pairsDevTrain pairs normalised with a cohort of the pairsDevTest images (the two files share no "
    "person; checked at run time), 3,200 pairs in 10 folds (fold = pair index mod 10 within each file), "
    "threshold chosen on the other nine folds. Pick the highest mean accuracy; ties (equal to 1e-9) -> "
    "the fewest forward passes per face; then no normalisation before Z/T before S before AS (simpler "
    "first), larger k first; then the higher View 1 ROC AUC; then the first in the bench's order.")


SELECTION_RULE_LM68 = (
    "Written down after View 2 of the 5-point settings (stages v2, v2norm) had been seen and before any "
    "View 2 number for 68-point alignment existed; it only adds candidates to SELECTION_RULE_NORM. "
    "Candidates: the SELECTION_RULE_NORM candidates (the v1norm rows of the five 5-point descriptor settings, "
    f"at most {MAX_FORWARD_PASSES} ResNet forward passes per face) plus the stage v1lm68 rows: the same "
    "u2+cnn+centre faces (same detector and fallback boxes) with the chip aligned on dlib's 68-point "
    "landmarks (chip 150, padding 0.25), + mirror and + mirror + unit length (2 forward passes per face), "
    "under the same scorings (raw Euclidean distance, Z-/T-/S-norm, AS-norm top-k, cosine or Euclidean), "
    "scored on the whole of View 1 exactly as v1norm (3,200 pairs: DevTest with a DevTrain-image cohort, "
    "DevTrain with a DevTest-image cohort, 10 folds, threshold on the other nine). Same ordering: highest "
    "View 1 mean accuracy; ties (equal to 1e-9) -> the fewest forward passes per face; then no "
    "normalisation before Z/T before S before AS (larger k first); then the higher View 1 ROC AUC; then "
    "the first in the bench's order (the v1norm rows before the v1lm68 rows, so a 5-point row wins an "
    "exact tie). If a 68-point row is chosen, stage v2lm68 scores it on View 2 as v2norm does.")


V1NORM_PROTOCOL = ("pairsDevTest (1,000) with a cohort of the pairsDevTrain images + pairsDevTrain (2,200) with a "
                   "cohort of the pairsDevTest images; 10 folds = pair index mod 10 within each file; 'devtest' "
                   "= the DevTest pairs alone, 10-fold within")
V2NORM_PROTOCOL = ("pairs.txt, standard 10 folds; cohort for fold k = the images of the other nine folds' pairs; "
                   "threshold on nine folds")


def scoring_rank(scoring) -> tuple:
    """Simplicity order for ties: raw < Z/T < S (whole cohort) < AS (larger k first)."""
    if scoring["method"] is None:
        return (0, 0)
    if scoring["method"] in ("z", "t"):
        return (1, 0)
    return (2, 0) if scoring["top_k"] is None else (3, -scoring["top_k"])


def combo_vectors(parts: list[dict]) -> dict:
    """unit(mean of the parts' unit-length descriptors), per image present in all parts."""
    common = set.intersection(*(set(p) for p in parts))
    out = {}
    for rel in common:
        v = np.mean([p[rel] / np.linalg.norm(p[rel]) for p in parts], axis=0)
        out[rel] = v / np.linalg.norm(v)
    return out


class NormScorer:
    """Pair scores of one descriptor table under every scoring, with cohort statistics cached."""

    def __init__(self, vectors: dict, pairs, cohort_of):
        """cohort_of(rel) -> a hashable cohort id; ``cohorts[id]`` the (m, 128) cohort."""
        from lookalike.faces import score_norm

        self.sn = score_norm
        self.pairs = pairs
        self.vectors = vectors
        self.cohort_of = cohort_of
        self._stats: dict = {}

    def stats(self, rels, cohorts, top_k, score):
        key = (top_k, score)
        if key not in self._stats:
            mu, sd = {}, {}
            groups: dict = {}
            for r in rels:
                groups.setdefault(self.cohort_of(r), []).append(r)
            for cid, members in groups.items():
                x = np.stack([self.vectors[r] for r in members])
                m, s = self.sn.cohort_stats(x, cohorts[cid], top_k, score)
                mu.update(zip(members, m))
                sd.update(zip(members, s))
            self._stats[key] = (mu, sd)
        return self._stats[key]

    def scores(self, scoring, cohorts):
        ra = [rel_of(p.path_a) for p in self.pairs]
        rb = [rel_of(p.path_b) for p in self.pairs]
        ok = np.array([a in self.vectors and b in self.vectors for a, b in zip(ra, rb)])
        s = np.full(len(self.pairs), np.nan)
        ia = [a for a, k in zip(ra, ok) if k]
        ib = [b for b, k in zip(rb, ok) if k]
        xa = np.stack([self.vectors[r] for r in ia])
        xb = np.stack([self.vectors[r] for r in ib])
        raw = self.sn.raw_scores(xa, xb, scoring["score"])
        if scoring["method"] is None:
            s[ok] = raw
        else:
            mu, sd = self.stats(sorted(set(ia) | set(ib)), cohorts, scoring["top_k"], scoring["score"])
            s[ok] = self.sn.normalize_scores(raw, (np.array([mu[r] for r in ia]), np.array([sd[r] for r in ia])),
                                             (np.array([mu[r] for r in ib]), np.array([sd[r] for r in ib])),
                                             scoring["method"])
        if (~ok).any():  # no face in one image: "very different", below every scored pair
            s[~ok] = np.nanmin(s[ok]) - 1.0
        return s


def score_metrics(scores, is_same, folds) -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    kf, _ = kfold(scores, is_same, folds)
    fpr, tpr, _ = roc_curve(is_same, scores)
    tar = float(np.max(tpr[fpr <= 1e-3])) if np.any(fpr <= 1e-3) else 0.0
    return {"accuracy_mean": round(kf["mean_accuracy"], 5), "accuracy_std": round(kf["std_accuracy"], 5),
            "roc_auc": round(float(roc_auc_score(is_same, scores)), 5), "tar_at_far_1e-3": round(tar, 4),
            "fold_accuracies": [round(a, 5) for a in kf["fold_accuracies"]]}, (fpr, tpr)


def people(pairs) -> set:
    return {p.path_a.parent.name for p in pairs} | {p.path_b.parent.name for p in pairs}


def select_by_rule_norm(rows, bases, scorings):
    """Apply SELECTION_RULE_NORM to the v1norm rows; returns (chosen row, ranked candidate table)."""
    passes = {b["name"]: forward_passes(b) for b in bases}
    sc = {s["name"]: s for s in scorings}
    order = {(r["variant"], r["scoring"]): i for i, r in enumerate(rows)}
    cands = [r for r in rows if r["variant"] in passes and passes[r["variant"]] <= MAX_FORWARD_PASSES
             and r["scoring"] in sc]
    ranked = sorted(cands, key=lambda r: (-round(r["full_view1"]["accuracy_mean"], 9), passes[r["variant"]],
                                          scoring_rank(sc[r["scoring"]]), -r["full_view1"]["roc_auc"],
                                          order[(r["variant"], r["scoring"])]))
    table = [{"variant": r["variant"], "scoring": r["scoring"], "forward_passes_per_face": passes[r["variant"]],
              **{k: r["full_view1"][k] for k in ("accuracy_mean", "accuracy_std", "roc_auc", "tar_at_far_1e-3")},
              "devtest_accuracy_mean": r["devtest"]["accuracy_mean"]} for r in ranked]
    return ranked[0], table


def _stop(signum, frame):
    raise KeyboardInterrupt  # lets the caches' `finally` save what is done


def main():
    import signal

    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"comma list, run in this order: {', '.join(STAGES)}")
    ap.add_argument("--jitter", action="store_true",
                    help="v1jitter (and v1extra) also run the mirror + jitter 4 rows (8x embed cost; above the "
                         "selection's cost cap, so never chosen)")
    ap.add_argument("--best", default="auto",
                    help="variant reported as the best (View 2, ident, speed): 'auto' = the one SELECTION_RULE "
                         f"picks from the View 1 rows (stage select; {BEST!r} if none), or a variant name")
    ap.add_argument("--peer-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--peer-images", type=int, default=0,
                    help="peer1 on only the first N View 1 images: descriptor agreement, no accuracy")
    ap.add_argument("--v2-folds", type=int, default=10, help="run/score only the first N View 2 folds")
    ap.add_argument("--speed-images", type=int, default=60, help="images timed by the speed stage (per round)")
    ap.add_argument("--speed-rounds", type=int, default=3, help="interleaved timing rounds (medians reported)")
    ap.add_argument("--ident-identities", type=int, default=300, help="LFW people with 2+ images (ident stage)")
    ap.add_argument("--ident-distractors", type=int, default=1000, help="one-image people (ident stage)")
    ap.add_argument("--limit", type=int, default=0, help="about N pairs per view (smoke test)")
    args = ap.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if set(stages) - set(STAGES):
        ap.error(f"unknown stages {set(stages) - set(STAGES)}; valid: {', '.join(STAGES)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    # Start from the previous report so a run of some stages keeps the others' rows.
    report = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    report.update({"dataset": "LFW (grayscale copy)",
              "pipeline": "dlib HOG + shape_predictor_5 + get_face_chip(150) + ResNet v1 (lookalike.faces)",
              "missing_face_policy": f"pair scored as distance {MISSING_DISTANCE} (i.e. 'different')",
              "stages": stages})
    geom, emb = GeometryCache(), EmbeddingCache()

    def prepare(pairs, variants):
        rels = sorted({rel_of(p.path_a) for p in pairs} | {rel_of(p.path_b) for p in pairs})
        ensure_geometry(geom, variants, rels, args.workers)
        for v in variants:
            requests, _ = variant_requests(v, geom, rels)
            emb.ensure(requests, v["padding"], v["jitters"], args.workers, v.get("equalize", "none"),
                       v.get("landmarks", 5))

    def evaluate(pairs, folds, variants, tag):
        rels = sorted({rel_of(p.path_a) for p in pairs} | {rel_of(p.path_b) for p in pairs})
        prepare(pairs, variants)
        rows, curves = [], {}
        for v in variants:
            _, chosen = variant_requests(v, geom, rels)
            metrics, curve = pair_metrics(pairs, variant_vectors(v, chosen, emb), folds)
            metrics["images_without_face"] = sum(p is None for p in chosen.values())
            metrics["images_on_fallback"] = sum(p is not None and p[2] != "detector" for p in chosen.values())
            rows.append({"variant": v["name"], **{k: v[k] for k in BASE}, **metrics})
            curves[v["name"]] = curve
            log(tag, v["name"], metrics["accuracy_mean"], metrics["roc_auc"])
        return rels, rows, curves

    # View 1: 1,000 DevTest pairs, 10 interleaved folds of 100 (50 same + 50 different).
    v1 = read_lfw_pairs(LFW / "pairsDevTest.txt")
    if args.limit:
        v1 = v1[: args.limit // 2] + v1[500 : 500 + args.limit // 2]
    v1_folds = np.arange(len(v1)) % 10
    v1_rels = sorted({rel_of(p.path_a) for p in v1} | {rel_of(p.path_b) for p in v1})
    v2 = read_lfw_pairs(LFW / "pairs.txt")
    if args.limit:
        v2 = v2[:: max(1, len(v2) // args.limit)]
    v2_folds = np.array([p.fold for p in v2])
    v2_rels = sorted({rel_of(p.path_a) for p in v2} | {rel_of(p.path_b) for p in v2})
    all_variants = (VIEW1_CORE + VIEW1_EXTRA + VIEW1_JITTER + VIEW1_JITTER_MIRROR + VIEW1_NORM_EXTRA + VIEW1_CHIP
                    + VIEW1_LM68)
    v1_train = read_lfw_pairs(LFW / "pairsDevTrain.txt")
    if args.limit:
        v1_train = v1_train[: args.limit // 2] + v1_train[1100 : 1100 + args.limit // 2]
    by_name = {v["name"]: v for v in all_variants}

    def current_best():
        if args.best != "auto":
            return by_name[args.best]
        sel = report.get("selection", {})
        chosen = sel.get("chosen_variant", sel.get("chosen"))
        return by_name[chosen] if chosen in by_name else by_name[BEST]

    def final_pick():
        """The reported setting: the last rule's pick (68-point chips when SELECTION_RULE_LM68 chose them)."""
        sel = report.get("selection_lm68", {})
        if sel.get("chosen_landmarks") == 68:
            return next(v for v in VIEW1_LM68 if v["name"] == sel["chosen_variant"])
        return current_best()

    def base_vectors(name, pairs):
        """rel -> descriptor for the images of ``pairs`` (a variant or a NORM_COMBOS entry)."""
        rels = sorted({rel_of(p.path_a) for p in pairs} | {rel_of(p.path_b) for p in pairs})
        if name in NORM_COMBOS:
            return combo_vectors([base_vectors(part, pairs) for part in NORM_COMBOS[name]])
        v = by_name[name]
        prepare(pairs, [v])
        _, chosen = variant_requests(v, geom, rels)
        return variant_vectors(v, chosen, emb)

    best = current_best()
    fast = next(v for v in all_variants if v["name"] == FAST)
    curves = {}
    peer_ok = Path(args.peer_python).exists()

    def peer_rows(pairs, folds, rels, recs, keep_curves):
        rows = []
        for pol, fb in (("first", False), ("first", True), ("center", True)):
            name = f"face_recognition defaults, {pol} face, no-face -> {'whole-image location' if fb else 'missing'}"
            m, curve = pair_metrics(pairs, peer_vectors(recs, rels, pol, fb), folds)
            rows.append({"variant": name, **m})
            if keep_curves:
                curves[name] = curve
        secs = [recs[r]["seconds"] for r in rels]
        return {"rows": rows, "seconds_per_image_median": round(float(np.median(secs)), 4)}

    def add_view1_rows(rows):
        """Add/replace (by variant name) View 1 rows, kept in the bench's variant order."""
        report.setdefault("view1", {"pairs": len(v1), "images": len(v1_rels),
                                    "protocol": "pairsDevTest, 10 interleaved folds within it", "rows": []})
        merged = {r["variant"]: r for r in report["view1"]["rows"]}
        merged.update({r["variant"]: r for r in rows})
        order = {v["name"]: i for i, v in enumerate(all_variants)}
        report["view1"]["rows"] = sorted(merged.values(), key=lambda r: order.get(r["variant"], len(order)))

    def view1_norm_rows(bases, shared, tag):
        """The whole of View 1, each half scored with a cohort of the other half's images (v1norm, v1lm68)."""
        halves = {"devtest": v1, "devtrain": v1_train}
        rows = []
        for base in bases:
            vec = {h: base_vectors(base, ps) for h, ps in halves.items()}
            cohorts = {h: np.stack([x for r, x in sorted(vec[o].items()) if r.split("/")[0] not in shared])
                       for h, o in (("devtest", "devtrain"), ("devtrain", "devtest"))}
            scorers = {h: NormScorer(vec[h], ps, lambda r, h=h: h) for h, ps in halves.items()}
            y = np.array([p.same for p in v1] + [p.same for p in v1_train])
            folds = np.concatenate([np.arange(len(v1)) % 10, np.arange(len(v1_train)) % 10])
            for scoring in NORM_SCORINGS:
                st = scorers["devtest"].scores(scoring, cohorts)
                sr = scorers["devtrain"].scores(scoring, cohorts)
                full, _ = score_metrics(np.concatenate([st, sr]), y, folds)
                dev, _ = score_metrics(st, y[: len(v1)], v1_folds)
                full.pop("fold_accuracies")  # 105 rows: the JSON stays readable
                dev.pop("fold_accuracies")
                rows.append({"variant": base, "scoring": scoring["name"], **{k: scoring[k] for k in
                             ("method", "top_k", "score")},
                             "forward_passes_per_face": forward_passes(by_name[base]) if base in by_name
                             else sum(forward_passes(by_name[p]) for p in NORM_COMBOS[base]),
                             "full_view1": full, "devtest": dev})
                log(tag, base, "|", scoring["name"], full["accuracy_mean"], full["roc_auc"],
                    "devtest", dev["accuracy_mean"])
        return rows, cohorts

    def view2_norm_rows(wanted, tag):
        """View 2 rows of (descriptor setting, scoring) pairs, ``wanted[0]`` marked as chosen; the cohort
        for test fold k = the images of the other nine folds' pairs (View 2 folds share no person;
        checked here). Returns (rows, chosen ROC curve, cohorts)."""
        fold_people = [people([p for p in v2 if p.fold == k]) for k in sorted(set(v2_folds.tolist()))]
        overlap = sum(len(a & b) for i, a in enumerate(fold_people) for b in fold_people[i + 1:])
        if overlap:
            raise SystemExit(f"View 2 folds share {overlap} people: the fold cohorts would not be disjoint")
        fold_of_rel = {}
        for p in v2:
            fold_of_rel[rel_of(p.path_a)] = fold_of_rel[rel_of(p.path_b)] = p.fold
        rows, chosen_curve = [], None
        for base in dict.fromkeys(b for b, _ in wanted):
            vec = base_vectors(base, v2)
            rels = sorted(vec)
            cohorts = {k: np.stack([vec[r] for r in rels if fold_of_rel[r] != k])
                       for k in sorted(set(v2_folds.tolist()))}
            scorer = NormScorer(vec, v2, lambda r: fold_of_rel[r])
            for b, sname in wanted:
                if b != base:
                    continue
                scoring = next(s for s in NORM_SCORINGS if s["name"] == sname)
                m, curve = score_metrics(scorer.scores(scoring, cohorts), np.array([p.same for p in v2]),
                                         v2_folds)
                is_chosen = (b, sname) == wanted[0]
                rows.append({"variant": b, "scoring": sname, "chosen_on_view1": is_chosen, **m})
                curves[f"{b} | {sname}"] = curve  # for the plot
                if is_chosen:
                    chosen_curve = (f"{b} | {sname}  [chosen on View 1]", curve)
                log(tag, b, "|", sname, m["accuracy_mean"], m["accuracy_std"], m["tar_at_far_1e-3"])
        return rows, chosen_curve, cohorts

    for stage in stages:
        log("stage", stage)
        if stage == "v1core":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_CORE, "view1")
            add_view1_rows(rows)
        elif stage == "v1jitter":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_JITTER + (VIEW1_JITTER_MIRROR if args.jitter else []), "view1")
            add_view1_rows(rows)
        elif stage == "v1chip":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_CHIP, "view1")
            for row in rows:
                row["equalize"] = by_name[row["variant"]]["equalize"]
            add_view1_rows(rows)
        elif stage == "v1extra":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_EXTRA + (VIEW1_JITTER + VIEW1_JITTER_MIRROR if args.jitter else []), "view1")
            add_view1_rows(rows)
        elif stage == "v1norm":
            # The whole of View 1, each half scored with a cohort of the other half's images.
            shared = people(v1) & people(v1_train)
            if shared:  # not the case for the LFW files; kept so the cohorts stay person-disjoint
                log(f"v1norm: {len(shared)} people in both DevTrain and DevTest; left out of the cohorts")
            rows, cohorts = view1_norm_rows(NORM_BASES + list(NORM_COMBOS), shared, "v1norm")
            report["view1_norm"] = {
                "protocol": V1NORM_PROTOCOL,
                "people_shared_devtrain_devtest": len(shared),
                "cohort_images": {h: int(len(c)) for h, c in cohorts.items()}, "rows": rows}
        elif stage == "v1lm68":
            shared = people(v1) & people(v1_train)
            rows, cohorts = view1_norm_rows([v["name"] for v in VIEW1_LM68], shared, "v1lm68")
            report["view1_lm68"] = {
                "protocol": V1NORM_PROTOCOL + "; chips aligned on 68-point landmarks in the same boxes",
                "people_shared_devtrain_devtest": len(shared),
                "cohort_images": {h: int(len(c)) for h, c in cohorts.items()}, "rows": rows}
        elif stage == "selectlm68":
            if "view1_lm68" not in report or "view1_norm" not in report:
                raise SystemExit("selectlm68 needs stages v1norm and v1lm68")
            bases = [by_name[b] for b in NORM_BASES + [v["name"] for v in VIEW1_LM68]]
            row, table = select_by_rule_norm(report["view1_norm"]["rows"] + report["view1_lm68"]["rows"], bases,
                                             NORM_SCORINGS)
            chosen = by_name[row["variant"]]
            scoring = next(s for s in NORM_SCORINGS if s["name"] == row["scoring"])
            report["selection_lm68"] = {"rule": SELECTION_RULE_LM68, "chosen": f"{row['variant']} | {row['scoring']}",
                                        "chosen_variant": row["variant"], "chosen_scoring": scoring,
                                        "chosen_landmarks": chosen.get("landmarks", 5),
                                        "chosen_settings": _library_settings(chosen), "ranked_view1": table}
            log("selected on View 1 (SELECTION_RULE_LM68):", report["selection_lm68"]["chosen"])
        elif stage == "v2lm68":
            sel = report["selection_lm68"]
            if sel["chosen_landmarks"] != 68:
                log("v2lm68: SELECTION_RULE_LM68 kept a 5-point row; nothing new to score on View 2")
            else:
                # The chosen row, its descriptors unnormalised, the other 68-point descriptor with the same
                # scoring, and the 5-point pick of SELECTION_RULE_NORM (its View 2 descriptors are cached).
                other = next(v["name"] for v in VIEW1_LM68 if v["name"] != sel["chosen_variant"])
                wanted = [(sel["chosen_variant"], sel["chosen_scoring"]["name"]),
                          (sel["chosen_variant"], "raw distance"), (other, sel["chosen_scoring"]["name"])]
                if "chosen_scoring" in report.get("selection", {}):
                    five = report["selection"]
                    wanted.append((five["chosen_variant"], five["chosen_scoring"]["name"]))
                rows, chosen_curve, cohorts = view2_norm_rows(list(dict.fromkeys(wanted)), "v2lm68")
                report["view2_lm68"] = {"pairs": len(v2), "protocol": V2NORM_PROTOCOL,
                                        "cohort_images_median": int(np.median([len(c) for c in cohorts.values()])),
                                        "rows": rows}
                report["view2_best"] = sel["chosen"]  # the last rule's pick is the reported setting
                # The plot: the final pick, its raw distances, the 5-point pick, and the reference
                # rows of stages v2 / peer2 when they ran in this run.
                keep = [VIEW1_CORE[0]["name"], FAST, "face_recognition defaults, center face, no-face -> whole-image location",
                        f"{sel['chosen_variant']} | raw distance"]
                if len(wanted) > 3:
                    keep.append(f"{wanted[3][0]} | {wanted[3][1]}")
                shown = {n: curves[n] for n in keep if n in curves}
                shown[chosen_curve[0]] = chosen_curve[1]
                plot_roc(shown, f"LFW View 2 (grayscale), {len(v2)} pairs")
        elif stage == "select":
            if "view1_norm" in report:
                if "rule" in report.get("selection", {}) and report["selection"]["rule"] == SELECTION_RULE:
                    report["selection_devtest_only"] = report["selection"]  # the earlier rule's pick, kept
                bases = [by_name[b] for b in NORM_BASES]
                row, table = select_by_rule_norm(report["view1_norm"]["rows"], bases, NORM_SCORINGS)
                chosen = by_name[row["variant"]]
                scoring = next(s for s in NORM_SCORINGS if s["name"] == row["scoring"])
                report["selection"] = {"rule": SELECTION_RULE_NORM, "chosen": f"{row['variant']} | {row['scoring']}",
                                       "chosen_variant": row["variant"], "chosen_scoring": scoring,
                                       "chosen_settings": _library_settings(chosen), "ranked_view1": table}
            else:
                chosen, table = select_by_rule(report["view1"]["rows"], all_variants)
                report["selection"] = {"rule": SELECTION_RULE, "chosen": chosen["name"],
                                       "chosen_settings": _library_settings(chosen), "ranked_view1": table}
            best = current_best()
            log("selected on View 1:", report["selection"]["chosen"], "->", best["name"])
        elif stage == "v2norm":
            sel = report["selection"]
            if "chosen_scoring" not in sel:
                raise SystemExit("v2norm needs a selection made by SELECTION_RULE_NORM (stages v1norm,select)")
            ranked = sel["ranked_view1"]
            wanted = [(sel["chosen_variant"], sel["chosen_scoring"]["name"])]
            wanted += [(sel["chosen_variant"], "raw distance")]  # the same descriptors unnormalised
            wanted += [(r["variant"], r["scoring"]) for r in ranked[:5]]  # the runners-up, for the record
            rows, chosen_curve, cohorts = view2_norm_rows(list(dict.fromkeys(wanted)), "v2norm")
            report["view2_norm"] = {"pairs": len(v2), "protocol": V2NORM_PROTOCOL,
                                    "cohort_images_median": int(np.median([len(c) for c in cohorts.values()])),
                                    "rows": rows}
            report["view2_best"] = sel["chosen"]
            # The plot: the chosen setting against a few reference rows (stages v2 / peer2 of this run).
            keep = [VIEW1_CORE[0]["name"], FAST, "fallback u2+cnn+centre + jitter 4", sel["chosen_variant"],
                    "face_recognition defaults, center face, no-face -> whole-image location"]
            shown = {n: curves[n] for n in keep if n in curves}
            shown[chosen_curve[0]] = chosen_curve[1]
            plot_roc(shown, f"LFW View 2 (grayscale), {len(v2)} pairs")
        elif stage == "v2":
            # Fold by fold, so an interrupted run still scores the folds it finished
            # (threshold chosen on the other finished folds).
            # VIEW1_CORE[2] (highest-score face, no fallback, no mirror) is the
            # face_recognition-equivalent pipeline (same box and descriptor on 58/59 images).
            v2_variants = [VIEW1_CORE[0], VIEW1_CORE[1], VIEW1_CORE[2], VIEW1_CORE[5], VIEW1_CORE[8]]
            v2_variants += [v for v in VIEW1_CORE[9:] + VIEW1_JITTER[:1] if v not in v2_variants]
            v2_variants += [best] if best not in v2_variants else []
            report["view2_best"] = best["name"]
            fold_ids = sorted(set(v2_folds.tolist()))[: args.v2_folds]
            for k in fold_ids:
                prepare([p for p in v2 if p.fold == k], v2_variants)
                done = v2_folds <= k
                if done.sum() < len(v2) and k < 1:
                    continue
                sub = [p for p, keep in zip(v2, done) if keep]
                _, rows, c = evaluate(sub, v2_folds[done], v2_variants, f"view2 folds<= {k}")
                # With a normalised scoring chosen (stage v2norm), the raw-distance rows are not it.
                raw_chosen = report.get("selection", {}).get("chosen_scoring", {}).get("method") is None
                for row in rows:
                    row["chosen_on_view1"] = raw_chosen and row["variant"] == best["name"]
                curves.update({(f"{n}  [chosen on View 1]" if raw_chosen and n == best["name"] else n): cv
                               for n, cv in c.items()})
                report["view2"] = {"pairs": len(sub), "folds_done": k + 1, "of_folds": len(set(v2_folds.tolist())),
                                   "protocol": "pairs.txt, standard 10 folds (scored on the folds done)",
                                   "rows": rows}
                RESULT.write_text(json.dumps(report, indent=1))
                plot_roc(curves, f"LFW View 2 (grayscale), {len(sub)} pairs, {k + 1} folds")
        elif stage == "peer1" and peer_ok:
            rels = v1_rels[: args.peer_images] if args.peer_images else v1_rels
            recs = run_peer(args.peer_python, rels, args.workers, "v1")
            out = report["view1_peer_face_recognition"] = {"agreement": peer_agreement(recs, rels, geom, emb)}
            if len(rels) == len(v1_rels):
                out.update(peer_rows(v1, v1_folds, v1_rels, recs, False))
        elif stage == "peer2" and peer_ok:
            recs = run_peer(args.peer_python, v2_rels, args.workers, "v2")
            report["view2_peer_face_recognition"] = peer_rows(v2, v2_folds, v2_rels, recs, True)
            plot_roc(curves, f"LFW View 2 (grayscale), {len(v2)} pairs")
        elif stage == "speed":
            report["speed"] = measure_speed(v1_rels[: args.speed_images], args.workers, args.peer_python,
                                            args.speed_rounds, [VIEW1_CORE[2], fast, final_pick()])
        elif stage == "metric":
            metric_variant = next(v for v in all_variants if v["name"] == "fallback u2+cnn+centre + mirror")
            prepare(v2, [metric_variant])
            _, chosen = variant_requests(metric_variant, geom, v2_rels)
            report["view2_learned_metrics"] = {
                "variant": metric_variant["name"],
                "protocol": "per test fold: fit on the images (in pairs.txt) of the other nine folds' people, "
                            "threshold on those nine folds",
                "rows": learned_metrics(v2, v2_folds, variant_vectors(metric_variant, chosen, emb))}
        elif stage == "ident":
            variants = [VIEW1_CORE[2], fast, best] + ([final_pick()] if final_pick() is not best else [])
            report["identification"] = identification(
                geom, emb, variants, args.workers, args.ident_identities, args.ident_distractors)
        RESULT.write_text(json.dumps(report, indent=1))
    text = json.dumps(report, indent=1)
    RESULT.write_text(text)
    print(text)


def plot_roc(curves, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for name, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=name, lw=1.3)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0.8, 1.0)
    ax.set_xlabel("false accept rate (different pairs accepted)")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(ROC_PNG, dpi=120)


if __name__ == "__main__":
    main()
