"""Nearest-neighbour indexes (FAISS embedded by default; Milvus for scale-out).

Every index speaks one vocabulary: ``train(x)``, ``add(x, ids)``,
``search(queries, k) -> SearchResult(ids, distances)`` with distances ascending
(smaller = closer) for every metric, rows padded with id ``-1``; ``remove(ids)``,
``save(path)`` / ``load(path)``.
"""
from .base import SearchResult, resolve_auto_spec
from .faiss import FaissIndex, load_index, make_index, set_faiss_threads

__all__ = ["FaissIndex", "SearchResult", "load_index", "make_index", "resolve_auto_spec",
           "set_faiss_threads"]
