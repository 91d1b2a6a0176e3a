"""Index-independent pieces: the search result, spec parsing and the ``auto`` policy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, InputError

INDEX_KINDS = ("flat", "hnsw", "ivf", "pq", "ivfpq", "ivfpqfs", "binary", "auto", "faiss", "milvus")

#: Below this many vectors exact search is fast enough (a few ms per query at 1280-d);
#: above it ``auto`` switches to an approximate index.
AUTO_EXACT_LIMIT = 50_000
#: Above this many vectors ``auto`` compresses (IVF-PQ with exact re-ranking) to keep RAM low.
AUTO_COMPRESS_LIMIT = 2_000_000


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours of a batch of queries.

    Attributes:
        ids: ``(n_queries, k) int64``; ``-1`` pads rows with fewer than k hits.
        distances: ``(n_queries, k) float32``, ascending per row (smaller = closer):
            Euclidean distance for ``l2``, ``1 - cosine`` for ``cosine``, ``-inner product``
            for ``ip``, bit count for ``hamming``; ``inf`` where the id is ``-1``.
    """

    ids: np.ndarray
    distances: np.ndarray

    def __iter__(self):  # allows ``ids, distances = index.search(...)``
        yield self.ids
        yield self.distances

    def __len__(self) -> int:
        return len(self.ids)


def int_param(params: dict[str, str], key: str, default: int | None) -> int | None:
    """Integer ``key`` of a parsed index spec, or ``default`` when absent."""
    if key not in params:
        return default
    try:
        return int(params[key])
    except ValueError:
        raise ConfigError(f"index parameter {key}={params[key]!r} is not an integer") from None


def default_nlist(n_hint: int) -> int:
    """IVF list count when the spec names none: ~4 sqrt(n), capped at 65536."""
    return max(1, min(65536, int(4 * np.sqrt(max(n_hint, 1)))))


def parse_index_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"hnsw:M=32,efSearch=64"`` -> ``("hnsw", {"M": "32", "efSearch": "64"})``;
    ``"faiss:IVF256,PQ16"`` -> ``("faiss", {"factory": "IVF256,PQ16"})`` (passed through)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty index spec")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index {kind!r}; valid: {', '.join(INDEX_KINDS)} "
                          "(or 'faiss:<factory string>')")
    if kind == "faiss":
        if not rest.strip():
            raise ConfigError("'faiss:' needs a FAISS factory string, e.g. faiss:IVF256,PQ16")
        return kind, {"factory": rest.strip()}
    params = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"index spec {spec!r}: {part!r} is not key=value")
        params[key.strip()] = value.strip()
    return kind, params


def resolve_auto_spec(n_vectors: int, dim: int, metric: str) -> tuple[str, str]:
    """The concrete index spec ``auto`` stands for at this size, and why.

    Returns:
        ``(spec, reason)``.
    """
    if metric == "hamming":
        return "binary", "binary hashes: exact Hamming search is cheap (popcount) at any size here"
    if n_vectors <= AUTO_EXACT_LIMIT:
        return "flat", f"{n_vectors} vectors <= {AUTO_EXACT_LIMIT}: exact search is fast enough"
    if n_vectors <= AUTO_COMPRESS_LIMIT:
        return ("hnsw:M=32,efConstruction=80,efSearch=96",
                f"{n_vectors} vectors > {AUTO_EXACT_LIMIT}: HNSW graph (recall ~0.95+ at efSearch=96)")
    nlist = default_nlist(n_vectors)
    m = next(m for m in (64, 48, 32, 16, 8, 4, 2, 1) if dim % m == 0 and m <= dim // 2 or m == 1)
    return (f"ivfpqfs:nlist={nlist},m={m},nprobe=32",
            f"{n_vectors} vectors > {AUTO_COMPRESS_LIMIT}: IVF with 4-bit fast-scan PQ and exact re-ranking")


def prepare_vectors(x: np.ndarray, dim: int, metric: str, what: str) -> np.ndarray:
    """Validate vectors for an index: ``(n, dim) float32`` (L2-normalised for cosine; a
    zero vector stays finite), or ``(n, dim/8) uint8`` packed bits for hamming.

    Raises:
        InputError: wrong shape or dtype, NaN or infinity (``what`` names the call).
    """
    if (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == dim
            and metric in ("l2", "ip") and x.flags.c_contiguous):
        # The common search call (one float32 row block): only the finiteness check.
        if not np.isfinite(x.sum()) and not np.isfinite(x).all():
            raise InputError(f"{what}: vectors contain NaN or infinity")
        return x
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if metric == "hamming":
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != dim // 8:
            raise InputError(f"{what}: expected uint8 packed bits of shape (n, {dim // 8}), "
                             f"got {x.dtype} {x.shape}")
        return np.ascontiguousarray(x)
    if x.ndim != 2 or x.shape[1] != dim:
        raise InputError(f"{what}: expected shape (n, {dim}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    # A finite sum proves every entry finite (one pass); only otherwise look closer
    # (a sum can also overflow on huge but finite values).
    if not np.isfinite(x.sum()) and not np.isfinite(x).all():
        raise InputError(f"{what}: vectors contain NaN or infinity")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x
