"""LFW verification with lookalike's face pipeline (dlib HOG + 5 landmarks + ResNet 128-d).

What it measures (JSON to stdout and bench/results/faces_lfw.json; ROC to docs/img/lfw_roc.png):

* View 1 (pairsDevTest, 1,000 pairs, 10-fold CV inside it): one row per pipeline choice
  (face selection, upsample 0/1/2, no-face fallback, chip padding, mirror TTA, unit-length
  descriptors, test-time jitter: stage ``v1jitter``).
* ``select``: the setting reported as the best is picked from the View 1 rows by
  ``SELECTION_RULE`` (highest View 1 mean accuracy; ties -> fewer ResNet forward passes,
  then higher View 1 AUC), written to the JSON as ``selection`` before View 2 is run.
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

Usage:  python bench/faces_lfw.py [--workers 2] [--stages v1core,v1jitter,select,v2,v1extra,peer1,peer2,speed,ident,metric] [--limit N]
The View 1 -> selection -> View 2 path alone:
        nice -n 10 python bench/faces_lfw.py --workers 2 --stages v1core,v1jitter,select,v2
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
    """(relpath, padding, jitters, [(key, box, landmarks, flip)]) -> [(key, vector)]."""
    rel, padding, jitters, faces = job
    aligner = FaceAligner(padding=padding)
    embedder = _WORKER.setdefault(("emb", jitters), FaceEmbedder(num_jitters=jitters))
    pixels = FacePipeline.load(LFW / "images" / rel)
    chips = []
    for _, box, landmarks, flip in faces:
        chip = aligner.chip(pixels, box, np.asarray(landmarks, dtype=np.float32))
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
    """Descriptors per face, one file per (padding, jitters)."""

    def __init__(self):
        self.tables: dict[tuple, dict] = {}

    def path(self, padding, jitters):
        return CACHE / f"lfw_emb_p{padding}_j{jitters}.npz"

    def table(self, padding, jitters):
        key = (padding, jitters)
        if key not in self.tables:
            p = self.path(padding, jitters)
            table = {}
            if p.exists():
                z = np.load(p)
                table = dict(zip(z["keys"].tolist(), z["vectors"]))
            self.tables[key] = table
        return self.tables[key]

    def save(self, padding, jitters):
        table = self.table(padding, jitters)
        keys = np.array(list(table.keys()))
        vectors = np.array(list(table.values()), dtype=np.float32).reshape(len(keys), 128)
        atomic_write(self.path(padding, jitters), lambda fh: np.savez(fh, keys=keys, vectors=vectors))

    def ensure(self, requests, padding, jitters, workers):
        """requests: {rel: [(key, box, landmarks, flip)]}."""
        table = self.table(padding, jitters)
        jobs = []
        for rel, faces in requests.items():
            todo = [f for f in faces if f[0] not in table]
            if todo:
                jobs.append((rel, padding, jitters, todo))
        last = [time.time()]

        def merge(result):
            table.update(result)
            if time.time() - last[0] > SAVE_EVERY_S:
                self.save(padding, jitters)
                last[0] = time.time()

        try:
            run_pool(_embed_worker, jobs, workers, merge, f"embed p={padding} j={jitters}")
        finally:
            if jobs:
                self.save(padding, jitters)


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
    table = emb.table(variant["padding"], variant["jitters"])
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
                normalize=variant["normalize"], center_fraction=CENTER_FRACTION)


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
        emb.ensure(requests, v["padding"], v["jitters"], workers)
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
STAGES = ("v1core", "v1jitter", "select", "v2", "v1extra", "peer1", "peer2", "speed", "ident", "metric")

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
            emb.ensure(requests, v["padding"], v["jitters"], args.workers)

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
    all_variants = VIEW1_CORE + VIEW1_EXTRA + VIEW1_JITTER + VIEW1_JITTER_MIRROR
    by_name = {v["name"]: v for v in all_variants}

    def current_best():
        if args.best != "auto":
            return by_name[args.best]
        chosen = report.get("selection", {}).get("chosen")
        return by_name[chosen] if chosen in by_name else by_name[BEST]

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

    for stage in stages:
        log("stage", stage)
        if stage == "v1core":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_CORE, "view1")
            add_view1_rows(rows)
        elif stage == "v1jitter":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_JITTER + (VIEW1_JITTER_MIRROR if args.jitter else []), "view1")
            add_view1_rows(rows)
        elif stage == "v1extra":
            _, rows, _ = evaluate(v1, v1_folds, VIEW1_EXTRA + (VIEW1_JITTER + VIEW1_JITTER_MIRROR if args.jitter else []), "view1")
            add_view1_rows(rows)
        elif stage == "select":
            chosen, table = select_by_rule(report["view1"]["rows"], all_variants)
            report["selection"] = {"rule": SELECTION_RULE, "chosen": chosen["name"],
                                   "chosen_settings": _library_settings(chosen), "ranked_view1": table}
            best = current_best()
            log("selected on View 1:", chosen["name"], "->", best["name"])
        elif stage == "v2":
            # Fold by fold, so an interrupted run still scores the folds it finished
            # (threshold chosen on the other finished folds).
            # VIEW1_CORE[2] (highest-score face, no fallback, no mirror) is the
            # face_recognition-equivalent pipeline (same box and descriptor on 58/59 images).
            v2_variants = [VIEW1_CORE[0], VIEW1_CORE[1], VIEW1_CORE[2], VIEW1_CORE[5], VIEW1_CORE[8]]
            v2_variants += [v for v in VIEW1_CORE[9:] if v not in v2_variants]
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
                for row in rows:
                    row["chosen_on_view1"] = row["variant"] == best["name"]
                curves.update({(f"{n}  [chosen on View 1]" if n == best["name"] else n): cv for n, cv in c.items()})
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
                                            args.speed_rounds, [VIEW1_CORE[2], fast, best])
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
            report["identification"] = identification(
                geom, emb, [VIEW1_CORE[2], fast, best], args.workers, args.ident_identities, args.ident_distractors)
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
