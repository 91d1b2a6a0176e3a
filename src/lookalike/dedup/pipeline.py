"""The duplicate search end to end: collection -> candidates -> verification -> groups.

:func:`find_duplicates` searches a whole collection (every stored image against every
other, through the indexes, never all pairs); :func:`check_new` checks new files against
a collection without re-reading the stored ones; :func:`prepare_folder` builds or
refreshes the cache collection of a folder (incremental: unchanged files are skipped).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, ImageLoadError, InputError
from .candidates import (
    VariantStore,
    exact_duplicate_pairs,
    hash_candidates,
    make_range_searcher,
    ordered,
)
from .groups import Group, build_groups
from .verify import GeometricVerifier, Thresholds, cnn_neighbour_candidates, is_duplicate, pair_similarities

#: Default descriptors of a folder's cache collection.
FOLDER_DESCRIPTORS = ("phash:bits=64", "cnn")
CACHE_DIR = ".lookalike"
#: Hash distance recorded for pairs that were not hash candidates.
FAR = 1 << 10


@dataclass
class Pair:
    """A scored candidate pair (ids; negative ids are new files not in the collection)."""

    a: int
    b: int
    similarity: float | None
    hash_distance: int
    sources: tuple[str, ...]
    duplicate: bool = False
    inliers: int | None = None


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


# --------------------------------------------------------------------------- collection
def descriptor_keys(coll) -> tuple[str | None, str | None]:
    """The keys of the collection's 64-bit-style perceptual hash and CNN descriptors."""
    hash_key = cnn_key = None
    for key, entry in coll.manifest["descriptors"].items():
        family = entry["spec"].split(":")[0]
        if family == "phash" and hash_key is None:
            hash_key = key
        elif family == "cnn" and cnn_key is None:
            cnn_key = key
    if hash_key is None:
        for key, entry in coll.manifest["descriptors"].items():
            if entry["metric"] == "hamming" and entry["spec"].split(":")[0] in ("ahash", "dhash", "whash"):
                hash_key = key
                break
    if hash_key is None and cnn_key is None:
        raise ConfigError("this collection has neither a perceptual hash (phash) nor a cnn descriptor; "
                          "create it with e.g. --descriptor phash --descriptor cnn")
    return hash_key, cnn_key


def _variant_store(coll, hash_key: str | None) -> VariantStore | None:
    if hash_key is None:
        return None
    d = coll.descriptor(hash_key)
    return VariantStore(coll.directory, d.name, d.dim)


def prepare_folder(folder: str | os.PathLike, db: str | os.PathLike | None = None, workers: int = 1,
                   progress: bool = False, exclude: Sequence[str | os.PathLike] = ()):
    """Create or refresh the cache collection of ``folder`` (phash + cnn).

    Returns:
        ``(collection, failures)``: failures are ``(path, reason)`` of unreadable files.
    """
    from ..collection import MANIFEST, Collection
    from ..images import iter_image_files

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    db = Path(db).resolve() if db else folder / CACHE_DIR
    if (db / MANIFEST).exists():
        coll = Collection.open(db)
    else:
        coll = Collection.create(db, descriptors=list(FOLDER_DESCRIPTORS))
    skip = [db] + [Path(e).resolve() for e in exclude]
    files = [p for p in iter_image_files(folder) if not any(p.resolve().is_relative_to(s) for s in skip)]
    coll.sync()  # files moved away or deleted since the last run
    if files:
        coll.add(files, workers=workers, progress=progress)
    present = {str(p.resolve()) for p in files}
    failures = [(p, r) for p, r in coll.failures() if p in present]
    return coll, failures


def _items(coll) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in coll.items()}


# --------------------------------------------------------------------------- scoring
def _score(pairs: dict[tuple[int, int], dict], vectors: dict[int, np.ndarray] | None,
           thresholds: Thresholds, paths: dict[int, str] | None = None) -> list[Pair]:
    keys = sorted(pairs)
    hash_d = np.array([pairs[k].get("hash", FAR) for k in keys], dtype=np.int64)
    sims = None
    if vectors is not None:
        sims = pair_similarities(vectors, keys) if keys else np.zeros(0, np.float32)
    exact = np.array(["exact" in pairs[k]["sources"] for k in keys], dtype=bool)
    dup = is_duplicate(sims, hash_d, thresholds) | exact
    inliers: dict[int, int] = {}
    if sims is not None and paths is not None and thresholds.geo_inliers > 0:
        # Third stage, only for the uncertain band: local features + RANSAC.
        band = np.nonzero(~dup & (sims >= thresholds.cnn_geo) & (sims < thresholds.cnn_any))[0]
        verifier = GeometricVerifier()
        for i in band.tolist():
            a, b = keys[i]
            inliers[i] = verifier.inliers(paths[a], paths[b])
            dup[i] = inliers[i] >= thresholds.geo_inliers
    return [Pair(a, b, None if sims is None else float(sims[i]), int(hash_d[i]),
                 tuple(sorted(pairs[(a, b)]["sources"])), bool(dup[i]), inliers.get(i))
            for i, (a, b) in enumerate(keys)]


def _add(pairs: dict, key: tuple[int, int], source: str, hash_distance: int | None = None) -> None:
    entry = pairs.setdefault(key, {"sources": set()})
    entry["sources"].add(source)
    if hash_distance is not None:
        entry["hash"] = min(hash_distance, entry.get("hash", FAR))


def _fill_hash_distances(pairs: dict, variants: dict[int, np.ndarray]) -> None:
    """Variant-hash distances of pairs found only by other sources (for the rule)."""
    from ..descriptors.hashing import hamming_distance

    todo = [k for k, v in pairs.items() if "hash" not in v and k[0] in variants and k[1] in variants]
    if not todo:
        return
    a = np.stack([variants[k[0]] for k in todo])          # (m, V, bytes)
    b = np.stack([variants[k[1]][0] for k in todo])       # (m, bytes) identity of b
    b_var = np.stack([variants[k[1]] for k in todo])
    a_id = a[:, 0]
    v = a.shape[1]
    d1 = hamming_distance(a.reshape(-1, a.shape[2]), np.repeat(b, v, axis=0)).reshape(-1, v).min(axis=1)
    d2 = hamming_distance(b_var.reshape(-1, a.shape[2]), np.repeat(a_id, v, axis=0)).reshape(-1, v).min(axis=1)
    for k, d in zip(todo, np.minimum(d1, d2).tolist()):
        pairs[k]["hash"] = int(d)


def _similarity_fn(vectors: dict[int, np.ndarray] | None, hash_fallback: dict[tuple[int, int], int]):
    def similarity(a: int, b: int) -> float:
        if vectors is not None and a in vectors and b in vectors:
            return float(np.dot(vectors[a], vectors[b]))
        # Without CNN vectors: 1 - hash distance / bits-ish, a coarse stand-in.
        return 1.0 - hash_fallback.get(ordered(a, b), 64) / 64.0
    return similarity


# --------------------------------------------------------------------------- searches
def find_duplicates(coll, thresholds: Thresholds | None = None, policy: str = "resolution",
                    progress: bool = False, candidate_pairs_only: bool = False) -> DedupResult:
    """Every duplicate group among a collection's stored images.

    Args:
        coll: an open :class:`~lookalike.collection.Collection` with a phash and/or cnn descriptor.
        thresholds: decision thresholds (default: the collection's calibrated ones, else
            :class:`Thresholds` defaults).
        policy: keeper policy (see :mod:`lookalike.dedup.groups`).
        candidate_pairs_only: score candidate pairs but skip grouping (calibration).

    Returns:
        :class:`DedupResult`; ``skipped`` lists files the collection could not read.
    """
    from .calibrate import load_thresholds

    thresholds = thresholds or load_thresholds(coll.directory)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    hash_key, cnn_key = descriptor_keys(coll)
    items = _items(coll)
    skipped = list(coll.failures())
    pairs: dict[tuple[int, int], dict] = {}

    t = time.perf_counter()
    for a, b in exact_duplicate_pairs({i: it["content_hash"] for i, it in items.items()}):
        _add(pairs, ordered(a, b), "exact", 0)
    timings["exact"] = time.perf_counter() - t

    variants: dict[int, np.ndarray] = {}
    if hash_key is not None:
        t = time.perf_counter()
        store = _variant_store(coll, hash_key)
        bar = _bar(progress, len([i for i in items if i not in store.rows]), "hashing variants")
        skipped += [s for s in store.update(items.values(), progress=bar.advance) if s not in skipped]
        bar.close()
        ids, var = store.get(sorted(items))
        variants = dict(zip(ids.tolist(), var))
        timings["variants"] = time.perf_counter() - t
        t = time.perf_counter()
        searcher = make_range_searcher(coll.index(hash_key), thresholds.hash_radius)
        for key, dist in hash_candidates(searcher, ids, var, thresholds.hash_radius).items():
            if key[0] in items and key[1] in items:
                _add(pairs, key, "hash", dist)
        timings["hash_search"] = time.perf_counter() - t

    vectors = None
    if cnn_key is not None:
        t = time.perf_counter()
        cnn_ids, cnn_vecs = coll.vectors(cnn_key)
        if thresholds.cnn_k > 0:
            index = coll.index(cnn_key)
            floor = min(thresholds.cnn_any, thresholds.cnn_hash)
            for key, _ in cnn_neighbour_candidates(index, cnn_ids, cnn_vecs, thresholds.cnn_k, floor).items():
                _add(pairs, key, "cnn")
        vectors = dict(zip(cnn_ids.tolist(), cnn_vecs))
        timings["cnn_search"] = time.perf_counter() - t
        _fill_hash_distances(pairs, variants)
        pairs = {k: v for k, v in pairs.items() if k[0] in vectors and k[1] in vectors or "exact" in v["sources"]}

    t = time.perf_counter()
    scored = _score(pairs, vectors, thresholds, {i: it["path"] for i, it in items.items()})
    timings["verify"] = time.perf_counter() - t
    stats = {"items": len(items), "skipped": len(skipped), "candidate_pairs": len(scored),
             "hash_candidates": sum("hash" in p.sources for p in scored),
             "cnn_candidates": sum("cnn" in p.sources for p in scored),
             "exact_pairs": sum("exact" in p.sources for p in scored),
             "geometric_checks": sum(p.inliers is not None for p in scored),
             "duplicate_pairs": sum(p.duplicate for p in scored)}
    if candidate_pairs_only:
        return DedupResult([], skipped, scored, stats, thresholds)
    t = time.perf_counter()
    accepted = [(p.a, p.b) for p in scored if p.duplicate]
    hash_fallback = {(p.a, p.b): p.hash_distance for p in scored}
    groups = build_groups(accepted, items, _similarity_fn(vectors, hash_fallback), policy)
    timings["group"] = time.perf_counter() - t
    stats["groups"] = len(groups)
    stats["seconds"] = {k: round(v, 4) for k, v in timings.items()}
    stats["seconds"]["total"] = round(time.perf_counter() - started, 4)
    return DedupResult(groups, skipped, scored, stats, thresholds)


def check_new(coll, files: Sequence[str | os.PathLike], thresholds: Thresholds | None = None,
              policy: str = "resolution", progress: bool = False) -> DedupResult:
    """Check new image files against a collection (the stored images are not re-read).

    Each new file is decoded once (content hash, variant hashes, CNN vector); candidates
    come from the collection's hash index (range search) and CNN index (k nearest), plus
    the new files among themselves. Groups contain at least one new file; new files get
    negative ids in ``pairs``.
    """
    from ..descriptors.hashing import hamming_distance, hash_variants
    from ..extraction import content_hash
    from ..images import adapt_pixels, load_image
    from .calibrate import load_thresholds

    thresholds = thresholds or load_thresholds(coll.directory)
    started = time.perf_counter()
    hash_key, cnn_key = descriptor_keys(coll)
    hash_d = coll.descriptor(hash_key) if hash_key else None
    cnn_d = coll.descriptor(cnn_key) if cnn_key else None
    new_items: dict[int, dict[str, Any]] = {}
    new_variants: dict[int, np.ndarray] = {}
    new_vectors: dict[int, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    bar = _bar(progress, len(files), "describing new files")
    for n, path in enumerate(files, 1):
        path = Path(path).resolve()
        try:
            data = path.read_bytes()
            loaded = load_image(data, mode="RGB")
        except (OSError, ImageLoadError) as exc:
            skipped.append((str(path), getattr(exc, "reason", None) or str(exc)))
            bar.advance(1)
            continue
        new_id = -n
        stat = path.stat()
        new_items[new_id] = {"path": str(path), "content_hash": content_hash(data), "size": stat.st_size,
                             "mtime": stat.st_mtime, "width": loaded.width, "height": loaded.height}
        if hash_d is not None:
            new_variants[new_id] = hash_variants(loaded.pixels, hash_d.name, hash_d.dim)
        if cnn_d is not None:
            pixels = adapt_pixels(loaded.pixels, cnn_d.image_mode, cnn_d.max_side)
            new_vectors[new_id] = cnn_d.transform_pixels([pixels])[0]
        bar.advance(1)
    bar.close()
    new_ids = sorted(new_items)
    pairs: dict[tuple[int, int], dict] = {}
    stored_hashes = {}
    if new_ids:
        wanted = sorted({it["content_hash"] for it in new_items.values()})
        for row in coll.items():
            if row["content_hash"] in wanted:
                stored_hashes[row["id"]] = row["content_hash"]
    for a, b in exact_duplicate_pairs({**stored_hashes, **{i: it["content_hash"] for i, it in new_items.items()}}):
        if a < 0 or b < 0:
            _add(pairs, ordered(a, b), "exact", 0)
    if hash_d is not None and new_ids:
        var = np.stack([new_variants[i] for i in new_ids])
        searcher = make_range_searcher(coll.index(hash_key), thresholds.hash_radius)
        for key, dist in hash_candidates(searcher, new_ids, var, thresholds.hash_radius).items():
            _add(pairs, key, "hash", dist)
        for i, a in enumerate(new_ids):  # new vs new: a handful, compared directly
            for b in new_ids[i + 1:]:
                d = min(int(hamming_distance(new_variants[a], np.broadcast_to(new_variants[b][0], new_variants[a].shape)).min()),
                        int(hamming_distance(new_variants[b], np.broadcast_to(new_variants[a][0], new_variants[b].shape)).min()))
                if d <= thresholds.hash_radius:
                    _add(pairs, ordered(a, b), "hash", d)
    vectors = None
    if cnn_d is not None and new_ids:
        q = np.stack([new_vectors[i] for i in new_ids])
        floor = min(thresholds.cnn_any, thresholds.cnn_hash)
        if thresholds.cnn_k > 0:
            for key, _ in cnn_neighbour_candidates(coll.index(cnn_key), new_ids, q, thresholds.cnn_k, floor).items():
                _add(pairs, key, "cnn")
            sims = q @ q.T
            for i, a in enumerate(new_ids):
                for j in range(i + 1, len(new_ids)):
                    if sims[i, j] >= floor:
                        _add(pairs, ordered(a, new_ids[j]), "cnn")
        stored = sorted({x for k in pairs for x in k if x >= 0})
        ids, vecs = coll.vectors(cnn_key, ids=stored)
        vectors = {**dict(zip(ids.tolist(), vecs)), **new_vectors}
        if hash_d is not None:
            store = _variant_store(coll, hash_key)
            sid, svar = store.get(stored)
            _fill_hash_distances(pairs, {**dict(zip(sid.tolist(), svar)), **new_variants})
        pairs = {k: v for k, v in pairs.items() if k[0] in vectors and k[1] in vectors or "exact" in v["sources"]}
    paths = {i: it["path"] for i, it in new_items.items()}
    stored_ids = sorted({x for k in pairs for x in k if x >= 0})
    for row in coll.items():
        if row["id"] in stored_ids:
            paths[row["id"]] = row["path"]
    scored = _score(pairs, vectors, thresholds, paths)
    accepted = [(p.a, p.b) for p in scored if p.duplicate]
    involved = sorted({x for p in accepted for x in (p[0], p[1]) if x >= 0})
    items = dict(new_items)
    for row in coll.items():
        if row["id"] in involved:
            items[row["id"]] = row
    hash_fallback = {(p.a, p.b): p.hash_distance for p in scored}
    groups = build_groups(accepted, items, _similarity_fn(vectors, hash_fallback), policy)
    stats = {"new_files": len(files), "skipped": len(skipped), "stored_items": len(coll),
             "candidate_pairs": len(scored), "duplicate_pairs": len(accepted), "groups": len(groups),
             "seconds": {"total": round(time.perf_counter() - started, 4)}}
    return DedupResult(groups, skipped, scored, stats, thresholds)


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
