"""FAISS-backed indexes: exact, IVF, PQ, IVF-PQ, HNSW, binary (Hamming) and factory strings.

One wrapper class, :class:`FaissIndex`, owns a FAISS index plus what FAISS does not
know: our metric convention (distances ascending), external int64 ids, tombstones for
index types that cannot delete (HNSW), and a self-describing file format.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import CollectionError, ConfigError, InputError, NotFittedError
from .base import (SearchResult, default_nlist, int_param, parse_index_spec, prepare_vectors,
                   resolve_auto_spec)

FILE_MAGIC = b"LKIDX\x01"
FORMAT_VERSION = 1
FLOAT_METRICS = ("l2", "cosine", "ip")

#: Search-time knobs accepted by ``search(..., **knobs)`` and in specs.
SEARCH_KNOBS = ("nprobe", "efSearch", "k_factor")


def _faiss():
    import faiss  # heavy import kept out of ``import lookalike``

    return faiss


def set_faiss_threads(n: int) -> None:
    """Set FAISS's OpenMP thread count. On a busy 2-core box 1 thread can beat 2 on
    small query batches (threads wait at barriers): measure both (bench/search.py)."""
    _faiss().omp_set_num_threads(int(n))


def _factory_string(kind: str, params: dict[str, str], dim: int, n_hint: int) -> str:
    """Our short specs expressed as FAISS factory strings (trained lazily where needed)."""
    nlist = int_param(params, "nlist", None) or default_nlist(n_hint)
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{int_param(params, 'M', 32)}"
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    m = int_param(params, "m", None)
    if m is None:
        m = next(c for c in (64, 32, 16, 8, 4, 2, 1) if dim % c == 0 and c <= max(1, dim // 4))
    if dim % m:
        raise ConfigError(f"PQ needs m dividing dim: m={m}, dim={dim}")
    nbits = int_param(params, "nbits", 8)
    if kind == "pq":
        return f"PQ{m}x{nbits}np"
    if kind == "ivfpq":
        # 'np' skips polysemous training, which takes minutes and helps little here.
        refine = ",RFlat" if params.get("refine", "false").lower() in ("1", "true", "yes") else ""
        return f"IVF{nlist},PQ{m}x{nbits}np{refine}"
    if kind == "ivfpqfs":
        return f"IVF{nlist},PQ{m}x4fs,RFlat"
    raise ConfigError(f"cannot build a float index of kind {kind!r}")


class FaissIndex:
    """A FAISS index speaking lookalike's conventions.

    Args:
        spec: ``flat``, ``hnsw:M=32,efSearch=64``, ``ivf:nlist=256,nprobe=16``,
            ``pq:m=16``, ``ivfpq:nlist=256,m=16,nprobe=16[,refine=true]``,
            ``ivfpqfs:nlist=..,m=..`` (4-bit fast-scan PQ + exact re-rank), ``binary``
            (``binary:kind=flat|hnsw|ivf``), ``auto`` or ``faiss:<factory string>``.
        dim: vector dimension (for ``hamming``: number of bits, a multiple of 8).
        metric: ``l2``, ``cosine``, ``ip`` or ``hamming``.
        n_hint: expected number of vectors (sizes ``nlist`` and resolves ``auto``).
    """

    def __init__(self, spec: str, dim: int, metric: str, n_hint: int = 0):
        if metric not in FLOAT_METRICS + ("hamming",):
            raise ConfigError(f"unknown metric {metric!r}; valid: l2, cosine, ip, hamming")
        if dim <= 0:
            raise ConfigError(f"dim must be positive, got {dim}")
        self.requested_spec = spec
        self.auto_reason = ""
        if spec.strip().lower().startswith("auto"):
            spec, self.auto_reason = resolve_auto_spec(n_hint, dim, metric)
        self.spec = spec
        self.dim = int(dim)
        self.metric = metric
        self.kind, self.params = parse_index_spec(spec)
        if metric == "hamming" and self.kind not in ("binary", "flat", "faiss"):
            raise ConfigError(f"hamming vectors need a binary index, not {self.kind!r}")
        if metric != "hamming" and self.kind == "binary":
            raise ConfigError(f"a binary index needs the hamming metric, not {metric!r}")
        self.knobs = {k: int(self.params[k]) for k in SEARCH_KNOBS if k in self.params}
        self._tombstones: set[int] = set()
        self._index = self._build(n_hint)

    # -- construction -----------------------------------------------------------------
    @property
    def is_binary(self) -> bool:
        return self.metric == "hamming"

    def _build(self, n_hint: int):
        # Internal FAISS ids are always 0..n-1 in insertion order; ``self._id_map`` maps
        # them to the caller's int64 ids. Removal marks tombstones (filtered with an
        # IDSelector, or by over-fetching where FAISS takes no selector) instead of
        # FAISS's remove_ids, which renumbers flat indexes and is missing on HNSW.
        self._id_map = np.zeros(0, dtype=np.int64)
        self._id_lookup = None  # _id_map plus a trailing -1, built on first search
        self._trained = False
        faiss = _faiss()
        if self.is_binary:
            if self.dim % 8:
                raise ConfigError(f"binary index needs dim (bits) divisible by 8, got {self.dim}")
            kind = self.params.get("kind", "flat") if self.kind == "binary" else "flat"
            if self.kind == "faiss":
                return faiss.index_binary_factory(self.dim, self.params["factory"])
            if kind == "flat":
                return faiss.IndexBinaryFlat(self.dim)
            if kind == "hnsw":
                return faiss.IndexBinaryHNSW(self.dim, int_param(self.params, "M", 16))
            if kind == "ivf":
                nlist = int_param(self.params, "nlist", None) or default_nlist(n_hint)
                quantizer = faiss.IndexBinaryFlat(self.dim)
                index = faiss.IndexBinaryIVF(quantizer, self.dim, nlist)
                index._quantizer = quantizer
                index.nprobe = int_param(self.params, "nprobe", 8)
                return index
            raise ConfigError(f"binary kind must be flat, hnsw or ivf, not {kind!r}")
        factory = self.params["factory"] if self.kind == "faiss" else _factory_string(
            self.kind, self.params, self.dim, n_hint)
        faiss_metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        try:
            index = faiss.index_factory(self.dim, factory, faiss_metric)
        except RuntimeError as exc:
            raise ConfigError(f"FAISS cannot build {factory!r}: {str(exc).splitlines()[0]}") from None
        if self.kind == "hnsw":
            index.hnsw.efConstruction = int_param(self.params, "efConstruction", 80)
            index.hnsw.efSearch = int_param(self.params, "efSearch", 64)
        # The spec's search knobs become the index's own settings (FAISS serialises
        # them), so a search without per-call knobs needs no parameter object at all.
        for key, value in self.knobs.items():
            if key == "efSearch" and self.kind == "hnsw":
                continue  # set above
            refine = faiss.downcast_index(index)
            if key == "k_factor" and isinstance(refine, faiss.IndexRefine):
                refine.k_factor = float(value)  # ParameterSpace does not know this one
                continue
            try:
                faiss.ParameterSpace().set_index_parameter(index, key, value)
            except RuntimeError:
                raise ConfigError(f"index {self.spec!r} has no search knob {key!r}") from None
        return index

    # -- state ------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Number of live vectors (removed ones excluded)."""
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def n_removed(self) -> int:
        """Tombstoned vectors still occupying space (rebuild to reclaim)."""
        return len(self._tombstones)

    @property
    def is_trained(self) -> bool:
        # Once trained, an index stays trained: remember it (a SWIG call per search
        # costs more than it looks after FAISS has flushed the caches).
        if not self._trained:
            self._trained = bool(self._index.is_trained)
        return self._trained

    @property
    def ids(self) -> np.ndarray:
        """Live ids, in insertion order."""
        if not self._tombstones:
            return self._id_map.copy()
        dead = np.fromiter(self._tombstones, dtype=np.int64)
        return np.delete(self._id_map, dead)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "requested_spec": self.requested_spec, "dim": self.dim,
                "metric": self.metric, "ntotal": self.ntotal, "removed": self.n_removed,
                "trained": self.is_trained, "auto_reason": self.auto_reason}

    def __repr__(self) -> str:
        return f"FaissIndex({self.spec!r}, dim={self.dim}, metric={self.metric!r}, ntotal={self.ntotal})"

    # -- vectors ----------------------------------------------------------------------
    def _prepare(self, x: np.ndarray, what: str) -> np.ndarray:
        return prepare_vectors(x, self.dim, self.metric, what)

    def _nlist(self) -> int:
        try:
            return int(_faiss().extract_index_ivf(self._index).nlist)
        except (RuntimeError, TypeError, AttributeError):
            return int(getattr(self._index, "nlist", 0) or 0)

    def train(self, x: np.ndarray) -> "FaissIndex":
        """Train quantisers (IVF centroids, PQ codebooks); a no-op for flat/HNSW."""
        x = self._prepare(x, "train")
        if self.is_trained:
            return self
        if len(x) == 0:
            raise InputError("train: no vectors")
        nlist = self._nlist()
        if nlist and len(x) < nlist:
            raise InputError(f"train: {len(x)} vectors cannot train {nlist} IVF lists; "
                             "give more vectors or a smaller nlist")
        self._index.train(x)
        return self

    def add(self, x: np.ndarray, ids: Iterable[int]) -> None:
        """Add vectors with their int64 ids (trains first on ``x`` when untrained)."""
        x = self._prepare(x, "add")
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).ravel()
        if len(ids) != len(x):
            raise InputError(f"add: {len(x)} vectors but {len(ids)} ids")
        if len(x) == 0:
            return
        if not self.is_trained:
            self.train(x)
        self._index.add(x)
        self._id_map = np.concatenate([self._id_map, ids])
        self._id_lookup = None

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids; returns how many live vectors were removed. Space is reclaimed
        only by a rebuild (see ``n_removed``)."""
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        if len(ids) == 0 or len(self._id_map) == 0:
            return 0
        internal = np.nonzero(np.isin(self._id_map, ids))[0].tolist()
        new = set(internal) - self._tombstones
        self._tombstones |= new
        return len(new)

    # -- search -----------------------------------------------------------------------
    def _params(self, index, sel, knobs: dict[str, int]):
        """The right SearchParameters subclass for ``index`` (FAISS needs the exact
        type per level; a base object would reset nprobe to 1 on IVF), or None where
        the index takes no parameters (PQ, binary) and the caller must over-fetch."""
        faiss = _faiss()
        index = faiss.downcast_index(index)
        if isinstance(index, faiss.IndexRefine):
            base = self._params(index.base_index, sel, knobs)
            if base is None and sel is not None:
                return None
            p = faiss.IndexRefineSearchParameters()
            p.k_factor = float(knobs.get("k_factor", index.k_factor))
            if base is not None:
                p.base_index_params = base
            p._keep = base
            return p
        if isinstance(index, faiss.IndexPreTransform):
            inner = self._params(index.index, sel, knobs)
            if inner is None:
                return None
            p = faiss.SearchParametersPreTransform()
            p.index_params = inner
            p._keep = inner
            return p
        if isinstance(index, faiss.IndexIVF):
            p = faiss.SearchParametersIVF()
            p.nprobe = int(knobs.get("nprobe", index.nprobe))
        elif isinstance(index, faiss.IndexHNSW):
            p = faiss.SearchParametersHNSW()
            p.efSearch = int(knobs.get("efSearch", index.hnsw.efSearch))
        elif isinstance(index, (faiss.IndexFlat, faiss.IndexScalarQuantizer)):
            p = faiss.SearchParameters()
        else:
            return None
        if sel is not None:
            p.sel = sel
        return p

    def _internal_mask(self, allowed_ids) -> np.ndarray | None:
        """Bool mask over internal ids of what may be returned, or None for everything."""
        mask = None
        if allowed_ids is not None:
            allowed = np.asarray(allowed_ids if isinstance(allowed_ids, np.ndarray)
                                 else list(allowed_ids), dtype=np.int64)
            mask = np.isin(self._id_map, allowed)
        if self._tombstones:
            if mask is None:
                mask = np.ones(len(self._id_map), dtype=bool)
            mask[np.fromiter(self._tombstones, dtype=np.int64)] = False
        return mask

    def search(self, queries: np.ndarray, k: int = 10, allowed_ids=None, **knobs) -> SearchResult:
        """Top-k nearest neighbours.

        Args:
            queries: ``(n, dim) float32`` (``(n, dim/8) uint8`` for hamming).
            k: neighbours per query.
            allowed_ids: optional ids to restrict the search to (metadata filters).
            **knobs: per-call ``nprobe``, ``efSearch``, ``k_factor``.

        Returns:
            :class:`SearchResult`: ids ``(n, k) int64`` (-1 padded), distances ascending.
        """
        if knobs:
            unknown = set(knobs) - set(SEARCH_KNOBS)
            if unknown:
                raise ConfigError(f"unknown search knobs {sorted(unknown)}; valid: {', '.join(SEARCH_KNOBS)}")
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        q = self._prepare(queries, "search")
        n = len(q)
        if len(self._id_map) == 0 or n == 0:  # _id_map has one entry per FAISS vector
            return self._empty(n, k)
        if not self.is_trained:
            raise NotFittedError(f"index {self.spec!r} is not trained")
        if allowed_ids is None and not knobs and not self._tombstones:
            # The common case: no filter, no per-call knobs, nothing removed. Straight
            # to FAISS's C++ search (q is already checked: its Python wrapper would only
            # check it again), and map its output in place.
            if self.is_binary:
                distances, internal = self._index.search(q, k)
            else:
                faiss = _faiss()
                distances, internal = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
                self._index.search_c(n, faiss.swig_ptr(q), k, faiss.swig_ptr(distances),
                                     faiss.swig_ptr(internal), None)
            return SearchResult(self._lookup_ids(internal), self._to_ascending(distances, internal, copy=False))
        merged = {key: int(v) for key, v in knobs.items()}  # per call; the spec's are built in
        mask = self._internal_mask(allowed_ids)
        if mask is not None and not mask.any():
            return self._empty(n, k)
        faiss = _faiss()
        sel = keep = None
        if mask is not None and not self.is_binary:
            bitmap = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
            keep = bitmap
        params = None if self.is_binary or (sel is None and not merged) else \
            self._params(self._index, sel, merged)
        if params is None and not self.is_binary and merged:
            for key, value in merged.items():  # knobs without a params object
                try:
                    faiss.ParameterSpace().set_index_parameter(self._index, key, value)
                except RuntimeError:
                    pass
        if mask is not None and (params is None or self.is_binary):
            distances, internal = self._search_overfetch(q, k, mask)
        else:
            distances, internal = self._index.search(q, k, params=params)
        del keep
        return SearchResult(self._lookup_ids(internal), self._to_ascending(distances, internal, copy=False))

    @staticmethod
    def _empty(n: int, k: int) -> SearchResult:
        return SearchResult(np.full((n, k), -1, np.int64), np.full((n, k), np.inf, np.float32))

    def _lookup_ids(self, internal: np.ndarray) -> np.ndarray:
        """Internal FAISS ids -> our int64 ids, -1 staying -1 (one gather: the lookup
        table ends with a -1 that internal id -1 indexes)."""
        lookup = self._id_lookup
        if lookup is None or len(lookup) != len(self._id_map) + 1:
            lookup = self._id_lookup = np.append(self._id_map, np.int64(-1))
        return lookup[internal]

    def _search_overfetch(self, q: np.ndarray, k: int, mask: np.ndarray):
        """For indexes that take no selector: fetch more and drop what the mask forbids."""
        total = int(self._index.ntotal)
        fetch = min(total, max(k, 1) + int((~mask).sum()))
        if mask.sum() < total / 2:
            fetch = total  # a narrow filter: scan everything rather than loop
        distances, internal = self._index.search(q, fetch)
        out_i = np.full((len(q), k), -1, np.int64)
        out_d = np.zeros((len(q), k), dtype=distances.dtype)
        for row in range(len(q)):
            ok = internal[row] >= 0
            ok[ok] = mask[internal[row][ok]]
            keep_i, keep_d = internal[row][ok][:k], distances[row][ok][:k]
            out_i[row, :len(keep_i)] = keep_i
            out_d[row, :len(keep_d)] = keep_d
        return out_d, out_i

    def range_search(self, queries: np.ndarray, radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """All neighbours within ``radius`` (our distance units), per query: (ids, distances)
        sorted ascending. For hamming the radius is a bit count (inclusive)."""
        q = self._prepare(queries, "range_search")
        if self.is_binary:
            # FAISS binary range search is strict (<): +1 makes our radius inclusive.
            lims, distances, internal = self._index.range_search(q, int(radius) + 1)
        elif self.metric == "l2":
            lims, distances, internal = self._index.range_search(q, float(radius) ** 2)
        elif self.metric == "cosine":
            lims, distances, internal = self._index.range_search(q, 1.0 - float(radius))
        else:
            lims, distances, internal = self._index.range_search(q, -float(radius))
        mask = self._internal_mask(None)
        out = []
        for row in range(len(q)):
            row_i = internal[lims[row]:lims[row + 1]].astype(np.int64)
            row_d = distances[lims[row]:lims[row + 1]]
            if mask is not None:
                row_d, row_i = row_d[mask[row_i]], row_i[mask[row_i]]
            row_ids = self._id_map[row_i]
            row_d = self._to_ascending(row_d[None, :], row_ids[None, :])[0]
            order = np.argsort(row_d, kind="stable")
            out.append((row_ids[order], row_d[order]))
        return out

    def _to_ascending(self, distances: np.ndarray, ids: np.ndarray, copy: bool = True) -> np.ndarray:
        """FAISS distances -> ours (ascending, ``inf`` where the id is -1). ``copy=False``
        works in place on a float32 array the caller owns (FAISS's fresh output)."""
        d = distances.astype(np.float32, copy=copy)
        if self.metric == "l2":
            np.sqrt(np.maximum(d, 0, out=d), out=d)
        elif self.metric == "cosine":
            np.subtract(1.0, d, out=d)
        elif self.metric == "ip":
            np.negative(d, out=d)
        # FAISS pads short rows at their end, so the last column tells whether any
        # row is short (a scalar test for the common single query).
        if ids.size == 0:
            d[ids < 0] = np.inf
            return d
        last = ids[:, -1]
        if (last[0] < 0) if len(last) == 1 else (last < 0).any():
            d[ids < 0] = np.inf
        return d

    # -- persistence ------------------------------------------------------------------
    def to_bytes(self, extra: dict | None = None) -> bytes:
        return bytes(self._to_buffer(extra))

    def _to_buffer(self, extra: dict | None = None) -> bytearray:
        """The file's bytes in one buffer (the FAISS blob copied once: indexes run to GBs)."""
        faiss = _faiss()
        blob = (faiss.serialize_index_binary(self._index) if self.is_binary
                else faiss.serialize_index(self._index))
        tomb = np.array(sorted(self._tombstones), dtype=np.int64)
        header = json.dumps({
            "format_version": FORMAT_VERSION, "spec": self.spec,
            "requested_spec": self.requested_spec, "auto_reason": self.auto_reason,
            "dim": self.dim, "metric": self.metric, "n_ids": len(self._id_map),
            "n_tombstones": len(tomb), "extra": extra or {},
        }).encode()
        out = bytearray(b"".join([FILE_MAGIC, struct.pack("<Q", len(header)), header,
                                  self._id_map.astype("<i8").tobytes(), tomb.astype("<i8").tobytes()]))
        out += memoryview(blob)
        return out

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """Write atomically (temp file + rename): a crash leaves the old file intact."""
        atomic_write_bytes(Path(path), self._to_buffer(extra))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> tuple["FaissIndex", dict]:
        faiss = _faiss()
        if not data.startswith(FILE_MAGIC):
            raise CollectionError(f"{source}: not a lookalike index file")
        (size,) = struct.unpack("<Q", data[len(FILE_MAGIC):len(FILE_MAGIC) + 8])
        start = len(FILE_MAGIC) + 8
        try:
            header = json.loads(data[start:start + size])
        except ValueError:
            raise CollectionError(f"{source}: index header is corrupt") from None
        if header.get("format_version") != FORMAT_VERSION:
            raise CollectionError(f"{source}: index format {header.get('format_version')} "
                                  f"is not supported (expected {FORMAT_VERSION})")
        self = cls.__new__(cls)
        self.requested_spec = header["requested_spec"]
        self.auto_reason = header.get("auto_reason", "")
        self.spec = header["spec"]
        self.dim = header["dim"]
        self.metric = header["metric"]
        self.kind, self.params = parse_index_spec(self.spec)
        self.knobs = {k: int(self.params[k]) for k in SEARCH_KNOBS if k in self.params}
        offset = start + size
        n_ids, n_tomb = header["n_ids"], header["n_tombstones"]
        self._id_map = np.frombuffer(data, dtype="<i8", count=n_ids, offset=offset).astype(np.int64)
        self._id_lookup = None
        self._trained = False
        offset += 8 * n_ids
        self._tombstones = set(np.frombuffer(data, dtype="<i8", count=n_tomb, offset=offset).tolist())
        offset += 8 * n_tomb
        blob = np.frombuffer(data, dtype=np.uint8, offset=offset)
        try:
            self._index = (faiss.deserialize_index_binary(blob) if self.metric == "hamming"
                           else faiss.deserialize_index(blob))
        except RuntimeError as exc:
            raise CollectionError(f"{source}: FAISS data is corrupt: {str(exc).splitlines()[0]}") from None
        if self._index.ntotal != n_ids:
            raise CollectionError(f"{source}: {self._index.ntotal} vectors but {n_ids} ids")
        return self, header.get("extra", {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaissIndex":
        return cls.load_with_extra(path)[0]

    @classmethod
    def load_with_extra(cls, path: str | os.PathLike) -> tuple["FaissIndex", dict]:
        path = Path(path)
        if not path.exists():
            raise CollectionError(f"{path}: index file missing")
        return cls.from_bytes(path.read_bytes(), str(path))


def make_index(spec: str, dim: int, metric: str, n_hint: int = 0) -> FaissIndex:
    """Build an empty index from a spec (see :class:`FaissIndex`)."""
    return FaissIndex(spec, dim, metric, n_hint=n_hint)


def load_index(path: str | os.PathLike) -> FaissIndex:
    """Load an index file written by :meth:`FaissIndex.save` (it describes itself)."""
    return FaissIndex.load(path)
