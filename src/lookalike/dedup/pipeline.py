"""The duplicate search end to end: files -> one cheap scan -> candidates -> verification -> groups.

:func:`find_duplicates_in_folder` is the folder mode (``lookalike dedup DIR``): one
reduced-size decode per file (:mod:`.scan`, cached in ``DIR/.lookalike`` or ``--db`` by
path, size and mtime, so re-runs only scan new or changed files), a Hamming range search
over the variant hashes, the thumbnail check of each candidate pair, complete-linkage
groups. With several workers the stages overlap on one process pool
(:func:`_scan_and_verify`): each scanned chunk's hashes are searched against everything
scanned before it as soon as it arrives, and its candidate pairs' thumbnail checks are
queued behind the remaining scan tasks, so no worker waits for a serial stage; the
thumbnails stay in memory shared with the forked workers.

No CNN runs by default: measured on ``bench/dedup.py`` it separated candidate
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

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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
    """``(listed paths, their resolved paths)`` (strings, in listing order) of the image
    files under ``folder`` that do not resolve into an ``exclude`` folder (the listing of
    :func:`lookalike.images.list_image_files`; each directory resolved once)."""
    from ..collection import resolve_file
    from ..images import list_image_files

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    # Resolved folder prefixes: a string test per file (as Path.is_relative_to, which
    # compares whole components of these absolute, normalised paths).
    skip = [str(Path(e).resolve()) for e in exclude]
    skip = [(s, s.rstrip(os.sep) + os.sep) for s in skip]
    folders: dict[str, str] = {}
    listed, resolved = [], []
    for path, is_link in list_image_files(folder):
        real = resolve_file(path, folders, is_link)
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


def _read_folder_cache(cache: Path) -> dict[str, tuple]:
    """The folder scan cache: ``{resolved path: (size, mtime, content_hash, width, height,
    variants, thumbs)}`` (empty when missing, damaged or of another scan version)."""
    from .scan import SCAN_VERSION

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
    return cached


def _cache_hits(listed: Sequence[str], resolved: Sequence[str], cached: dict[str, tuple]
                ) -> tuple[dict[str, tuple], list[str]]:
    """``(cached rows still valid (same size and mtime), resolved paths to scan)``."""
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
    return rows, todo


def _savez(fh, **arrays: np.ndarray) -> None:
    """``np.savez(fh, **arrays)``, byte for byte, without copying large arrays: np.save
    hands a zip member each array as ``tobytes()`` copies; here a large C-contiguous one
    is written from its own buffer after the same header."""
    import zipfile

    from numpy.lib import format as npformat

    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            arr = np.asanyarray(arr)
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                if arr.nbytes >= 1 << 20 and arr.flags.c_contiguous and not arr.dtype.hasobject:
                    npformat.write_array_header_1_0(member, npformat.header_data_from_array_1_0(arr))
                    member.write(memoryview(arr).cast("B"))
                else:
                    npformat.write_array(member, arr, allow_pickle=False)


def _write_folder_cache(cache: Path, paths: Sequence[str], meta: Sequence[tuple], variants: np.ndarray,
                        thumbs: np.ndarray) -> None:
    """Write the folder scan cache (``meta[i]``: size, mtime, content hash, width, height
    of ``paths[i]``). A cache (recomputed when lost): atomic, but not fsync'ed (that cost
    more than the scan); written straight into the temp file (no in-memory copy)."""
    from ..atomic import atomic_writer
    from .scan import SCAN_VERSION

    cache.mkdir(parents=True, exist_ok=True)
    with atomic_writer(cache / FOLDER_SCAN_FILE, fsync=False) as fh:
        _savez(fh, version=np.array(SCAN_VERSION), paths=np.array(paths, dtype=str),
               sizes=np.array([m[0] for m in meta], np.int64),
               mtimes=np.array([m[1] for m in meta], np.float64),
               hashes=np.array([m[2] for m in meta], dtype=str),
               widths=np.array([m[3] for m in meta], np.int64),
               heights=np.array([m[4] for m in meta], np.int64),
               variants=variants, thumbs=thumbs)


def folder_table(folder: str | os.PathLike, cache: str | os.PathLike | None = None, workers: int = 1,
                 progress: bool = False, exclude: Sequence[str | os.PathLike] = (), pool=None
                 ) -> tuple[Table, list[tuple[str, str]], Path]:
    """The scan table of a folder's images, cached by path, size and mtime.

    Returns:
        ``(table, failures, cache_dir)``; ids are row numbers in sorted path order.
    """
    from .scan import DEDUP_VARIANTS, THUMB, scan_files

    folder = Path(folder).resolve()
    cache = Path(cache).resolve() if cache else folder / CACHE_DIR
    listed, resolved = _resolved_images(folder, [cache] + list(exclude))
    cached = _read_folder_cache(cache)
    rows, todo = _cache_hits(listed, resolved, cached)
    bar = _bar(progress, len(todo), "scanning")
    scan = scan_files(todo, workers=workers, progress=bar.advance, resolved=True, pool=pool)
    bar.close()
    paths = sorted(set(rows) | set(scan.paths))
    if not rows and paths == scan.paths:
        # Nothing cached (a first run): the scan's arrays are already in path order.
        variants, thumbs = scan.variants, scan.thumbs
        meta = [(int(scan.sizes[r]), float(scan.mtimes[r]), scan.content_hashes[r], int(scan.widths[r]),
                 int(scan.heights[r])) for r in range(len(paths))]
    else:
        for r, p in enumerate(scan.paths):
            rows[p] = (int(scan.sizes[r]), float(scan.mtimes[r]), scan.content_hashes[r], int(scan.widths[r]),
                       int(scan.heights[r]), scan.variants[r], scan.thumbs[r])
        meta = [rows[p][:5] for p in paths]
        variants = (np.stack([rows[p][5] for p in paths]) if paths
                    else np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8))
        thumbs = np.stack([rows[p][6] for p in paths]) if paths else np.zeros((0, 3, THUMB, THUMB), np.uint8)
    if todo or len(paths) != len(cached):
        _write_folder_cache(cache, paths, meta, variants, thumbs)
    items = {i: {"path": p, "size": m[0], "mtime": m[1], "content_hash": m[2], "width": m[3], "height": m[4]}
             for i, (p, m) in enumerate(zip(paths, meta))}
    table = Table(np.arange(len(paths), dtype=np.int64), variants, thumbs, items)
    return table, scan.failures, cache


def _scan_and_verify(folder: Path, cache: Path, exclude: Sequence[str | os.PathLike], radius: int,
                     workers: int, pools: list, progress: bool = False):
    """:func:`folder_table` and the hash candidates with their thumbnail features, overlapped
    on a process pool (made here, appended to ``pools``; the caller shuts it down):
    each scanned chunk's variant hashes are range-searched against everything scanned so
    far as soon as it comes back, and the thumbnail checks of the new candidate pairs are
    queued on the pool behind the scan; the scan cache is written while the workers check
    the last pairs. Where workers are forked, the thumbnails live in memory shared with
    them (written there by the scan tasks, read there by the pair checks) instead of
    travelling through pipes. Same table, candidates and features as :func:`folder_table`
    + :func:`search_table` (every pair is aligned and checked by the same code; only the
    batches of pairs differ, which moves the features by float rounding at most).

    Returns:
        ``(table, failures, hash_pairs (a, b) id arrays, {(a, b): (hash_distance, ncc,
        grad_ncc)}, seconds)``.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait

    import faiss

    from .candidates import MIH_MIN_ITEMS
    from .scan import (CROP_FRACTIONS, DEDUP_VARIANTS, THUMB, _SHARED, _pool, _scan_chunk, _scan_chunk_shared,
                       guided_chunks, shared_thumbs)
    from .verify import _aligned_correlations_job, _shared_pair_job, pair_alignment, pair_job

    started = time.perf_counter()
    listed, resolved = _resolved_images(folder, [cache] + list(exclude))
    cached = _read_folder_cache(cache)
    rows, todo = _cache_hits(listed, resolved, cached)
    todo = list(dict.fromkeys(todo))  # a file reached by two listed paths is scanned once
    keys = sorted(set(rows) | set(todo))
    slot = {k: i for i, k in enumerate(keys)}
    n, v = len(keys), len(DEDUP_VARIANTS)
    variants = np.zeros((n, v, 8), np.uint8)
    # Shared with the workers when they are forked after this (the pool is made below).
    token = None
    if n and "fork" in multiprocessing.get_all_start_methods():
        token, thumbs = shared_thumbs(n)
    else:
        thumbs = np.empty((n, 1 + len(CROP_FRACTIONS), THUMB, THUMB), np.uint8)
    # The shared thumbnails are released however this ends (an error included).
    try:
        pool = _pool(workers)
        pools.append(pool)
        meta: list[tuple | None] = [None] * n
        order = {k: i for i, k in enumerate(todo)}
        failures: list[tuple[str, str]] = []
        seen: list[int] = []                 # slots filled so far, in arrival order
        pending_a: list[int] = []
        pending_b: list[int] = []
        jobs: list = []
        seconds = {"candidates": 0.0}
        incremental = n < MIH_MIN_ITEMS
        # Pairs per check task: small, so that the workers finish the last ones together.
        per_job = 64
        # Growing flat indexes of every variant hash / every image's own hash seen so far.
        all_variants = faiss.IndexBinaryFlat(64)
        all_hashes = faiss.IndexBinaryFlat(64)

        def submit(a: list[int], b: list[int]) -> None:
            a, b = np.array(a, np.int64), np.array(b, np.int64)
            hash_d, src, dst, k = pair_alignment(variants, a, b)
            if token is not None:
                fut = pool.submit(_shared_pair_job, token, src, dst, k)
            else:
                fut = pool.submit(_aligned_correlations_job, pair_job(thumbs, src, dst, k))
            jobs.append((a, b, hash_d, fut))

        def search(index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lims, _, ids = index.range_search(np.ascontiguousarray(queries), radius + 1)  # FAISS: strictly below
            rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
            return rows, ids.astype(np.int64)

        def arrived(new: list[int], last: bool = False) -> None:
            """Candidates between the slots ``new`` and everything before them, the pairs
            :func:`hash_candidate_pairs` finds (a variant hash of one within the radius of the
            other's own hash): the new images' own hashes against every variant seen (theirs
            included), and the new images' variants against the earlier images' own hashes.
            FAISS's flat scan on one thread (its OpenMP threads would spin on the cores the
            workers need). From :data:`MIH_MIN_ITEMS` files on, one search at the end instead
            (multi-index hashing, which is built for the whole set)."""
            t = time.perf_counter()
            s = len(seen)
            seen.extend(new)
            idx = np.array(seen, np.int64)
            if incremental:
                var = variants[new]
                all_variants.add(np.ascontiguousarray(var.reshape(-1, 8)))
                q, r = search(all_variants, var[:, 0])          # variant r of an image ~ a new own hash
                qa, qb = q + s, r // v
                if s:
                    q, r = search(all_hashes, var.reshape(-1, 8))   # a new variant ~ an earlier own hash
                    qa, qb = np.concatenate([qa, q // v + s]), np.concatenate([qb, r])
                all_hashes.add(np.ascontiguousarray(var[:, 0]))
            elif last:
                qa, qb, _ = hash_candidate_pairs(variants[idx], radius)
            else:
                seconds["candidates"] += time.perf_counter() - t
                return
            keep = qa != qb
            a, b = idx[qa[keep]], idx[qb[keep]]
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            if len(lo):
                uniq = np.unique(lo * n + hi)
                pending_a.extend((uniq // n).tolist())
                pending_b.extend((uniq % n).tolist())
            while len(pending_a) >= per_job:
                submit(pending_a[:per_job], pending_b[:per_job])
                del pending_a[:per_job], pending_b[:per_job]
            seconds["candidates"] += time.perf_counter() - t

        omp_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            if rows:
                hit = [slot[k] for k in rows]
                for k, i in zip(rows, hit):
                    meta[i] = rows[k][:5]
                    variants[i], thumbs[i] = rows[k][5], rows[k][6]
                arrived(hit)
            bar = _bar(progress, len(todo), "scanning")
            if token is not None:
                futures = {pool.submit(_scan_chunk_shared, token, c, [slot[p] for p in c])
                           for c in guided_chunks(todo, workers)}
            else:
                futures = {pool.submit(_scan_chunk, c) for c in guided_chunks(todo, workers)}
            while futures:
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    part_rows, part_thumbs, part_variants, part_failures = fut.result()
                    new = [slot[r[0]] for r in part_rows]
                    for r, i in zip(part_rows, new):
                        meta[i] = (int(r[2]), float(r[3]), r[1], int(r[4]), int(r[5]))  # as the cache keeps them
                    if new:
                        variants[new] = part_variants
                        if part_thumbs is not None:
                            thumbs[new] = part_thumbs
                        arrived(new)
                    failures.extend(part_failures)
                    bar.advance(len(part_rows) + len(part_failures))
            bar.close()
            if not incremental:
                arrived([], last=True)
        finally:
            faiss.omp_set_num_threads(omp_threads)
        # The last pairs, split so that every worker gets a share.
        if pending_a:
            per = -(-len(pending_a) // max(workers, -(-len(pending_a) // per_job)))
            for s in range(0, len(pending_a), per):
                submit(pending_a[s:s + per], pending_b[s:s + per])
        seconds["scan"] = time.perf_counter() - started
        failures.sort(key=lambda f: order.get(f[0], -1))
        ok = np.array([m is not None for m in meta], bool)
        paths = [k for k, good in zip(keys, ok.tolist()) if good]
        final = np.cumsum(ok) - 1            # slot -> row of the table
        table_variants, table_thumbs = (variants, thumbs) if ok.all() else (variants[ok], thumbs[ok])
        meta = [m for m in meta if m is not None]
        if todo or len(paths) != len(cached):
            _write_folder_cache(cache, paths, meta, table_variants, table_thumbs)
        items = {i: {"path": p, "size": m[0], "mtime": m[1], "content_hash": m[2], "width": m[3], "height": m[4]}
                 for i, (p, m) in enumerate(zip(paths, meta))}
        table = Table(np.arange(len(paths), dtype=np.int64), table_variants, table_thumbs, items, pool=pool)
        t = time.perf_counter()
        features: dict[tuple[int, int], tuple[int, float, float]] = {}
        pair_a, pair_b = [], []
        for a, b, hash_d, fut in jobs:
            ncc, grad = fut.result()
            fa, fb = final[a].tolist(), final[b].tolist()
            pair_a += fa
            pair_b += fb
            features.update(zip(zip(fa, fb), zip(hash_d.tolist(), ncc.tolist(), grad.tolist())))
        seconds["verify_wait"] = time.perf_counter() - t
        return table, failures, (np.array(pair_a, np.int64), np.array(pair_b, np.int64)), features, seconds
    finally:
        _SHARED.pop(token, None)


# --------------------------------------------------------------------------- decision
def _decide(table: Table, candidates: dict[tuple[int, int], dict], thresholds: Thresholds,
            vectors: dict[int, np.ndarray] | None,
            known: dict[tuple[int, int], tuple[int, float, float]] | None = None) -> list[Pair]:
    """Score every candidate pair (features from the table, or from ``known`` where
    already computed; CNN cosine where given)."""
    keys = sorted(k for k in candidates if k[0] in table.row and k[1] in table.row)
    if known:
        missing = [k for k in keys if k not in known]
        computed = dict(zip(missing, zip(*(f.tolist() for f in table.features(missing))))) if missing else {}
        feats = [known[k] if k in known else computed[k] for k in keys]
        hash_d = np.array([f[0] for f in feats], np.int64)
        ncc = np.array([f[1] for f in feats], np.float32)
        grad = np.array([f[2] for f in feats], np.float32)
    else:
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
                 candidate_pairs_only: bool = False, skipped: Sequence[tuple[str, str]] = (),
                 hash_pairs: tuple[np.ndarray, np.ndarray] | None = None,
                 known: dict[tuple[int, int], tuple[int, float, float]] | None = None) -> DedupResult:
    """Candidates, verification and groups over one scan table (see the module docstring).

    ``hash_pairs`` (row arrays) and ``known`` (their features) come from an overlapped
    scan (:func:`_scan_and_verify`), which found and checked the hash candidates already.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    candidates: dict[tuple[int, int], dict] = {}

    def add(key, source):
        candidates.setdefault(key, {"sources": set()})["sources"].add(source)

    t = time.perf_counter()
    for a, b in exact_duplicate_pairs({i: it.get("content_hash") for i, it in table.items.items()}):
        add(ordered(a, b), "exact")
    if hash_pairs is None:
        ra, rb, _ = hash_candidate_pairs(table.variants, thresholds.hash_radius)
    else:
        ra, rb = hash_pairs
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
    scored = _decide(table, candidates, thresholds, vectors, known)
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

    d = make_descriptor("cnn")
    ids, pixels = [], []
    for i, p in paths.items():
        try:
            pixels.append(d.load(p))
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


def find_duplicates_in_folder(folder: str | os.PathLike, cache: str | os.PathLike | None = None,
                              thresholds: Thresholds | None = None, policy: str = "resolution",
                              workers: int = 1, progress: bool = False,
                              exclude: Sequence[str | os.PathLike] = ()) -> DedupResult:
    """Every duplicate group among a folder's images (``lookalike dedup DIR``).

    Args:
        folder: the folder (searched recursively; ``cache`` and ``exclude`` skipped).
        cache: where the scan cache and calibrated thresholds live (default ``folder/.lookalike``).
        thresholds: default: the cache's calibrated ones, else :class:`Thresholds`.
        workers: scan processes (``> 1``: scan, candidate search and pair checks
            overlapped on one pool, see :func:`_scan_and_verify`; then ``stats["seconds"]``
            has ``scan`` up to the last scanned chunk, ``verify_wait`` for the pair checks
            still running after it, and ``candidates`` / ``verify`` for the parent's own
            share of those stages).

    Returns:
        :class:`DedupResult` (ids are row numbers of the folder's sorted paths).
    """
    import gc

    from .calibrate import load_thresholds
    from .scan import _pool

    started = time.perf_counter()
    # No cyclic garbage collection during the run: it makes few cycles, and a full
    # collection of a large calling process's objects cost tens of milliseconds.
    gc_enabled = gc.isenabled()
    gc.disable()
    pools: list = []
    try:
        folder = Path(folder).resolve()
        cache_dir = Path(cache).resolve() if cache else folder / CACHE_DIR
        thresholds = thresholds or load_thresholds(cache_dir)
        if workers > 1 and thresholds.cnn_k <= 0:
            # Scan, candidate search and pair checks overlapped on one pool.
            table, failures, hash_pairs, known, overlap_s = _scan_and_verify(
                folder, cache_dir, exclude, thresholds.hash_radius, workers, pools, progress)
            scan_s = overlap_s["scan"]
            result = search_table(table, thresholds, policy, skipped=failures, hash_pairs=hash_pairs, known=known)
            result.stats["seconds"]["candidates"] = round(overlap_s["candidates"] + result.stats["seconds"]["candidates"], 4)
            result.stats["seconds"]["verify_wait"] = round(overlap_s["verify_wait"], 4)
        else:
            # One pool of worker processes for the scan and the pair features (forked once).
            pool = _pool(workers) if workers > 1 else None
            if pool is not None:
                pools.append(pool)
            table, failures, cache_dir = folder_table(folder, cache_dir, workers, progress, exclude, pool=pool)
            scan_s = time.perf_counter() - started
            vectors = index = None
            if thresholds.cnn_k > 0 and len(table.ids):
                vectors = _cnn_vectors({i: it["path"] for i, it in table.items.items()}, workers)
                index = _VectorIndex(vectors) if vectors else None
            table.pool = pool
            result = search_table(table, thresholds, policy, vectors, index, skipped=failures)
    finally:
        for pool in pools:
            pool.shutdown(wait=False)
        if gc_enabled:
            gc.enable()
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
        d = coll.descriptor(cnn_key)
        q = d.transform_pixels(d.load_batch(scan.paths))
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
