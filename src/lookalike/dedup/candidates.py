"""Candidate pairs for duplicate detection: exact byte copies, then hash neighbours.

Stage one of the two-stage search. Nothing here compares all pairs: exact copies are
grouped by content hash (a dictionary), and hash neighbours come from a Hamming *range
search* of every image's variant hashes (itself, mirror, 90/180/270-degree rotations,
central 90% and 80%: :data:`lookalike.dedup.scan.DEDUP_VARIANTS`) against every image's
own hash, so a flipped, rotated or border-cropped copy lands within the radius.

The range search is FAISS's flat binary scan (SIMD, exact, ``O(n)`` per query) for small
sets and exact multi-index hashing (:mod:`.mih`, about ``O(1)`` per query) above
:data:`MIH_MIN_ITEMS` stored hashes, measured in ``bench/dedup_scale.py``.

The scan features of a collection's items live in a side file (:class:`ScanStore`)
beside its ``manifest.json``, keyed by item id and content hash: each stored image is
decoded for them once, and later runs only scan what is new or changed.

Distances are Hamming distances in bits (smaller = more similar).
"""
from __future__ import annotations

import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..atomic import atomic_write_bytes
from .scan import DEDUP_VARIANTS, SCAN_VERSION, THUMB, scan_files

SCAN_FILE = "dedup_scan.npz"
#: From this many stored hashes on, the range search uses multi-index hashing (when the
#: radius allows few probes: ``radius // 4 <= 2``); below it, FAISS's flat scan is faster.
MIH_MIN_ITEMS = 20_000


def ordered(a: int, b: int) -> tuple[int, int]:
    """An unordered pair as a canonical ``(smaller, larger)`` tuple."""
    return (a, b) if a < b else (b, a)


def exact_duplicate_pairs(content_hashes: Mapping[int, str]) -> list[tuple[int, int]]:
    """Pairs of items with identical bytes (same content hash).

    Every member of a group of ``m`` identical files is paired with the group's first
    (smallest) id: ``m - 1`` pairs, enough for union-find to join them all.

    Args:
        content_hashes: ``{item_id: content_hash}``; empty/None hashes are ignored.

    Returns:
        Sorted ``(first_id, other_id)`` pairs.
    """
    by_hash: dict[str, list[int]] = defaultdict(list)
    for item_id, chash in content_hashes.items():
        if chash:
            by_hash[chash].append(int(item_id))
    pairs = []
    for ids in by_hash.values():
        if len(ids) > 1:
            ids.sort()
            pairs.extend((ids[0], other) for other in ids[1:])
    return sorted(pairs)


# ------------------------------------------------------------------------- range search
def range_search(base: np.ndarray, queries: np.ndarray, radius: int, method: str = "auto"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ``(query row, base row, distance)`` within ``radius`` bits (exact).

    Args:
        base: ``(n, 8)`` uint8 packed 64-bit hashes.
        queries: ``(q, 8)`` uint8 packed hashes.
        radius: inclusive Hamming radius.
        method: ``auto`` (MIH from :data:`MIH_MIN_ITEMS` on), ``mih`` or ``flat``.
    """
    from .mih import MultiIndexHash, brute_force_range_search

    if method == "auto":
        method = "mih" if len(base) >= MIH_MIN_ITEMS and radius // 4 <= 2 else "flat"
    if len(base) == 0 or len(queries) == 0:
        e = np.zeros(0, np.int64)
        return e, e.copy(), e.copy()
    if method == "mih":
        return MultiIndexHash(base, radius=radius).range_search(queries, radius)
    return brute_force_range_search(base, queries, radius)


def hash_candidate_pairs(variants: np.ndarray, radius: int, method: str = "auto"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows whose variant hashes come within ``radius`` bits of the other's hash.

    Args:
        variants: ``(n, V, 8)`` uint8 variant hashes (row 0 of each: the image itself).

    Returns:
        ``(a, b, distance)`` ``(p,)`` int64 arrays with ``a < b``, each pair once, with the
        smallest distance over variants and directions.
    """
    n, v, _ = variants.shape
    qi, bi, dist = range_search(variants[:, 0], variants.reshape(-1, 8), radius, method)
    qi = qi // v
    keep = qi != bi
    a, b = np.minimum(qi[keep], bi[keep]), np.maximum(qi[keep], bi[keep])
    dist = dist[keep]
    order = np.lexsort((dist, b, a))
    a, b, dist = a[order], b[order], dist[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], dist[first]


# ------------------------------------------------------------------------- scan store
class ScanStore:
    """Scan features (variant hashes + thumbnails) of a collection's items, cached in
    ``dedup_scan.npz``; rows are keyed by item id and valid while the content hash is
    unchanged."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / SCAN_FILE
        self.rows: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}
        if self.path.exists():
            try:
                data = np.load(self.path, allow_pickle=False)
                if int(data["version"]) == SCAN_VERSION:
                    for i, h, v, t in zip(data["ids"].tolist(), data["hashes"].tolist(), data["variants"], data["thumbs"]):
                        self.rows[int(i)] = (str(h), v, t)
            except (OSError, ValueError, KeyError):
                self.rows = {}  # a damaged cache: recomputed by update

    def update(self, items: Iterable[Mapping], workers: int = 1,
               progress: Callable[[int], None] | None = None) -> list[tuple[str, str]]:
        """Scan items (``id``, ``path``, ``content_hash``) not cached yet; drop rows of items
        no longer listed. Returns ``(path, reason)`` of failures."""
        items = list(items)
        live = {int(it["id"]) for it in items}
        changed = len(self.rows) != len(live & set(self.rows))
        self.rows = {k: v for k, v in self.rows.items() if k in live}
        todo = [it for it in items if self.rows.get(int(it["id"]), ("\0",))[0] != (it.get("content_hash") or "")]
        if not todo:
            if changed:
                self.save()
            return []
        scan = scan_files([it["path"] for it in todo], workers=workers, progress=progress)
        by_path = {p: i for i, p in enumerate(scan.paths)}
        for it in todo:
            row = by_path.get(str(Path(it["path"]).resolve()))
            if row is not None:
                self.rows[int(it["id"])] = (it.get("content_hash") or "", scan.variants[row], scan.thumbs[row])
        self.save()
        return scan.failures

    def save(self) -> None:
        ids = np.array(sorted(self.rows), dtype=np.int64)
        empty_v = np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8)
        empty_t = np.zeros((0, 3, THUMB, THUMB), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, hashes=np.array([self.rows[i][0] for i in ids.tolist()], dtype=str),
                 variants=np.stack([self.rows[i][1] for i in ids.tolist()]) if len(ids) else empty_v,
                 thumbs=np.stack([self.rows[i][2] for i in ids.tolist()]) if len(ids) else empty_t,
                 version=np.array(SCAN_VERSION))
        atomic_write_bytes(self.path, buffer.getvalue())

    def get(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids present (m,), variants (m, V, 8), thumbs (m, 3, T, T))``."""
        present = [int(i) for i in ids if int(i) in self.rows]
        if not present:
            return (np.zeros(0, np.int64), np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8),
                    np.zeros((0, 3, THUMB, THUMB), np.uint8))
        return (np.array(present, np.int64), np.stack([self.rows[i][1] for i in present]),
                np.stack([self.rows[i][2] for i in present]))
