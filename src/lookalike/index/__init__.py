"""Nearest-neighbour indexes (FAISS embedded by default; Milvus for scale-out).

Every index speaks one vocabulary: ``train(x)``, ``add(x, ids)``,
``search(queries, k) -> SearchResult(ids, distances)`` with distances ascending
(smaller = closer) for every metric, rows padded with id ``-1``; ``remove(ids)``,
``save(path)`` / ``load(path)``. ``milvus:...`` specs route to :class:`MilvusIndex`
(pymilvus is imported only when one is built or loaded).
"""
from __future__ import annotations

import os

from .base import SearchResult, resolve_auto_spec
from .faiss import FaissIndex, set_faiss_threads
from .milvus import MilvusIndex, is_milvus_pointer, is_milvus_spec


def make_index(spec: str, dim: int, metric: str, n_hint: int = 0, name: str | None = None,
               base_dir: str | os.PathLike | None = None):
    """Build an empty index from a spec: FAISS, or Milvus for ``milvus:...``.

    ``name`` (a descriptor key: one Milvus collection per descriptor) and ``base_dir``
    (where a relative ``.db`` uri lives) only matter to Milvus.
    """
    if is_milvus_spec(spec):
        return MilvusIndex(spec, dim, metric, n_hint=n_hint, name=name, base_dir=base_dir)
    return FaissIndex(spec, dim, metric, n_hint=n_hint)


def load_index_with_extra(path: str | os.PathLike):
    """Load an index file (a FAISS file, or a Milvus pointer) and its ``extra`` dict."""
    if is_milvus_pointer(path):
        return MilvusIndex.load_with_extra(path)
    return FaissIndex.load_with_extra(path)


def load_index(path: str | os.PathLike):
    """Load an index file written by ``save`` (it describes itself)."""
    return load_index_with_extra(path)[0]


__all__ = ["FaissIndex", "MilvusIndex", "SearchResult", "load_index", "load_index_with_extra", "make_index",
           "resolve_auto_spec", "set_faiss_threads"]
