"""``lookalike faces ...``: index a face gallery, verify, identify, cluster, calibrate.

A thin shell over :mod:`lookalike.faces`; registered by ``cli._register_extensions``.
Errors are :class:`~lookalike.errors.LookalikeError` subclasses, printed on one line by
``cli.main`` with exit code 1.
"""
from __future__ import annotations

import html
import json
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .errors import InputError

faces_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Faces: index a gallery, verify two photos, identify people, cluster, calibrate.")

def default_lfw() -> Path:
    """LFW used by `calibrate` when no pairs are given: $LOOKALIKE_SHARED_DATA/lfw, else
    ../shared/data/lfw beside the source checkout, else beside the working directory."""
    if "LOOKALIKE_SHARED_DATA" in os.environ:
        return Path(os.environ["LOOKALIKE_SHARED_DATA"]) / "lfw"
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = root.parent / "shared" / "data" / "lfw"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "lfw"


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _console():
    from .cli import console

    return console


FALLBACK_HELP = ("No-face fallback: none, whole, center, or a chain of steps joined by '+' "
                 "(u<N>: HOG at upsample N, cnn: CNN detector, then whole/center), e.g. u2+cnn+center, "
                 "the chain measured best on LFW. For pre-cropped faces only.")
NORMALIZE_HELP = "Unit-length descriptors (cosine-like distance; default cut 0.42 instead of 0.6)."
LANDMARKS_HELP = ("Landmarks the chip is aligned on: 5 (dlib's 5-point model) or 68 (its 68-point model; "
                  "slower to load).")
JITTERS_HELP = ("Test-time jitter: average the descriptors of N slightly moved/zoomed/rotated copies of "
                "each chip (seeded, deterministic; N times the embedding cost; 0 = off).")


def _pipeline(upsample: int, fallback: str, mirror: bool, select: str = "center", normalize: bool = False,
              jitters: int = 0, landmarks: int = 5):
    from .faces import FacePipeline

    if jitters < 0:
        raise InputError(f"--jitters must be 0 or more, not {jitters}")
    return FacePipeline(upsample=upsample, fallback=fallback, mirror=mirror, select=select, normalize=normalize,
                        num_jitters=jitters, landmarks=landmarks)


def _one_face(pipe, path: Path):
    from .faces import FaceNotFound

    if not path.exists():
        raise InputError(f"{path}: no such file")
    face = pipe.embed_one(path)
    if isinstance(face, FaceNotFound):
        raise InputError(f"{path}: {face.reason}")
    return face


# -- HTML ---------------------------------------------------------------------------------

def face_crop_uri(source, box, side: int = 128, margin: float = 0.25) -> str:
    """A JPEG data URI of the face ``box`` (plus ``margin`` of its size) cut from ``source``."""
    from PIL import Image

    from .html import thumbnail_uri
    from .images import load_pixels

    pixels = load_pixels(source, mode="RGB")
    left, top, right, bottom = box
    pad_x, pad_y = margin * (right - left), margin * (bottom - top)
    crop = Image.fromarray(pixels).crop((int(left - pad_x), int(top - pad_y), int(right + pad_x), int(bottom + pad_y)))
    return thumbnail_uri(np.asarray(crop), side=side)


def _figure(uri: str, caption: str, css: str = "") -> str:
    img = f'<img src="{uri}" alt="">' if uri else "<div>(unreadable)</div>"
    return f'<figure class="{css}">{img}<figcaption>{caption}</figcaption></figure>'


def _write_html(path: Path, title: str, blocks: list[str]) -> None:
    from .html import page, write_page

    write_page(path, page(title, "".join(f"<div class='query'><div class='row'>{b}</div></div>" for b in blocks)))


# -- commands -----------------------------------------------------------------------------

@faces_app.command("index")
def index_cmd(
    folder: Path = typer.Argument(..., help="Image folder; sub-folder names are identity names (DIR/NAME/x.jpg)."),
    db: Path = typer.Option(..., "--db", help="Face collection directory (created if missing)."),
    names_csv: Optional[Path] = typer.Option(None, "--names", help="CSV of path,name rows (overrides folders)."),
    folder_names: bool = typer.Option(True, "--folder-names/--no-folder-names"),
    template: str = typer.Option("mean", "--template", help="Identity template: mean or set (max-similarity)."),
    upsample: int = typer.Option(1, "--upsample", help="HOG detector upsampling (new collections only)."),
    fallback: str = typer.Option("none", "--fallback", help=FALLBACK_HELP + " New collections only."),
    mirror: bool = typer.Option(False, "--mirror/--no-mirror", help="Average with the mirrored chip (2x cost)."),
    normalize: bool = typer.Option(False, "--normalize/--no-normalize", help=NORMALIZE_HELP + " New collections only."),
    jitters: int = typer.Option(0, "--jitters", help=JITTERS_HELP + " New collections only."),
    landmarks: int = typer.Option(5, "--landmarks", help=LANDMARKS_HELP + " New collections only."),
    workers: int = typer.Option(1, "--workers", "-w", help="Extraction processes."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per commit."),
    json_out: bool = typer.Option(False, "--json"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Add every face of every image under FOLDER (incremental, resumable)."""
    from .faces.collection import MANIFEST, FaceCollection, names_from_csv

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    names = names_from_csv(names_csv) if names_csv else None
    if (db / MANIFEST).exists():
        coll = FaceCollection.open(db, writable=True)
    else:
        coll = FaceCollection.create(db, _pipeline(upsample, fallback, mirror, select="largest", normalize=normalize,
                                                    jitters=jitters, landmarks=landmarks), template=template)
    with coll:
        report = coll.add(folder, names=names, folder_names=folder_names and names is None, workers=workers,
                          batch_size=batch_size, progress=progress and not json_out and sys.stderr.isatty())
        facts = coll.info()
    if json_out:
        _print_json({**report.to_dict(), "collection": facts})
        return
    _console().print(f"[bold]{db}[/]: {report.added} images embedded ({report.faces} faces), "
                     f"{report.unchanged} unchanged, {len(report.no_face)} without a face, "
                     f"{len(report.failed)} failed in {report.seconds:.1f}s; "
                     f"{facts['faces']} faces, {facts['identities']} identities")
    for path, reason in (report.failed + report.no_face)[:20]:
        _console().print(f"[yellow]{path}[/]: {reason}")


@faces_app.command("verify")
def verify_cmd(
    image_a: Path = typer.Argument(...), image_b: Path = typer.Argument(...),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                               help="Distance cut (default 0.6, 0.42 with --normalize, or --db's)."),
    db: Optional[Path] = typer.Option(None, "--db", help="Use this face collection's settings and threshold."),
    upsample: int = typer.Option(1, "--upsample"),
    fallback: str = typer.Option("none", "--fallback", help=FALLBACK_HELP),
    mirror: bool = typer.Option(True, "--mirror/--no-mirror"),
    normalize: bool = typer.Option(False, "--normalize/--no-normalize", help=NORMALIZE_HELP),
    jitters: int = typer.Option(0, "--jitters", help=JITTERS_HELP),
    landmarks: int = typer.Option(5, "--landmarks", help=LANDMARKS_HELP),
    score_norm: bool = typer.Option(True, "--score-norm/--no-score-norm",
                                    help="With --db holding a cohort (`faces calibrate --score-norm`): decide on "
                                         "the cohort-normalised score (--threshold is then a score cut) instead "
                                         "of the distance."),
    json_out: bool = typer.Option(False, "--json", help='Print {"distance", "threshold", "same"} (+ "score", '
                                  '"score_norm" when a cohort is used).'),
) -> None:
    """Are the (centre-most) faces of two photos the same person?"""
    from .faces import verify

    normalizer = None
    if db is not None:
        from .faces.collection import FaceCollection

        with FaceCollection.open(db) as coll:
            pipe, default = coll.pipeline, coll.threshold
            normalizer = coll.score_normalizer() if score_norm else None
    else:
        pipe = _pipeline(upsample, fallback, mirror, normalize=normalize, jitters=jitters, landmarks=landmarks)
        default = pipe.default_threshold
    a, b = _one_face(pipe, image_a), _one_face(pipe, image_b)
    if normalizer is not None:
        norm, score_threshold = normalizer
        result = norm.verify(a.descriptor, b.descriptor, score_threshold if threshold is None else threshold)
        result["score_norm"] = norm.settings()
    else:
        result = verify(a.descriptor, b.descriptor, threshold=default if threshold is None else threshold)
    if json_out:
        _print_json(result)
        return
    verdict = "[green]same person[/]" if result["same"] else "[red]different people[/]"
    if "score" in result:
        _console().print(f"{verdict}: normalised score {result['score']:.4f} (threshold {result['threshold']:.4f}; "
                         f"distance {result['distance']:.4f})")
    else:
        _console().print(f"{verdict}: distance {result['distance']:.4f} (threshold {result['threshold']:.4f})")


@faces_app.command("identify")
def identify_cmd(
    db: Path = typer.Argument(..., help="Face collection."),
    image: Path = typer.Argument(..., help="Photo with one or more faces."),
    k: int = typer.Option(5, "-k", help="Identities listed per face."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Default: the collection's."),
    template: Optional[str] = typer.Option(None, "--template", help="mean or set; default: the collection's."),
    json_out: bool = typer.Option(False, "--json"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a page with each face crop."),
) -> None:
    """Who is in IMAGE? Per face: the nearest identities, or "unknown" beyond the threshold."""
    from .faces.collection import FaceCollection

    if not image.exists():
        raise InputError(f"{image}: no such file")
    with FaceCollection.open(db) as coll:
        if not coll.identities():
            raise InputError(f"{db}: no named identities (index a folder of DIR/NAME/*.jpg or pass --names)")
        used = coll.threshold if threshold is None else threshold
        faces = coll.identify(image, k=k, threshold=used, template=template)
    rows = [{key: value for key, value in f.items() if key != "face"} for f in faces]
    if html_out:
        blocks = []
        for f in rows:
            distance = "" if f["distance"] is None else f"distance {f['distance']:.3f}<br>"
            caption = f"<b>{html.escape(f['name'])}</b><br>{distance}box {f['box']}"
            ranked = "".join(f"<li>{html.escape(c['name'])} <span class='dist'>{c['distance']:.3f}</span></li>"
                             for c in f["candidates"])
            blocks.append(_figure(face_crop_uri(image, f["box"]), caption, "good" if f["name"] != "unknown" else "bad")
                          + f"<ol>{ranked}</ol>")
        _write_html(html_out, f"faces in {image.name} (threshold {used:.3f})",
                    blocks or ["<p>no face found</p>"])
    if json_out:
        _print_json({"image": str(image), "threshold": used, "faces": rows})
        return
    if not rows:
        _console().print(f"{image}: no face found")
    for i, f in enumerate(rows, 1):
        others = ", ".join(f"{c['name']} {c['distance']:.3f}" for c in f["candidates"])
        _console().print(f"face {i} at {f['box']}: [bold]{f['name']}[/]  ({others})")


@faces_app.command("cluster")
def cluster_cmd(
    folder: Path = typer.Argument(..., help="Folder of photos of unknown people."),
    method: str = typer.Option("chinese-whispers", "--method", help="chinese-whispers or agglomerative."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="Edge/cut distance (default 0.5 / 0.6)."),
    upsample: int = typer.Option(1, "--upsample"),
    mirror: bool = typer.Option(True, "--mirror/--no-mirror"),
    json_out: bool = typer.Option(False, "--json"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a page with the face crops per cluster."),
) -> None:
    """Group every face found under FOLDER by person."""
    from .faces import agglomerative, chinese_whispers
    from .images import iter_image_files

    methods = {"chinese-whispers": (chinese_whispers, 0.5), "agglomerative": (agglomerative, 0.6)}
    if method not in methods:
        raise InputError(f"unknown --method {method!r}; valid: {', '.join(methods)}")
    files = iter_image_files(folder)
    if not files:
        raise InputError(f"{folder}: no image files found")
    pipe = _pipeline(upsample, "none", mirror)
    faces, no_face = [], []
    for path, found in zip(files, pipe.faces_many(files)):
        if isinstance(found, Exception) or not found:
            no_face.append({"path": str(path), "reason": str(found) if isinstance(found, Exception) else "no face"})
            continue
        faces += [(str(path), f) for f in found]
    fn, default = methods[method]
    cut = default if threshold is None else threshold
    labels = fn(np.stack([f.descriptor for _, f in faces]), threshold=cut) if faces else np.zeros(0, int)
    clusters = [{"cluster": int(c), "faces": [{"path": p, "box": list(f.box)}
                                              for (p, f), lab in zip(faces, labels) if lab == c]}
                for c in sorted(set(labels.tolist()))]
    report = {"method": method, "threshold": cut, "images": len(files), "faces": len(faces),
              "clusters": clusters, "no_face": no_face}
    if html_out:
        blocks = ["".join(_figure(face_crop_uri(m["path"], m["box"]), f"cluster {c['cluster']}<br>"
                                  f"{html.escape(Path(m['path']).name)}") for m in c["faces"]) for c in clusters]
        _write_html(html_out, f"{len(clusters)} clusters of {len(faces)} faces ({method}, {cut})", blocks)
    if json_out:
        _print_json(report)
        return
    for c in clusters:
        _console().print(f"cluster {c['cluster']} ({len(c['faces'])}): "
                         + ", ".join(Path(m["path"]).name for m in c["faces"]))
    for m in no_face:
        _console().print(f"[yellow]{m['path']}[/]: {m['reason']}")


@faces_app.command("calibrate")
def calibrate_cmd(
    db: Path = typer.Argument(..., help="Face collection whose threshold is set."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="LFW-format pairs file (default: LFW View 1 "
                                         "pairsDevTrain.txt in ../shared/data/lfw)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root of the pairs (default: beside it)."),
    far: Optional[float] = typer.Option(1e-3, "--far", help="Target false-accept rate; 0 or less: best accuracy."),
    score_norm: bool = typer.Option(False, "--score-norm/--no-score-norm",
                                    help="Also store a cohort for score normalisation (AS-norm) and its score "
                                         "threshold, calibrated on the same pairs; `faces verify --db` uses it."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="LFW-format pairs file whose images form the "
                                          "cohort (default: LFW View 1 pairsDevTest.txt); its people that are "
                                          "in --pairs are left out."),
    cohort_images: Optional[Path] = typer.Option(None, "--cohort-images",
                                                 help="Image root of --cohort (default: beside it)."),
    top_k: int = typer.Option(200, "--top-k", help="Score normalisation: each face's top-k cohort scores "
                              "(0: the whole cohort, plain S-norm)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Choose the collection's distance threshold on labelled pairs (with its own pipeline).

    With --score-norm, also a cohort of other people's faces and a threshold on the
    cohort-normalised score (adaptive symmetric normalisation, cosine scores: the
    setting chosen on LFW View 1; lookalike.faces.score_norm)."""
    from .faces import calibrate_threshold, face_distance, pair_descriptors, read_lfw_pairs
    from .faces.collection import FaceCollection

    if pairs is None:
        pairs = default_lfw() / "pairsDevTrain.txt"
        if not pairs.exists():
            raise InputError(f"no --pairs given and the default LFW View 1 pairs are not at {pairs}; "
                             "pass --pairs FILE (LFW format: 'name i j' / 'name1 i name2 j')")
    if not pairs.exists():
        raise InputError(f"{pairs}: no such pairs file")
    labelled = read_lfw_pairs(pairs, images)
    missing = [str(p) for pair in labelled for p in (pair.path_a, pair.path_b) if not p.exists()]
    if missing:
        raise InputError(f"{pairs}: {len(missing)} images not found, e.g. {missing[0]} (use --images DIR)")
    cohort_pairs = None
    if score_norm:
        cohort = cohort or default_lfw() / "pairsDevTest.txt"
        if not cohort.exists():
            raise InputError(f"{cohort}: no such cohort pairs file (pass --cohort FILE)")
        if top_k < 0 or top_k == 1:
            raise InputError(f"--top-k must be 0 (whole cohort) or at least 2, not {top_k}")
        cohort_pairs = read_lfw_pairs(cohort, cohort_images)
    with FaceCollection.open(db, writable=True) as coll:
        a, b, is_same = pair_descriptors(coll.pipeline, labelled)
        distances = face_distance(a, b)
        ok = np.isfinite(distances)
        target = far if far is not None and far > 0 else None
        result = calibrate_threshold(distances[ok], is_same[ok], target_far=target)
        result.update({"pairs_file": str(pairs), "target_far": target, "n_missing_face": int((~ok).sum())})
        coll.set_threshold(result["threshold"], f"calibrated on {pairs.name}"
                           + (f" at FAR {target:g}" if target else " for best accuracy"), result)
        if cohort_pairs is not None:
            result["score_norm"] = _calibrate_score_norm(coll, labelled, a[ok], b[ok], is_same[ok], cohort_pairs,
                                                         cohort, top_k, target)
    if json_out:
        _print_json(result)
        return
    if "score_norm" in result:
        sn = result["score_norm"]
        _console().print(f"{db}: score-norm cohort of {sn['cohort_size']} faces, score threshold "
                         f"{sn['threshold']:.4f} (FAR {sn['far']:.4f}, TAR {sn['tar']:.4f}, "
                         f"accuracy {sn['accuracy']:.4f})")
    _console().print(f"{db}: threshold {result['threshold']:.4f} (FAR {result['far']:.4f}, TAR {result['tar']:.4f}, "
                     f"accuracy {result['accuracy']:.4f} on {result['n_pairs']} pairs; "
                     f"{result['n_missing_face']} pairs without a face left out)")


def _calibrate_score_norm(coll, labelled, a, b, is_same, cohort_pairs, cohort_file: Path, top_k: int,
                          target_far) -> dict:
    """Embed the cohort (people of the calibration pairs left out), score the calibration
    pairs (descriptors ``a``, ``b`` with a face on both sides) normalised, choose the score
    threshold, store cohort + settings in ``coll``."""
    from .faces import calibrate_threshold
    from .faces.score_norm import ScoreNormalizer

    calib_people = {p.path_a.parent.name for p in labelled} | {p.path_b.parent.name for p in labelled}
    paths = sorted({q for p in cohort_pairs for q in (p.path_a, p.path_b)})
    paths = [q for q in paths if q.parent.name not in calib_people]
    missing = [str(q) for q in paths if not q.exists()]
    if missing:
        raise InputError(f"{cohort_file}: {len(missing)} cohort images not found, e.g. {missing[0]} "
                         "(use --cohort-images DIR)")
    vectors, _ = coll.pipeline.descriptors(paths)
    cohort = vectors[np.isfinite(vectors).all(axis=1)]
    if len(cohort) < 2:
        raise InputError(f"{cohort_file}: fewer than 2 cohort faces found")
    norm = ScoreNormalizer(cohort, top_k=top_k or None)
    cal = calibrate_threshold(-norm.score(a, b), is_same, target_far=target_far)  # larger score = more alike
    out = {"threshold": -cal["threshold"], "accuracy": cal["accuracy"], "far": cal["far"], "tar": cal["tar"],
           "n_pairs": cal["n_pairs"], "cohort_file": str(cohort_file), "cohort_size": int(len(cohort)),
           "cohort_people_left_out": len({q.parent.name for p in cohort_pairs for q in (p.path_a, p.path_b)}
                                         & calib_people)}
    coll.set_score_norm(norm, out["threshold"], {"source": f"cohort from {cohort_file.name}, threshold calibrated "
                                                           "on the pairs", "calibration": out})
    return {**out, **norm.settings()}


@faces_app.command("info")
def info_cmd(db: Path = typer.Argument(..., help="Face collection."),
             json_out: bool = typer.Option(False, "--json")) -> None:
    """Images, faces, identities (with photo counts), threshold and pipeline of a face collection."""
    from .faces.collection import FaceCollection

    with FaceCollection.open(db) as coll:
        facts = {**coll.info(), "identity_photos": coll.identities()}
    if json_out:
        _print_json(facts)
        return
    _console().print(f"[bold]{db}[/]: {facts['images']} images ({facts['images_without_face']} without a face, "
                     f"{facts['images_failed']} failed), {facts['faces']} faces, {facts['identities']} identities; "
                     f"threshold {facts['threshold']:.4f} ({facts['threshold_source']}); template {facts['template']}")
    sn = facts["score_norm"]
    if sn:
        _console().print(f"score normalisation: {sn['method']}-norm, top {sn['top_k'] or 'all'}, {sn['score']} scores, "
                         f"cohort of {sn['cohort_size']} faces; score threshold {sn['threshold']:.4f} "
                         "(`faces verify --db` uses it)")


def register(app: typer.Typer) -> None:
    """Attach ``faces`` to the main ``lookalike`` app."""
    app.add_typer(faces_app, name="faces")
