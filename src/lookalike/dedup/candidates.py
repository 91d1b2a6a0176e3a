"""Candidate pairs for duplicate detection: exact byte copies, then perceptual-hash neighbours.

Stage one of the two-stage search. Nothing here compares all pairs: exact copies are
grouped by content hash (a dictionary), and hash neighbours come from a Hamming *range
search* in a binary FAISS index. Each image is queried with the hashes of itself, its
mirror and its 90/180/270-degree rotations (:func:`lookalike.descriptors.hashing.hash_variants`),
so a flipped or rotated copy lands within the radius of the original.

Variant hashes need the pixels, which a collection does not keep, so they live in a
small side file (:class:`VariantStore`) beside the collection's ``manifest.json``,
keyed by item id and content hash: each image is decoded for it once, and later runs
only hash what is new or changed.

Distances are Hamming distances in bits (smaller = more similar).
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..descriptors.hashing import VARIANTS
from ..errors import ImageLoadError, InputError
from ..images import load_image
from ..index.faiss import atomic_write_bytes

VARIANTS_FILE = "dedup_variants.npz"
#: Above this many stored hashes the range search would use multi-index hashing (exact,
#: :class:`MultiHashRangeSearcher`) instead of FAISS's brute-force scan. Off (None) by
#: default: measured in bench/dedup_scale.py, FAISS's IndexBinaryMultiHash is slower
#: than the SIMD flat scan at the radii dedup uses (10 bits of 64) up to 10^6 hashes.
MULTIHASH_MIN_ITEMS: int | None = None


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
class MultiHashRangeSearcher:
    """Exact Hamming range search by multi-index hashing (FAISS ``IndexBinaryMultiHash``).

    The ``bits`` of each code are cut into ``nhash`` substrings of ``b`` bits, each
    indexed in a hash table. Two codes within ``radius`` bits differ, by the pigeonhole
    principle, in at most ``floor(radius / nhash)`` bits on at least one substring; probing
    every bucket within ``nflip = floor(radius / nhash)`` flips of each query substring
    therefore finds every neighbour, and FAISS then checks the full distance. With
    ``b`` near ``log2(n)`` a bucket holds about one code, so a query costs about
    ``nhash * sum_{i<=nflip} C(b, i)`` probes instead of ``n`` comparisons:
    sub-quadratic for all-pairs search.

    Args:
        codes: ``(n, bits/8)`` uint8 packed hashes.
        ids: ``(n,)`` int64 ids returned for them.
        radius: the largest Hamming distance the searcher must find (bits, inclusive).
        b: substring width (default: :meth:`best_width`, which grows with ``log n``).
    """

    def __init__(self, codes: np.ndarray, ids: np.ndarray, radius: int, b: int | None = None):
        import faiss

        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        self.bits = codes.shape[1] * 8
        self.radius = int(radius)
        self.b = int(b or self.best_width(len(codes), self.bits, self.radius))
        self.nhash = max(1, self.bits // self.b)
        self.nflip = self.radius // self.nhash
        self.ids = np.asarray(ids, dtype=np.int64)
        self._index = faiss.IndexBinaryMultiHash(self.bits, self.nhash, self.b)
        self._index.nflip = self.nflip
        self._index.add(codes)

    @staticmethod
    def best_width(n: int, bits: int, radius: int, probe_cost: float = 300.0) -> int:
        """Substring width minimising a simple cost model per query: probes x (one hash
        lookup, ~``probe_cost`` code comparisons as measured with FAISS here) + codes
        in the probed buckets x one comparison."""
        def cost(b: int) -> float:
            nhash = bits // b
            nflip = radius // nhash
            probes = nhash * sum(math.comb(b, i) for i in range(nflip + 1))
            return probes * (probe_cost + max(n, 1) / 2.0 ** b)
        return min((b for b in range(4, min(bits, 32) + 1) if bits // b >= 1), key=cost)

    def range_search(self, queries: np.ndarray, radius: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, ``(ids, distances)`` of all codes within ``radius`` bits, ascending."""
        radius = self.radius if radius is None else int(radius)
        if radius > self.radius:
            raise InputError(f"this searcher was built for radius <= {self.radius}, asked {radius}")
        q = np.ascontiguousarray(queries, dtype=np.uint8)
        lims, distances, internal = self._index.range_search(q, radius + 1)  # FAISS: strict <
        out = []
        for row in range(len(q)):
            d = distances[lims[row]:lims[row + 1]]
            i = self.ids[internal[lims[row]:lims[row + 1]]]
            order = np.argsort(d, kind="stable")
            out.append((i[order], d[order].astype(np.float32)))
        return out


def make_range_searcher(index, radius: int, multihash_min_items: int | None = MULTIHASH_MIN_ITEMS):
    """The collection's binary index, or multi-index hashing above
    ``multihash_min_items`` stored hashes (both exact)."""
    if multihash_min_items is None or index.ntotal < multihash_min_items:
        return index
    faiss_index = index._index  # codes in insertion order; tombstones dropped below
    codes = faiss_index.xb if hasattr(faiss_index, "xb") else None
    if codes is None:
        return index
    import faiss

    packed = faiss.vector_to_array(codes).reshape(-1, index.dim // 8)
    live = np.ones(len(packed), dtype=bool)
    if index.n_removed:
        live[np.fromiter(index._tombstones, dtype=np.int64)] = False
    return MultiHashRangeSearcher(packed[live], index._id_map[live], radius)


def hash_candidates(searcher, query_ids: Sequence[int], query_variants: np.ndarray, radius: int,
                    chunk: int = 20_000) -> dict[tuple[int, int], int]:
    """Candidate pairs from a Hamming range search with every variant hash of each query.

    Args:
        searcher: anything with ``range_search(queries, radius) -> [(ids, distances)]``
            (a binary :class:`~lookalike.index.faiss.FaissIndex` or :class:`MultiHashRangeSearcher`).
        query_ids: ``(n,)`` the ids of the queries (a hit on the query itself is dropped).
        query_variants: ``(n, V, bits/8)`` uint8: each query's variant hashes.
        radius: Hamming radius in bits (inclusive).

    Returns:
        ``{(a, b): smallest distance over variants}`` with ``a < b`` (when both are ids
        of the same store) -- for queries from outside the store the query id comes
        first as given (see :func:`hash_candidates_external`).
    """
    query_ids = np.asarray(query_ids, dtype=np.int64)
    n, n_variants, code = query_variants.shape
    best: dict[tuple[int, int], int] = {}
    for start in range(0, n, chunk):
        block = query_variants[start:start + chunk].reshape(-1, code)
        results = searcher.range_search(block, radius)
        for row, (ids, dists) in enumerate(results):
            q = int(query_ids[start + row // n_variants])
            for other, dist in zip(ids.tolist(), dists.tolist()):
                if other == q:
                    continue
                key = ordered(q, other)
                dist = int(round(dist))
                if dist < best.get(key, 1 << 30):
                    best[key] = dist
    return best


def variant_distance(variants_a: np.ndarray, hash_b: np.ndarray) -> int:
    """Smallest Hamming distance between any variant of ``a`` ``(V, bytes)`` and ``b`` ``(bytes,)``."""
    from ..descriptors.hashing import hamming_distance

    return int(np.min(hamming_distance(variants_a, np.broadcast_to(hash_b, variants_a.shape))))


# ------------------------------------------------------------------------- variant store
def _versions(gray: np.ndarray) -> list[np.ndarray]:
    """The image and its mirror and 90/180/270-degree rotations, in ``VARIANTS`` order
    (the same versions :func:`lookalike.descriptors.hashing.hash_variants` hashes)."""
    return [gray, gray[:, ::-1], np.rot90(gray, 1), np.rot90(gray, 2), np.rot90(gray, 3)]


def compute_variants(path: str | os.PathLike, family: str = "phash", bits: int = 64) -> np.ndarray:
    """``(V, bits/8)`` uint8 variant hashes of one image file (identity row first).

    Raises:
        ImageLoadError: the file cannot be decoded.
    """
    from ..descriptors.hashing import hash_variants
    from ..images import load_image

    return hash_variants(load_image(path, mode="L").pixels, family, bits)


class VariantStore:
    """Variant hashes of a collection's items, cached in ``dedup_variants.npz``.

    Rows are keyed by item id and valid while the item's content hash is unchanged.
    """

    def __init__(self, directory: str | os.PathLike, family: str = "phash", bits: int = 64):
        from ..descriptors.hashing import make_hash

        self.path = Path(directory) / VARIANTS_FILE
        self.family, self.bits = family, int(bits)
        self.descriptor = make_hash(family, bits)
        self.rows: dict[int, tuple[str, np.ndarray]] = {}
        if self.path.exists():
            try:
                data = np.load(self.path, allow_pickle=False)
                if str(data["family"]) == family and int(data["bits"]) == self.bits:
                    for item_id, chash, var in zip(data["ids"].tolist(), data["hashes"].tolist(), data["variants"]):
                        self.rows[int(item_id)] = (str(chash), var)
            except (OSError, ValueError, KeyError):
                self.rows = {}  # a damaged cache: recomputed below

    def update(self, items: Iterable[Mapping], progress: Callable[[int], None] | None = None,
               batch_size: int = 128) -> list[tuple[str, str]]:
        """Hash the variants of items (``id``, ``path``, ``content_hash``) not cached yet;
        drop rows of items no longer listed. Returns ``(path, reason)`` of failures."""
        items = list(items)
        failed = []
        live = {int(it["id"]) for it in items}
        changed = len(self.rows) != len(live & set(self.rows))
        self.rows = {k: v for k, v in self.rows.items() if k in live}
        todo = [it for it in items
                if self.rows.get(int(it["id"]), ("\0",))[0] != (it.get("content_hash") or "")]
        # Batches: the hash family vectorises over same-sized images (one Lanczos matrix
        # per size), so hashing 5 versions of many images at once is much cheaper.
        for start in range(0, len(todo), batch_size):
            batch, pixels = [], []
            for it in todo[start:start + batch_size]:
                try:
                    pixels.append(self._thumbnail(load_image(it["path"], mode="L").pixels))
                    batch.append(it)
                except ImageLoadError as exc:
                    failed.append((str(it["path"]), exc.reason))
            if batch:
                versions = [np.ascontiguousarray(v) for p in pixels for v in _versions(p)]
                codes = self.descriptor.transform_pixels(versions)
                codes = codes.reshape(len(batch), len(VARIANTS), -1)
                for it, code in zip(batch, codes):
                    self.rows[int(it["id"])] = (it.get("content_hash") or "", code)
                changed = True
            if progress is not None:
                progress(len(todo[start:start + batch_size]))
        if changed:
            self.save()
        return failed

    def _thumbnail(self, gray: np.ndarray) -> np.ndarray:
        """pHash's first step (the Lanczos thumbnail) done once per image: resizing
        commutes with flips and quarter turns, so the five versions are cut from the
        thumbnail instead of resizing five full-size images. The identity row is
        bit-identical to the phash descriptor; rotated rows can differ by a bit or two
        (Pillow rounds between its two resampling passes, whose order follows the axes)."""
        if self.family != "phash":
            return gray
        from ..descriptors.hashing import lanczos_resize

        side = self.descriptor.hash_size * self.descriptor.highfreq_factor
        return lanczos_resize(gray[None], side, side)[0]

    def save(self) -> None:
        import io

        ids = np.array(sorted(self.rows), dtype=np.int64)
        variants = (np.stack([self.rows[i][1] for i in ids.tolist()]) if len(ids)
                    else np.zeros((0, 5, self.bits // 8), np.uint8))
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, hashes=np.array([self.rows[i][0] for i in ids.tolist()], dtype=str),
                 variants=variants, family=np.array(self.family), bits=np.array(self.bits))
        atomic_write_bytes(self.path, buffer.getvalue())

    def get(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids present (m,), variants (m, V, bits/8))`` for the requested ids."""
        present = [int(i) for i in ids if int(i) in self.rows]
        if not present:
            return np.zeros(0, np.int64), np.zeros((0, 5, self.bits // 8), np.uint8)
        return np.array(present, np.int64), np.stack([self.rows[i][1] for i in present])
