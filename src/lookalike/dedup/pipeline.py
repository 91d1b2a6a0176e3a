"""The duplicate search end to end: files -> one cheap scan -> candidates -> verification -> groups.

:func:`find_duplicates_in_folder` is the folder mode (``lookalike dedup DIR``): one
reduced-size decode per file (:mod:`.scan`, cached in ``DIR/.lookalike`` or ``--db`` by
path, size and mtime, so re-runs only scan new or changed files), a Hamming range search
over the variant hashes, the thumbnail check of each candidate pair, complete-linkage
groups. No CNN runs by default: measured on ``bench/dedup.py`` it separated candidate
pairs worse than the thumbnails' edge correlation at ~40x the cost. ``cnn_k > 0``
turns on CNN nearest neighbours as a second candidate source (heavy crops and large
rotations, which move every hash too far); that needs a CNN vector of *every* image,
i.e. the full CNN cost the default path avoids.

:func:`find_duplicates` does the same for a collection (its scan features are cached in
:class:`~lookalike.dedup.candidates.ScanStore`; its stored CNN vectors serve ``cnn_k``);
:func:`check_new` checks new files against a collection without re-reading the stored
images.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import InputError
from .candidates import ScanStore, exact_duplicate_pairs, hash_candidate_pairs, ordered, range_search
from .groups import Group, build_groups, linked_groups
from .verify import GeometricVerifier, Thresholds, cnn_neighbour_candidates, pair_similarities, thumbnail_features

#: Default descriptors of a collection made for dedup (``lookalike add``; the folder
#: mode needs no collection).
FOLDER_DESCRIPTORS = ("phash:bits=64", "cnn")
CACHE_DIR = ".lookalike"
FOLDER_SCAN_FILE = "folder_scan.npz"
#: Hash distance recorded for pairs that were not hash candidates.
FAR = 1 << 10


@dataclass
class Pair:
    """A scored candidate pair (ids; negative ids are new files not in the collection).

    ``similarity``: edge correlation of the aligned thumbnails (1.0 = same edges;
    larger = more similar); ``score``: the decision score (``>= 0`` accepts);
    ``cnn``: CNN cosine when the CNN took part.
    """

    a: int
    b: int
    similarity: float | None
    hash_distance: int
    sources: tuple[str, ...]
    duplicate: bool = False
    inliers: int | None = None
    score: float | None = None
    ncc: float | None = None
    cnn: float | None = None


@dataclass
class DedupResult:
    """Groups found, files skipped (``(path, reason)``), every scored pair, and counts."""

    groups: list[Group]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups]}


@dataclass
class Table:
    """Scan features of the images one search looks at.

    ``ids (n,)`` item ids; ``variants (n, V, 8)``; ``thumbs (n, 3, T, T)``;
    ``items`` ``{id: {path, content_hash, size, mtime, width, height}}``.
    """

    ids: np.ndarray
    variants: np.ndarray
    thumbs: np.ndarray
    items: dict[int, dict[str, Any]]
    #: Optional process pool that pair features are spread over (large batches only).
    pool: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.row = {int(i): r for r, i in enumerate(self.ids.tolist())}

    def features(self, pairs: Sequence[tuple[int, int]]):
        a = np.array([self.row[p[0]] for p in pairs], np.int64)
        b = np.array([self.row[p[1]] for p in pairs], np.int64)
        return thumbnail_features(self.variants, self.thumbs, a, b, pool=self.pool)


# --------------------------------------------------------------------------- collection
def descriptor_keys(coll) -> tuple[str | None, str | None]:
    """The keys of the collection's pHash-style and CNN descriptors (either may be None)."""
    hash_key = cnn_key = None
    for key, entry in coll.manifest["descriptors"].items():
        family = entry["spec"].split(":")[0]
        if family == "phash" and hash_key is None:
            hash_key = key
        elif family == "cnn" and cnn_key is None:
            cnn_key = key
    return hash_key, cnn_key


def prepare_folder(folder: str | os.PathLike, db: str | os.PathLike | None = None, workers: int = 1,
                   progress: bool = False, exclude: Sequence[str | os.PathLike] = ()):
    """Create or refresh a *collection* of ``folder`` (phash + cnn): for ``check_new``,
    calibration against a collection, or the CNN candidate source. The plain folder
    mode (:func:`find_duplicates_in_folder`) does not need one.

    Returns:
        ``(collection, failures)``: failures are ``(path, reason)`` of unreadable files.
    """
    from ..collection import MANIFEST, Collection

    folder = Path(folder).resolve()
    db = Path(db).resolve() if db else folder / CACHE_DIR
    if (db / MANIFEST).exists():
        coll = Collection.open(db)
    else:
        coll = Collection.create(db, descriptors=list(FOLDER_DESCRIPTORS))
    files = list_images(folder, [db] + list(exclude))
    coll.sync()
    if files:
        coll.add(files, workers=workers, progress=progress)
    present = {str(p.resolve()) for p in files}
    return coll, [(p, r) for p, r in coll.failures() if p in present]


def list_images(folder: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Image files under ``folder``, minus those under ``exclude`` folders."""
    return [Path(p) for p in _resolved_images(folder, exclude)[1]]


def _resolved_images(folder: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()
                     ) -> tuple[list[str], list[str]]:
    """``(listed paths, their resolved paths)`` (strings, in listed-path order) of the
    image files under ``folder`` that do not resolve into an ``exclude`` folder. Each directory is resolved
    once (not each file: a file's real path is its directory's plus its name unless the
    file itself is a link)."""
    from ..images import IMAGE_EXTENSIONS

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    # Resolved folder prefixes: a string test per file (as Path.is_relative_to, which
    # compares whole components of these absolute, normalised paths, without building a
    # Path per file).
    skip = [str(Path(e).resolve()) for e in exclude]
    skip = [(s, s.rstrip(os.sep) + os.sep) for s in skip]
    found = []
    # As Path.rglob("*") + is_file(): symlinked folders are not entered, symlinked files
    # count when they point at a file.
    for dirpath, _, filenames in os.walk(folder):
        real_dir = None
        for name in filenames:
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                if not os.path.isfile(path):
                    continue
                real = os.path.realpath(path)
            else:
                if real_dir is None:
                    real_dir = os.path.realpath(dirpath)
                real = os.path.join(real_dir, name)
            found.append((path, real))
    found.sort()
    listed, resolved = [], []
    for path, real in found:
        if skip and any(real == s or real.startswith(pre) for s, pre in skip):
            continue
        listed.append(path)
        resolved.append(real)
    return listed, resolved


def collection_table(coll, workers: int = 1, progress: bool = False) -> tuple[Table, list[tuple[str, str]]]:
    """The scan table of a collection's items (scanning what the store lacks)."""
    items = {row["id"]: row for row in coll.items()}
    store = ScanStore(coll.directory)
    bar = _bar(progress, len([i for i in items if i not in store.rows]), "scanning")
    failed = store.update(items.values(), workers=workers, progress=bar.advance)
    bar.close()
    ids, var, th = store.get(sorted(items))
    return Table(ids, var, th, {i: items[i] for i in ids.tolist()}), failed


def folder_table(folder: str | os.PathLike, cache: str | os.PathLike | None = None, workers: int = 1,
                 progress: bool = False, exclude: Sequence[str | os.PathLike] = (), pool=None
                 ) -> tuple[Table, list[tuple[str, str]], Path]:
    """The scan table of a folder's images, cached by path, size and mtime.

    Returns:
        ``(table, failures, cache_dir)``; ids are row numbers in sorted path order.
    """
    from .scan import DEDUP_VARIANTS, SCAN_VERSION, THUMB, scan_files

    folder = Path(folder).resolve()
    cache = Path(cache).resolve() if cache else folder / CACHE_DIR
    listed, resolved = _resolved_images(folder, [cache] + list(exclude))
    cached: dict[str, tuple] = {}
    cache_file = cache / FOLDER_SCAN_FILE
    if cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                # Each array read once (an NpzFile re-reads a member on every access).
                data = {k: npz[k] for k in npz.files} if int(npz["version"]) == SCAN_VERSION else None
            if data is not None:
                sizes, mtimes, hashes = data["sizes"].tolist(), data["mtimes"].tolist(), data["hashes"].tolist()
                widths, heights = data["widths"].tolist(), data["heights"].tolist()
                for r, p in enumerate(data["paths"].tolist()):
                    cached[p] = (int(sizes[r]), float(mtimes[r]), str(hashes[r]),
                                 int(widths[r]), int(heights[r]), data["variants"][r], data["thumbs"][r])
        except (OSError, ValueError, KeyError):
            cached = {}
    rows: dict[str, tuple] = {}
    todo = []
    for p, key in zip(listed, resolved):
        hit = cached.get(key)
        if hit is not None:
            st = os.stat(p)
            if hit[0] == st.st_size and hit[1] == st.st_mtime:
                rows[key] = hit
                continue
        todo.append(key)
    bar = _bar(progress, len(todo), "scanning")
    scan = scan_files(todo, workers=workers, progress=bar.advance, resolved=True, pool=pool)
    bar.close()
    for r, p in enumerate(scan.paths):
        rows[p] = (int(scan.sizes[r]), float(scan.mtimes[r]), scan.content_hashes[r], int(scan.widths[r]),
                   int(scan.heights[r]), scan.variants[r], scan.thumbs[r])
    paths = sorted(rows)
    variants = np.stack([rows[p][5] for p in paths]) if paths else np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8)
    thumbs = np.stack([rows[p][6] for p in paths]) if paths else np.zeros((0, 3, THUMB, THUMB), np.uint8)
    if todo or len(paths) != len(cached):
        cache.mkdir(parents=True, exist_ok=True)
        # A cache (recomputed when lost): atomic, but not fsync'ed (that cost more than the scan).
        buf = io.BytesIO()
        np.savez(buf, version=np.array(SCAN_VERSION), paths=np.array(paths, dtype=str),
                 sizes=np.array([rows[p][0] for p in paths], np.int64),
                 mtimes=np.array([rows[p][1] for p in paths], np.float64),
                 hashes=np.array([rows[p][2] for p in paths], dtype=str),
                 widths=np.array([rows[p][3] for p in paths], np.int64),
                 heights=np.array([rows[p][4] for p in paths], np.int64),
                 variants=variants, thumbs=thumbs)
        atomic_write_bytes(cache_file, buf.getvalue(), fsync=False)
    items = {i: {"path": p, "size": rows[p][0], "mtime": rows[p][1], "content_hash": rows[p][2],
                 "width": rows[p][3], "height": rows[p][4]} for i, p in enumerate(paths)}
    table = Table(np.arange(len(paths), dtype=np.int64), variants, thumbs, items)
    return table, scan.failures, cache


# --------------------------------------------------------------------------- decision
def _decide(table: Table, candidates: dict[tuple[int, int], dict], thresholds: Thresholds,
            vectors: dict[int, np.ndarray] | None) -> list[Pair]:
    """Score every candidate pair (features from the table; CNN cosine where given)."""
    keys = sorted(k for k in candidates if k[0] in table.row and k[1] in table.row)
    hash_d, ncc, grad = table.features(keys)
    score = thresholds.score(hash_d, ncc, grad)
    exact = np.array(["exact" in candidates[k]["sources"] for k in keys], bool)
    hash_src = np.array(["hash" in candidates[k]["sources"] for k in keys], bool)
    dup = exact | (hash_src & (score >= 0))
    sims = np.full(len(keys), np.nan, np.float32)
    if vectors is not None and keys:
        have = [i for i, k in enumerate(keys) if k[0] in vectors and k[1] in vectors]
        if have:
            sims[have] = pair_similarities(vectors, [keys[i] for i in have])
        dup |= np.nan_to_num(sims, nan=-1.0) >= thresholds.cnn_any
    inliers: dict[int, int] = {}
    if thresholds.geo_inliers > 0 and keys:
        # Optional third stage for the near misses only: local features + RANSAC.
        verifier = GeometricVerifier()
        for i in np.nonzero(~dup & ((score >= thresholds.geo_margin) | (np.nan_to_num(sims, nan=-1.0) >= 0.75)))[0].tolist():
            a, b = keys[i]
            inliers[i] = verifier.inliers(table.items[a]["path"], table.items[b]["path"])
            dup[i] = inliers[i] >= thresholds.geo_inliers
    return [Pair(a, b, float(grad[i]), int(hash_d[i]), tuple(sorted(candidates[(a, b)]["sources"])), bool(dup[i]),
                 inliers.get(i), float(score[i]), float(ncc[i]), None if np.isnan(sims[i]) else float(sims[i]))
            for i, (a, b) in enumerate(keys)]


def _group(table: Table, scored: list[Pair], thresholds: Thresholds, policy: str,
           vectors: dict[int, np.ndarray] | None) -> list[Group]:
    """Complete-linkage groups of the accepted pairs, strongest pairs merged first."""
    verdict = {(p.a, p.b): p.duplicate for p in scored}
    geo = GeometricVerifier()

    def accept(pairs: list[tuple[int, int]]) -> np.ndarray:
        pairs = [ordered(a, b) for a, b in pairs]
        out = np.array([verdict.get(p, False) for p in pairs], bool)
        todo = [i for i, p in enumerate(pairs) if p not in verdict]
        if todo:
            sub = [pairs[i] for i in todo]
            d, n, g = table.features(sub)
            ok = thresholds.score(d, n, g) >= 0
            same = np.array([table.items[a].get("content_hash") == table.items[b].get("content_hash")
                             for a, b in sub], bool)
            if vectors is not None:
                ok |= np.array([a in vectors and b in vectors and float(vectors[a] @ vectors[b]) >= thresholds.cnn_any
                                for a, b in sub], bool)
            ok |= same
            if thresholds.geo_inliers > 0:
                for i in np.nonzero(~ok)[0].tolist():
                    ok[i] = geo.inliers(table.items[sub[i][0]]["path"], table.items[sub[i][1]]["path"]) >= thresholds.geo_inliers
            out[todo] = ok
            verdict.update({p: bool(v) for p, v in zip(sub, out[todo])})
        return out

    accepted = sorted((p for p in scored if p.duplicate),
                      key=lambda p: (-(1e9 if "exact" in p.sources else (p.score or 0.0)), p.a, p.b))
    components = linked_groups([(p.a, p.b) for p in accepted], accept)
    sim = {(p.a, p.b): p.similarity for p in scored}

    def similarity(a: int, b: int) -> float:
        key = ordered(a, b)
        if key not in sim:
            sim[key] = float(table.features([key])[2][0])
        return sim[key]

    return build_groups([], table.items, similarity, policy, components=components)


def search_table(table: Table, thresholds: Thresholds, policy: str = "resolution",
                 vectors: dict[int, np.ndarray] | None = None, cnn_index=None,
                 candidate_pairs_only: bool = False, skipped: Sequence[tuple[str, str]] = ()) -> DedupResult:
    """Candidates, verification and groups over one scan table (see the module docstring)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    candidates: dict[tuple[int, int], dict] = {}

    def add(key, source):
        candidates.setdefault(key, {"sources": set()})["sources"].add(source)

    t = time.perf_counter()
    for a, b in exact_duplicate_pairs({i: it.get("content_hash") for i, it in table.items.items()}):
        add(ordered(a, b), "exact")
    ra, rb, _ = hash_candidate_pairs(table.variants, thresholds.hash_radius)
    ia, ib = table.ids[ra], table.ids[rb]
    for key in zip(np.minimum(ia, ib).tolist(), np.maximum(ia, ib).tolist()):
        entry = candidates.get(key)
        if entry is None:
            candidates[key] = {"sources": {"hash"}}
        else:
            entry["sources"].add("hash")
    timings["candidates"] = time.perf_counter() - t
    if vectors is not None and cnn_index is not None and thresholds.cnn_k > 0:
        t = time.perf_counter()
        ids = np.array(sorted(vectors), np.int64)
        for key in cnn_neighbour_candidates(cnn_index, ids, np.stack([vectors[i] for i in ids.tolist()]),
                                            thresholds.cnn_k, thresholds.cnn_any - 0.25):
            add(key, "cnn")
        timings["cnn_candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = _decide(table, candidates, thresholds, vectors)
    timings["verify"] = time.perf_counter() - t
    stats = {"items": len(table.ids), "skipped": len(skipped), "candidate_pairs": len(scored),
             "hash_candidates": sum("hash" in p.sources for p in scored),
             "cnn_candidates": sum("cnn" in p.sources for p in scored),
             "exact_pairs": sum("exact" in p.sources for p in scored),
             "geometric_checks": sum(p.inliers is not None for p in scored),
             "duplicate_pairs": sum(p.duplicate for p in scored)}
    if candidate_pairs_only:
        return DedupResult([], list(skipped), scored, stats, thresholds)
    t = time.perf_counter()
    groups = _group(table, scored, thresholds, policy, vectors)
    timings["group"] = time.perf_counter() - t
    stats["groups"] = len(groups)
    stats["seconds"] = {k: round(v, 4) for k, v in timings.items()}
    stats["seconds"]["search_verify_group"] = round(time.perf_counter() - started, 4)
    return DedupResult(groups, list(skipped), scored, stats, thresholds)


# --------------------------------------------------------------------------- entry points
def _cnn_vectors(paths: dict[int, str], workers: int = 1) -> dict[int, np.ndarray]:
    """CNN vectors of files (for ``cnn_k`` in folder mode: every image, the costly part)."""
    from ..descriptors.base import make_descriptor
    from ..errors import ImageLoadError
    from ..images import load_image

    d = make_descriptor("cnn")
    ids, pixels = [], []
    for i, p in paths.items():
        try:
            pixels.append(load_image(p, mode="RGB", max_side=d.max_side).pixels)
            ids.append(i)
        except ImageLoadError:
            continue
    return dict(zip(ids, d.transform_pixels(pixels))) if ids else {}


class _VectorIndex:
    """Exact cosine top-k over in-memory unit vectors (folder mode's CNN source)."""

    def __init__(self, vectors: dict[int, np.ndarray]):
        import faiss

        self.ids = np.array(sorted(vectors), np.int64)
        self._index = faiss.IndexFlatIP(len(next(iter(vectors.values()))))
        self._index.add(np.stack([vectors[i] for i in self.ids.tolist()]).astype(np.float32))
        self.ntotal = len(self.ids)

    def search(self, q: np.ndarray, k: int):
        from types import SimpleNamespace

        sims, rows = self._index.search(np.asarray(q, np.float32), k)
        return SimpleNamespace(ids=np.where(rows >= 0, self.ids[rows], -1), distances=1.0 - sims)


def _preload_decoders() -> None:
    """Import what a scan worker uses (OpenCV, Pillow's JPEG and PNG plugins, the image
    loader) in this process, so forked workers inherit the modules."""
    import cv2  # noqa: F401
    from PIL import Image, JpegImagePlugin, PngImagePlugin  # noqa: F401

    from .. import images  # noqa: F401

    Image.preinit()


def find_duplicates_in_folder(folder: str | os.PathLike, cache: str | os.PathLike | None = None,
                              thresholds: Thresholds | None = None, policy: str = "resolution",
                              workers: int = 1, progress: bool = False,
                              exclude: Sequence[str | os.PathLike] = ()) -> DedupResult:
    """Every duplicate group among a folder's images (``lookalike dedup DIR``).

    Args:
        folder: the folder (searched recursively; ``cache`` and ``exclude`` skipped).
        cache: where the scan cache and calibrated thresholds live (default ``folder/.lookalike``).
        thresholds: default: the cache's calibrated ones, else :class:`Thresholds`.
        workers: scan processes.

    Returns:
        :class:`DedupResult` (ids are row numbers of the folder's sorted paths).
    """
    from .calibrate import load_thresholds

    from .scan import _pool

    started = time.perf_counter()
    if workers > 1:
        # The decoders' modules are imported once here, before the workers fork, instead
        # of once in every worker.
        _preload_decoders()
    # One pool of worker processes for the scan and the pair features (forked once).
    pool = _pool(workers) if workers > 1 else None
    try:
        table, failures, cache_dir = folder_table(folder, cache, workers, progress, exclude, pool=pool)
        scan_s = time.perf_counter() - started
        thresholds = thresholds or load_thresholds(cache_dir)
        vectors = index = None
        if thresholds.cnn_k > 0 and len(table.ids):
            vectors = _cnn_vectors({i: it["path"] for i, it in table.items.items()}, workers)
            index = _VectorIndex(vectors) if vectors else None
        table.pool = pool
        result = search_table(table, thresholds, policy, vectors, index, skipped=failures)
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
    result.stats.setdefault("seconds", {})
    result.stats["seconds"]["scan"] = round(scan_s, 4)
    result.stats["seconds"]["total"] = round(time.perf_counter() - started, 4)
    result.stats["cache"] = str(cache_dir)
    return result


def find_duplicates(coll, thresholds: Thresholds | None = None, policy: str = "resolution",
                    progress: bool = False, candidate_pairs_only: bool = False, workers: int = 1) -> DedupResult:
    """Every duplicate group among a collection's stored images.

    Args:
        coll: an open :class:`~lookalike.collection.Collection` (its images are scanned once
            into ``dedup_scan.npz``; a ``cnn`` descriptor serves ``cnn_k``).
        thresholds: default: the collection's calibrated ones, else :class:`Thresholds`.
        policy: keeper policy (see :mod:`lookalike.dedup.groups`).
        candidate_pairs_only: score candidate pairs but skip grouping (calibration).
    """
    from .calibrate import load_thresholds

    thresholds = thresholds or load_thresholds(coll.directory)
    started = time.perf_counter()
    table, failed = collection_table(coll, workers, progress)
    skipped = list(coll.failures()) + [f for f in failed if f not in coll.failures()]
    vectors = index = None
    _, cnn_key = descriptor_keys(coll)
    if cnn_key is not None and thresholds.cnn_k > 0:
        ids, vecs = coll.vectors(cnn_key)
        vectors = dict(zip(ids.tolist(), vecs))
        index = coll.index(cnn_key)
    result = search_table(table, thresholds, policy, vectors, index, candidate_pairs_only, skipped)
    result.stats.setdefault("seconds", {})["total"] = round(time.perf_counter() - started, 4)
    return result


def check_new(coll, files: Sequence[str | os.PathLike], thresholds: Thresholds | None = None,
              policy: str = "resolution", progress: bool = False) -> DedupResult:
    """Check new image files against a collection (the stored images are not re-read
    once their scan is cached).

    New files get negative ids; candidates are new-vs-stored (range search of the new
    variants over the stored hashes, and of the stored variants over the new hashes)
    and new-vs-new. Groups contain at least one new file.
    """
    from .calibrate import load_thresholds
    from .scan import scan_files

    thresholds = thresholds or load_thresholds(coll.directory)
    started = time.perf_counter()
    stored, _ = collection_table(coll)
    scan = scan_files(files)
    new_ids = -np.arange(1, len(scan) + 1, dtype=np.int64)
    items = dict(stored.items)
    items.update({int(i): scan.item(r) for r, i in enumerate(new_ids.tolist())})
    table = Table(np.concatenate([stored.ids, new_ids]), np.concatenate([stored.variants, scan.variants]),
                  np.concatenate([stored.thumbs, scan.thumbs]), items)
    candidates: dict[tuple[int, int], dict] = {}

    def add(key, source):
        candidates.setdefault(key, {"sources": set()})["sources"].add(source)

    hashes = {int(i): items[int(i)]["content_hash"] for i in new_ids.tolist()}
    wanted = set(hashes.values())
    hashes.update({i: it["content_hash"] for i, it in stored.items.items() if it.get("content_hash") in wanted})
    for a, b in exact_duplicate_pairs(hashes):
        if a < 0 or b < 0:
            add(ordered(a, b), "exact")
    v = scan.variants.shape[1] if len(scan) else 7
    n_new = len(new_ids)
    if n_new:
        # new variants -> every hash (stored and new)
        qi, bi, _ = range_search(table.variants[:, 0], scan.variants.reshape(-1, 8), thresholds.hash_radius)
        for q, b in zip((qi // v).tolist(), bi.tolist()):
            a_id, b_id = int(new_ids[q]), int(table.ids[b])
            if a_id != b_id:
                add(ordered(a_id, b_id), "hash")
        # stored variants -> new hashes (a crop variant of a stored image may match a new one)
        if len(stored.ids):
            qi, bi, _ = range_search(scan.variants[:, 0], stored.variants.reshape(-1, 8), thresholds.hash_radius)
            for q, b in zip((qi // v).tolist(), bi.tolist()):
                add(ordered(int(stored.ids[q]), int(new_ids[b])), "hash")
    vectors = None
    _, cnn_key = descriptor_keys(coll)
    if cnn_key is not None and thresholds.cnn_k > 0 and n_new:
        from ..images import load_image

        d = coll.descriptor(cnn_key)
        q = d.transform_pixels([load_image(p, mode="RGB", max_side=d.max_side).pixels for p in scan.paths])
        vectors = dict(zip(new_ids.tolist(), q))
        for key in cnn_neighbour_candidates(coll.index(cnn_key), new_ids, q, thresholds.cnn_k, thresholds.cnn_any - 0.25):
            add(key, "cnn")
        sids, svecs = coll.vectors(cnn_key, ids=sorted({x for k in candidates for x in k if x >= 0}))
        vectors.update(dict(zip(sids.tolist(), svecs)))
    scored = _decide(table, candidates, thresholds, vectors)
    groups = [g for g in _group(table, scored, thresholds, policy, vectors)
              if g.keeper_id < 0 or any(m.id < 0 for m in g.members)]
    stats = {"new_files": len(files), "skipped": len(scan.failures), "stored_items": len(stored.ids),
             "candidate_pairs": len(scored), "duplicate_pairs": sum(p.duplicate for p in scored),
             "groups": len(groups), "seconds": {"total": round(time.perf_counter() - started, 4)}}
    return DedupResult(groups, list(scan.failures), scored, stats, thresholds)


# --------------------------------------------------------------------------- progress
class _NoBar:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, total: int, label: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=Console(stderr=True))
        self._p.start()
        self._task = self._p.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._task, n)

    def close(self) -> None:
        self._p.stop()


def _bar(enabled: bool, total: int, label: str):
    return _Bar(total, label) if enabled and total else _NoBar()
