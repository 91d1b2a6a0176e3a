"""Face collections: faces of many images, people (identities) and a calibrated threshold.

A face collection is one directory::

    manifest.json   format version, pipeline settings, threshold (+ how it was chosen),
                    template mode
    faces.sqlite    images (path, size, mtime, status), identities (name), faces (image,
                    box, score, landmarks, identity, 128-d descriptor blob)
    faces.index     FAISS flat L2 index over every face descriptor (ids = face ids)
    cohort.npy      optional: descriptors of other people for cohort score normalisation
                    (``faces calibrate --score-norm``; settings and threshold in the manifest's
                    ``score_norm``), used by ``faces verify --db``
    .lock           held by a writer

SQLite is the truth; the FAISS file is derived from it and rebuilt whenever its
generation stamp differs from the database's (so a run killed mid-way loses nothing that
was committed and never leaves a stale index in use).

Distances are Euclidean between raw dlib descriptors (smaller = more alike), the scale of
:func:`~lookalike.faces.verify.verify` and of the threshold (0.6 uncalibrated).
Identity templates:

* ``"mean"``: the mean of the identity's unit-normalised descriptors, rescaled to the mean
  norm of its descriptors (a direction robust to one odd photo, on the raw scale);
* ``"set"``: every photo kept; an identity's distance is its nearest photo's
  (max-similarity).
"""
from __future__ import annotations

import csv
import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import CollectionError, ImageLoadError, InputError
from ..images import iter_image_files
from .embed import DESCRIPTOR_DIM
from .pipeline import FacePipeline, select_face

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "faces.sqlite"
INDEX_FILE = "faces.index"
COHORT_FILE = "cohort.npy"
TEMPLATE_MODES = ("mean", "set")

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER, mtime REAL,
    status TEXT NOT NULL, reason TEXT, n_faces INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS identities (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    box TEXT NOT NULL, score REAL, landmarks TEXT NOT NULL, origin TEXT NOT NULL,
    identity_id INTEGER REFERENCES identities(id), descriptor BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id);
CREATE INDEX IF NOT EXISTS faces_image ON faces(image_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass
class FaceIndexReport:
    """What one :meth:`FaceCollection.add` did.

    Attributes:
        added: images embedded this time (new or changed).
        unchanged: images skipped (same size and mtime).
        renamed: unchanged images whose identity name changed (no re-embedding).
        faces: faces stored this time.
        no_face: ``[(path, reason)]`` images where no face was found.
        failed: ``[(path, reason)]`` images that could not be read.
        seconds: wall time.
    """

    added: int = 0
    unchanged: int = 0
    renamed: int = 0
    faces: int = 0
    no_face: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"added": self.added, "unchanged": self.unchanged, "renamed": self.renamed, "faces": self.faces,
                "no_face": [{"path": p, "reason": r} for p, r in self.no_face],
                "failed": [{"path": p, "reason": r} for p, r in self.failed], "seconds": round(self.seconds, 3)}


def names_from_folders(root: Union[str, os.PathLike], files: Sequence[Path]) -> dict[str, str]:
    """``root/NAME/.../x.jpg`` -> NAME for every file inside a sub-folder of ``root``."""
    root = Path(root).resolve()
    names = {}
    for f in files:
        rel = Path(f).resolve().relative_to(root)
        if len(rel.parts) > 1:
            names[str(Path(f).resolve())] = rel.parts[0]
    return names


def names_from_csv(csv_path: Union[str, os.PathLike]) -> dict[str, str]:
    """Read ``path,name`` rows (a header row ``path,name`` is optional); relative paths are
    relative to the CSV's folder. Returns ``{resolved path: name}``."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: names CSV not found")
    names = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for line_no, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise InputError(f"{csv_path}: line {line_no}: expected 'path,name', got {row!r}")
            path, name = row[0].strip(), row[1].strip()
            if line_no == 1 and (path.lower(), name.lower()) == ("path", "name"):
                continue
            p = Path(path)
            names[str((p if p.is_absolute() else csv_path.parent / p).resolve())] = name
    return names


# -- extraction (runs in worker processes too) -------------------------------------------

_WORKER: dict = {}


def _init_worker(settings: dict) -> None:
    _WORKER["pipe"] = FacePipeline(**settings)


def _extract(job: tuple[str, int, float, bool]):
    """(path, size, mtime, labelled) -> (path, size, mtime, faces or error string, selected index)."""
    path, size, mtime, labelled = job
    pipe = _WORKER["pipe"]
    try:
        pixels = pipe.load(path)
    except ImageLoadError as exc:
        return path, size, mtime, f"error:{exc.reason}", -1
    faces = pipe.describe(pixels, pipe.locate(pixels))
    if not faces:
        return path, size, mtime, f"noface:{pipe._no_face_reason()}", -1
    chosen = -1
    if labelled:  # only one face of a labelled photo is that person
        h, w = pixels.shape[:2]
        chosen = faces.index(select_face(faces, (w, h), pipe.select))
    rows = [(f.box, f.score, f.landmarks.tolist(), f.origin, f.descriptor) for f in faces]
    return path, size, mtime, rows, chosen


class FaceCollection:
    """An on-disk face gallery: add images, name people, identify faces.

    Open with :meth:`create` or :meth:`open`; use as a context manager (closes SQLite
    and releases the writer lock).
    """

    def __init__(self, path: Path, manifest: dict, writable: bool):
        self.path = Path(path)
        self.manifest = manifest
        self._lock_fh = None
        if writable:
            self._lock_fh = open(self.path / ".lock", "a")
            try:
                fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_fh.close()
                raise CollectionError(f"{self.path}: another process is writing this face collection") from None
        self.db = sqlite3.connect(self.path / DATABASE, timeout=30)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(SCHEMA)
        self._pipeline: Optional[FacePipeline] = None
        self._index = None
        self._templates = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def create(cls, path: Union[str, os.PathLike], pipeline: Optional[FacePipeline] = None,
               template: str = "mean", exist_ok: bool = False) -> "FaceCollection":
        """Create a face collection directory (or open it when ``exist_ok``).

        Args:
            path: the directory.
            pipeline: face settings stored in the manifest (default ``FacePipeline()``:
                HOG upsample 1, no fallback, largest-of-centre selection for labelled photos).
            template: ``"mean"`` or ``"set"`` (see the module docstring).
        """
        path = Path(path)
        if (path / MANIFEST).exists():
            if not exist_ok:
                raise CollectionError(f"{path}: a face collection already exists there")
            return cls.open(path, writable=True)
        if template not in TEMPLATE_MODES:
            raise InputError(f"unknown template mode {template!r}; valid: {', '.join(TEMPLATE_MODES)}")
        if path.exists() and any(path.iterdir()):
            raise CollectionError(f"{path}: directory exists and is not a face collection")
        path.mkdir(parents=True, exist_ok=True)
        pipeline = pipeline or FacePipeline()
        unit = pipeline.embedder.normalize
        manifest = {"format_version": FORMAT_VERSION, "kind": "faces",
                    "pipeline": pipeline.settings(), "descriptor_dim": DESCRIPTOR_DIM,
                    "distance": f"euclidean between {'unit-length' if unit else 'raw'} dlib descriptors "
                                "(smaller = more alike)",
                    "template": template, "threshold": pipeline.default_threshold,
                    "threshold_source": "default for these descriptors (uncalibrated)" if unit
                    else "dlib default (uncalibrated)", "created": time.time()}
        _write_json(path / MANIFEST, manifest)
        return cls(path, manifest, writable=True)

    @classmethod
    def open(cls, path: Union[str, os.PathLike], writable: bool = False) -> "FaceCollection":
        """Open an existing face collection (``writable`` takes the writer lock)."""
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise CollectionError(f"{path}: not a face collection (no {MANIFEST}; create one with "
                                  "`lookalike faces index DIR --db {path}`)")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except ValueError:
            raise CollectionError(f"{path / MANIFEST}: corrupt manifest") from None
        if manifest.get("kind") != "faces" or manifest.get("format_version") != FORMAT_VERSION:
            raise CollectionError(f"{path}: not a face collection of format {FORMAT_VERSION}")
        return cls(path, manifest, writable=writable)

    def close(self) -> None:
        self.db.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- facts -----------------------------------------------------------------------

    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            self._pipeline = FacePipeline(**self.manifest["pipeline"])
        return self._pipeline

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def template(self) -> str:
        return self.manifest["template"]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]

    def identities(self) -> dict[str, int]:
        """``{name: number of photos}``."""
        rows = self.db.execute("SELECT i.name, COUNT(f.id) FROM identities i LEFT JOIN faces f "
                               "ON f.identity_id = i.id GROUP BY i.id ORDER BY i.name")
        return {name: n for name, n in rows}

    def info(self) -> dict:
        q = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"path": str(self.path), "images": q("SELECT COUNT(*) FROM images"),
                "images_without_face": q("SELECT COUNT(*) FROM images WHERE status='noface'"),
                "images_failed": q("SELECT COUNT(*) FROM images WHERE status='error'"),
                "faces": len(self), "identities": q("SELECT COUNT(*) FROM identities"),
                "threshold": self.threshold, "threshold_source": self.manifest["threshold_source"],
                "template": self.template, "pipeline": self.manifest["pipeline"],
                "score_norm": ({k: v for k, v in self.manifest["score_norm"].items() if k != "calibration"}
                               if self.manifest.get("score_norm") else None)}

    def set_threshold(self, threshold: float, source: str, details: Optional[dict] = None) -> None:
        """Store a calibrated threshold in the manifest (atomic rewrite)."""
        self.manifest["threshold"] = float(threshold)
        self.manifest["threshold_source"] = source
        self.manifest["calibration"] = details or {}
        _write_json(self.path / MANIFEST, self.manifest)

    def set_score_norm(self, norm, threshold: float, details: Optional[dict] = None) -> None:
        """Store a score normaliser's cohort (``cohort.npy``) and its settings and score
        threshold (manifest ``score_norm``); see :mod:`lookalike.faces.score_norm`.

        Args:
            norm: a :class:`~lookalike.faces.score_norm.ScoreNormalizer` whose cohort holds
                descriptors of people not among those to be verified, made with this
                collection's pipeline.
            threshold: normalised-score cut (``same = score >= threshold``).
        """
        from ..atomic import atomic_writer

        with atomic_writer(self.path / COHORT_FILE) as fh:
            np.save(fh, norm.cohort.astype(np.float32))
        self.manifest["score_norm"] = {**norm.settings(), "threshold": float(threshold), **(details or {})}
        _write_json(self.path / MANIFEST, self.manifest)

    def score_normalizer(self):
        """``(ScoreNormalizer, score threshold)`` when the collection holds a cohort, else ``None``."""
        info = self.manifest.get("score_norm")
        if not info or not (self.path / COHORT_FILE).exists():
            return None
        from .score_norm import ScoreNormalizer

        norm = ScoreNormalizer(np.load(self.path / COHORT_FILE), method=info["method"], top_k=info["top_k"],
                               score_kind=info["score"])
        return norm, float(info["threshold"])

    # -- adding ----------------------------------------------------------------------

    def add(self, folder: Union[str, os.PathLike], names: Optional[dict[str, str]] = None,
            folder_names: bool = True, workers: int = 1, batch_size: int = 32,
            progress: bool = False) -> FaceIndexReport:
        """Embed every face of every image under ``folder`` (incremental, resumable).

        Images whose size and mtime are unchanged are skipped; each batch is committed,
        so an interrupted run keeps what it finished. A changed image's faces are
        replaced. Identity names come from ``names`` (``{path: name}``, e.g.
        :func:`names_from_csv`) or else, with ``folder_names``, from the first sub-folder
        (``folder/NAME/x.jpg``). In a named photo only the selected face (pipeline's
        ``select`` policy) gets the name; its other faces are stored unnamed.

        Args:
            workers: extraction processes (1 = in this process).
            batch_size: images per commit.
            progress: show a rich progress bar on stderr.
        """
        t0 = time.perf_counter()
        files = iter_image_files(folder)
        label_of = dict(names_from_folders(folder, files) if folder_names else {})
        if names:
            label_of.update(names)
        report = FaceIndexReport()
        known = {p: (s, m) for p, s, m in self.db.execute("SELECT path, size, mtime FROM images")}
        jobs = []
        for f in files:
            path = str(Path(f).resolve())
            st = os.stat(path)
            if known.get(path) == (st.st_size, st.st_mtime):
                report.unchanged += 1
                report.renamed += self._rename_if_needed(path, label_of.get(path))
                continue
            jobs.append((path, st.st_size, st.st_mtime, path in label_of))
        self.db.commit()
        results = self._run(jobs, workers, progress)
        batch = []
        for result in results:
            batch.append(result)
            if len(batch) >= batch_size:
                self._store(batch, label_of, report)
                batch = []
        if batch:
            self._store(batch, label_of, report)
        self.rebuild_index()
        report.seconds = time.perf_counter() - t0
        return report

    def _run(self, jobs, workers: int, progress: bool) -> Iterable:
        settings = self.manifest["pipeline"]
        bar = None
        if progress:
            from rich.progress import Progress

            bar = Progress(transient=False)
            bar.start()
            task = bar.add_task("faces", total=len(jobs))
        pool = None
        try:
            if workers <= 1 or len(jobs) < 2:
                _init_worker(settings)
                iterator = map(_extract, jobs)
            else:
                import multiprocessing as mp

                pool = mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(settings,))
                iterator = pool.imap(_extract, jobs, chunksize=2)
            for result in iterator:
                if bar is not None:
                    bar.advance(task)
                yield result
            if pool is not None:
                pool.close()
                pool.join()
                pool = None
        finally:
            if pool is not None:  # interrupted: what was stored is committed; stop the workers
                pool.terminate()
            if bar is not None:
                bar.stop()

    def _identity_id(self, name: Optional[str]) -> Optional[int]:
        if not name:
            return None
        self.db.execute("INSERT OR IGNORE INTO identities(name) VALUES (?)", (name,))
        return self.db.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()[0]

    def _rename_if_needed(self, path: str, name: Optional[str]) -> int:
        row = self.db.execute(
            "SELECT f.id, i.name FROM faces f JOIN images im ON im.id = f.image_id LEFT JOIN identities i "
            "ON i.id = f.identity_id WHERE im.path = ? AND f.identity_id IS NOT NULL", (path,)).fetchone()
        if name is None or (row is not None and row[1] == name) or row is None:
            return 0  # unlabelled-to-labelled needs the selection: re-add after touching the file
        self.db.execute("UPDATE faces SET identity_id=? WHERE id=?", (self._identity_id(name), row[0]))
        self._bump_generation()
        return 1

    def _store(self, batch, label_of, report: FaceIndexReport) -> None:
        with self.db:  # one transaction per batch: all of it or none of it
            for path, size, mtime, rows, chosen in batch:
                self.db.execute("DELETE FROM images WHERE path=?", (path,))  # cascades to faces
                if isinstance(rows, str):
                    status, reason = rows.split(":", 1)
                    (report.failed if status == "error" else report.no_face).append((path, reason))
                    self.db.execute("INSERT INTO images(path, size, mtime, status, reason) VALUES (?,?,?,?,?)",
                                    (path, size, mtime, status, reason))
                    report.added += status != "error"
                    continue
                cur = self.db.execute("INSERT INTO images(path, size, mtime, status, n_faces) VALUES (?,?,?,?,?)",
                                      (path, size, mtime, "ok", len(rows)))
                image_id = cur.lastrowid
                identity = self._identity_id(label_of.get(path))
                for i, (box, score, landmarks, origin, descriptor) in enumerate(rows):
                    self.db.execute(
                        "INSERT INTO faces(image_id, box, score, landmarks, origin, identity_id, descriptor) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (image_id, json.dumps(list(box)), None if np.isnan(score) else float(score),
                         json.dumps(landmarks), origin, identity if i == chosen else None,
                         np.asarray(descriptor, dtype="<f4").tobytes()))
                report.added += 1
                report.faces += len(rows)
            self._bump_generation()

    def _bump_generation(self) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT(key) "
                        "DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def _generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    # -- vectors, index, templates ------------------------------------------------------

    def descriptors(self, named_only: bool = False) -> tuple[np.ndarray, np.ndarray, list]:
        """``(face ids int64 (n,), descriptors float32 (n, 128), identity names or None)``."""
        sql = ("SELECT f.id, f.descriptor, i.name FROM faces f LEFT JOIN identities i ON i.id = f.identity_id"
               + (" WHERE f.identity_id IS NOT NULL" if named_only else "") + " ORDER BY f.id")
        rows = self.db.execute(sql).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        x = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), DESCRIPTOR_DIM)
        return ids, x.astype(np.float32), [r[2] for r in rows]

    def rebuild_index(self):
        """Rebuild ``faces.index`` from SQLite (flat L2, exact) and save it atomically."""
        from ..index import make_index

        ids, x, _ = self.descriptors()
        index = make_index("flat", DESCRIPTOR_DIM, "l2")
        if len(ids):
            index.add(x, ids)
        if self._lock_fh is not None:
            index.save(self.path / INDEX_FILE, extra={"generation": self._generation()})
        self._index, self._templates = index, None
        return index

    def index(self):
        """The FAISS index over every face, rebuilt first if SQLite moved on since it was saved."""
        if self._index is None:
            from ..index import FaissIndex

            path = self.path / INDEX_FILE
            if path.exists():
                index, extra = FaissIndex.load_with_extra(path)
                if extra.get("generation") == self._generation():
                    self._index = index
            if self._index is None:
                self.rebuild_index()
        return self._index

    def templates(self) -> tuple[list[str], np.ndarray]:
        """Identity names and ``float32 (n_identities, 128)`` mean templates (see module doc)."""
        if self._templates is None:
            _, x, names = self.descriptors(named_only=True)
            order = sorted(set(names))
            rows = []
            for name in order:
                v = x[[n == name for n in names]].astype(np.float64)
                norms = np.linalg.norm(v, axis=1, keepdims=True)
                direction = (v / norms).mean(axis=0)
                rows.append(direction / np.linalg.norm(direction) * norms.mean())
            self._templates = (order, np.array(rows, dtype=np.float32).reshape(len(order), DESCRIPTOR_DIM))
        return self._templates

    # -- identification ----------------------------------------------------------------

    def rank_identities(self, descriptors: np.ndarray, k: int = 5,
                        template: Optional[str] = None) -> list[list[tuple[str, float]]]:
        """Top-``k`` identities per query descriptor.

        Args:
            descriptors: ``(n, 128)`` query descriptors.
            template: ``"mean"`` or ``"set"``; default: the collection's.

        Returns:
            Per query ``[(name, distance)]`` ascending (smaller = closer).
        """
        q = np.asarray(descriptors, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM)
        mode = template or self.template
        if mode not in TEMPLATE_MODES:
            raise InputError(f"unknown template mode {mode!r}; valid: {', '.join(TEMPLATE_MODES)}")
        if mode == "mean":
            names, t = self.templates()
            if not names:
                return [[] for _ in q]
            d = np.linalg.norm(q[:, None, :].astype(np.float64) - t[None, :, :], axis=2)
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            return [[(names[j], float(d[i, j])) for j in row] for i, row in enumerate(order)]
        ids, _, names = self.descriptors(named_only=True)
        if not len(ids):
            return [[] for _ in q]
        name_of = dict(zip(ids.tolist(), names))
        # Over-fetch faces so that k distinct identities survive the grouping.
        result = self.index().search(q, k=min(self.index().ntotal, max(64, 32 * k)), allowed_ids=ids)
        out = []
        for row_ids, row_d in zip(result.ids, result.distances):
            best: dict[str, float] = {}
            for fid, dist in zip(row_ids.tolist(), row_d.tolist()):
                if fid >= 0 and fid in name_of and name_of[fid] not in best:
                    best[name_of[fid]] = float(dist)
            out.append(sorted(best.items(), key=lambda kv: kv[1])[:k])
        return out

    def identify(self, image, k: int = 5, threshold: Optional[float] = None,
                 template: Optional[str] = None) -> list[dict]:
        """Every face of ``image``: its box and top identities, or ``"unknown"``.

        Returns:
            Per face (in descending detector score) ``{"box", "score", "name",
            "distance", "candidates": [{"name", "distance"}]}``; ``name`` is the nearest
            identity when its distance <= ``threshold`` (default: the collection's),
            else ``"unknown"``. Empty when the image holds no face.
        """
        threshold = self.threshold if threshold is None else float(threshold)
        faces = self.pipeline.faces(image)
        ranked = self.rank_identities(np.stack([f.descriptor for f in faces]), k, template) if faces else []
        out = []
        for face, candidates in zip(faces, ranked):
            top = candidates[0] if candidates else (None, float("inf"))
            out.append({"box": list(face.box), "score": None if np.isnan(face.score) else face.score,
                        "name": top[0] if top[1] <= threshold else "unknown",
                        "distance": top[1] if candidates else None,
                        "candidates": [{"name": n, "distance": d} for n, d in candidates], "face": face})
        return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
