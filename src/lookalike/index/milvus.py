"""Milvus-backed index: the same vocabulary as :class:`~lookalike.index.faiss.FaissIndex`,
with the vectors living in a Milvus collection instead of this process.

Past one machine the index is a Milvus cluster (``uri=http://host:19530``); for tests
and laptops ``milvus-lite`` runs the engine in-process on a local ``.db`` path
(``uri=/path/file.db``), and ``milvus-lite server`` serves one over gRPC to several
processes. The spec reads::

    milvus:uri=/data/lk.db,collection=photos,index=hnsw,M=32,efConstruction=80,efSearch=64
    milvus:uri=http://milvus:19530,collection=photos,index=ivf,nlist=1024,nprobe=16
    milvus:uri=http://milvus:19530,collection=photos,shard=3

Keys: ``uri`` (default ``lookalike.db``), ``collection`` (default ``lookalike``),
``db`` (Milvus database name), ``index`` (``flat`` | ``hnsw`` | ``ivf`` | ``auto``;
hamming: ``flat`` | ``ivf``), build knobs ``M``, ``efConstruction``, ``nlist``, search
knobs ``efSearch`` (alias ``ef``) and ``nprobe``, and ``shard`` (see below). A token,
when the cluster needs one, comes from the ``LOOKALIKE_MILVUS_TOKEN`` environment
variable so that it never lands in a manifest.

Shards: many writers (``--shard i/n`` extraction workers on several machines) insert
into one collection. Each row carries the writer's ``shard`` number; with ``shard`` set,
``ids``, ``ntotal`` and ``remove`` only see that writer's rows (so one worker's
"drop what I no longer hold" cannot delete another's), while ``search`` always spans
the whole collection. Item ids must be globally unique across writers: Milvus keys rows
by ``id``, and a second writer's row with the same id replaces the first (upsert).

Distances follow lookalike's convention whatever Milvus returns: Milvus's ``L2`` is the
*squared* distance (checked on milvus-lite 2.5 (C++ core) and 3.x), turned into the
Euclidean distance; ``IP``/``COSINE`` similarities become ``-ip`` / ``1 - cos``;
``HAMMING`` is already a bit count.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import CollectionError, ConfigError, InputError, MissingDependencyError
from .base import AUTO_EXACT_LIMIT, SearchResult, default_nlist, int_param, prepare_vectors

POINTER_FORMAT = "lookalike-milvus-index"
FORMAT_VERSION = 1
TOKEN_ENV = "LOOKALIKE_MILVUS_TOKEN"

#: Milvus caps ``limit`` (top-k) and the number of rows one query may return.
MAX_TOPK = 16384
#: Search knobs accepted per call and in specs (``ef`` is Milvus's name for efSearch).
SEARCH_KNOBS = ("efSearch", "ef", "nprobe")
SPEC_KEYS = ("uri", "collection", "db", "index", "M", "efConstruction", "nlist", "shard") + SEARCH_KNOBS

METRICS = {"l2": "L2", "ip": "IP", "cosine": "COSINE", "hamming": "HAMMING"}
FLOAT_INDEXES = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}
BINARY_INDEXES = {"flat": "BIN_FLAT", "ivf": "BIN_IVF_FLAT"}

ID_FIELD, VECTOR_FIELD, SHARD_FIELD = "id", "vector", "shard"
#: Bytes of vectors per insert/upsert call: well under gRPC's 64 MiB message cap.
INSERT_BATCH_BYTES = 8 << 20
#: Ids per ``id in [...]`` expression (queries return at most MAX_TOPK rows).
ID_CHUNK = 10_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_REMOTE = ("http://", "https://", "tcp://", "grpc://", "unix:")


def _pymilvus():
    try:
        import pymilvus  # heavy (grpc, pandas): kept out of ``import lookalike``
    except ImportError:
        raise MissingDependencyError("pymilvus", "milvus") from None
    return pymilvus


def parse_milvus_spec(spec: str) -> dict[str, str]:
    """``"milvus:uri=http://h:19530,index=hnsw"`` -> ``{"uri": "http://h:19530", "index": "hnsw"}``.

    Only the first ``:`` separates the kind, so URIs with ports pass through.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty index spec")
    kind, _, rest = spec.strip().partition(":")
    if kind.strip().lower() != "milvus":
        raise ConfigError(f"not a Milvus index spec: {spec!r} (expected 'milvus:key=value,...')")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"index spec {spec!r}: {part!r} is not key=value")
        if key not in SPEC_KEYS:
            raise ConfigError(f"index spec {spec!r}: unknown key {key!r}; valid: {', '.join(SPEC_KEYS)}")
        params[key] = value.strip()
    return params


def is_milvus_spec(spec: str) -> bool:
    """True for ``milvus:...`` specs (the router in ``index/__init__`` uses it)."""
    if not isinstance(spec, str):
        return False
    spec = spec.strip().lower()
    return spec == "milvus" or spec.startswith("milvus:")


def is_milvus_pointer(path: str | os.PathLike) -> bool:
    """True when ``path`` is a pointer file written by :meth:`MilvusIndex.save`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and POINTER_FORMAT.encode() in head


def _is_local(uri: str) -> bool:
    return not uri.lower().startswith(_REMOTE)


class MilvusIndex:
    """A Milvus collection speaking lookalike's index conventions.

    Args:
        spec: ``milvus:key=value,...`` (module docstring lists the keys).
        dim: vector dimension (for ``hamming``: number of bits, a multiple of 8).
        metric: ``l2``, ``cosine``, ``ip`` or ``hamming``.
        n_hint: expected number of vectors (resolves ``index=auto`` and sizes ``nlist``).
        name: appended to the spec's collection name (``photos`` + ``cnn`` ->
            ``photos_cnn``) so that several descriptors of one lookalike collection
            get one Milvus collection each.
        shard: this writer's shard number (overrides the spec's ``shard``).
        base_dir: directory that a relative local ``.db`` uri is resolved against
            (default: the working directory).
        reset: drop an existing Milvus collection of that name first.

    Raises:
        ConfigError: bad spec, or an index type the engine refuses.
        CollectionError: the server cannot be reached, or an existing collection of
            that name disagrees with ``dim``/``metric``/index type.
        MissingDependencyError: ``pymilvus`` (extra ``milvus``) is not installed.
    """

    def __init__(self, spec: str, dim: int, metric: str, n_hint: int = 0, name: str | None = None,
                 shard: int | None = None, base_dir: str | os.PathLike | None = None, reset: bool = False):
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        if dim <= 0:
            raise ConfigError(f"dim must be positive, got {dim}")
        if metric == "hamming" and dim % 8:
            raise ConfigError(f"binary index needs dim (bits) divisible by 8, got {dim}")
        self.requested_spec = spec
        self.spec = spec
        self.params = parse_milvus_spec(spec)
        self.dim = int(dim)
        self.metric = metric
        self.auto_reason = ""

        uri = self.params.get("uri", "lookalike.db")
        if _is_local(uri):
            if not uri.endswith(".db"):
                raise ConfigError(f"a local Milvus uri must end in .db (milvus-lite), got {uri!r}")
            path = Path(uri).expanduser()
            if not path.is_absolute():
                path = Path(base_dir or os.getcwd()) / path
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path.resolve())
        self.uri = uri
        base = self.params.get("collection", "lookalike")
        self.collection = f"{base}_{name}" if name else base
        if not _NAME.match(self.collection):
            raise ConfigError(f"Milvus collection name {self.collection!r} must be letters, digits and "
                              "underscores, starting with a letter or underscore")
        self.db_name = self.params.get("db", "")
        self.shard = int(shard) if shard is not None else int_param(self.params, "shard", None)

        kind = self.params.get("index", "auto").lower()
        if kind == "auto":
            kind = "flat" if metric == "hamming" or n_hint <= AUTO_EXACT_LIMIT else "hnsw"
            self.auto_reason = (f"{n_hint} vectors: " + ("exact (FLAT)" if kind == "flat" else
                                f"> {AUTO_EXACT_LIMIT}, HNSW graph"))
        table = BINARY_INDEXES if metric == "hamming" else FLOAT_INDEXES
        if kind not in table:
            raise ConfigError(f"Milvus index {kind!r} for metric {metric!r}; valid: {', '.join(table)}")
        self.index_kind = kind
        self.index_type = table[kind]
        self.build_params: dict[str, int] = {}
        if kind == "hnsw":
            self.build_params = {"M": int_param(self.params, "M", 32),
                                 "efConstruction": int_param(self.params, "efConstruction", 80)}
        elif kind == "ivf":
            nlist = int_param(self.params, "nlist", None) or default_nlist(n_hint)
            self.build_params = {"nlist": nlist}
        self.knobs = self._search_knobs({k: v for k, v in self.params.items() if k in SEARCH_KNOBS})
        self._client = self._connect()
        if reset:
            self.drop()
        self._create_or_attach()

    # -- connection -------------------------------------------------------------------
    def _connect(self):
        pymilvus = _pymilvus()
        kwargs: dict[str, Any] = {"uri": self.uri}
        if os.environ.get(TOKEN_ENV):
            kwargs["token"] = os.environ[TOKEN_ENV]
        if self.db_name:
            kwargs["db_name"] = self.db_name
        try:
            return pymilvus.MilvusClient(**kwargs)
        except Exception as exc:  # pymilvus raises several unrelated types here
            hint = (" (milvus-lite opens a .db file from one process at a time; share it between "
                    "processes with 'milvus-lite server')" if _is_local(self.uri) else "")
            raise CollectionError(f"cannot connect to Milvus at {self.uri}: {exc}{hint}") from None

    def _call(self, what: str, fn, *args, **kwargs):
        """Run a client call, turning Milvus errors into ours (with the collection named)."""
        pymilvus = _pymilvus()
        try:
            return fn(*args, **kwargs)
        except pymilvus.MilvusException as exc:
            raise CollectionError(f"Milvus {what} on {self.collection!r} at {self.uri} failed: "
                                  f"{getattr(exc, 'message', exc)}") from None

    def _create_or_attach(self) -> None:
        pymilvus = _pymilvus()
        client = self._client
        if self._call("has_collection", client.has_collection, self.collection):
            self._check_existing()
            self._call("load", client.load_collection, self.collection)
            return
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, pymilvus.DataType.INT64, is_primary=True)
        schema.add_field(SHARD_FIELD, pymilvus.DataType.INT32)
        vector_type = pymilvus.DataType.BINARY_VECTOR if self.is_binary else pymilvus.DataType.FLOAT_VECTOR
        schema.add_field(VECTOR_FIELD, vector_type, dim=self.dim)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name=VECTOR_FIELD, index_type=self.index_type,
                               metric_type=METRICS[self.metric], params=dict(self.build_params))
        try:
            client.create_collection(self.collection, schema=schema, index_params=index_params,
                                     consistency_level="Strong")
        except pymilvus.MilvusException as exc:
            # The engine refuses this index/vector type (e.g. milvus-lite 2.x has no HNSW,
            # 3.x no binary vectors): leave no half-made collection behind.
            if client.has_collection(self.collection):
                client.drop_collection(self.collection)
            raise ConfigError(f"Milvus at {self.uri} cannot build {self.index_type}/"
                              f"{METRICS[self.metric]} on {'binary' if self.is_binary else 'float'} "
                              f"vectors: {getattr(exc, 'message', exc)}") from None

    def _check_existing(self) -> None:
        """An existing collection must hold what this index would have created."""
        info = self._call("describe_collection", self._client.describe_collection, self.collection)
        fields = {f["name"]: f for f in info.get("fields", [])}
        if ID_FIELD not in fields or VECTOR_FIELD not in fields or SHARD_FIELD not in fields:
            raise CollectionError(f"Milvus collection {self.collection!r} at {self.uri} was not made by "
                                  f"lookalike (fields {sorted(fields)}); pick another collection name")
        vec = fields[VECTOR_FIELD]
        dim = int(vec.get("params", {}).get("dim", -1))
        binary = "BINARY" in str(vec.get("type", "")).upper()
        index = self._call("describe_index", self._client.describe_index, self.collection, VECTOR_FIELD) or {}
        problems = []
        if dim != self.dim:
            problems.append(f"dim {dim} != {self.dim}")
        if binary != self.is_binary:
            problems.append("binary vectors" if binary else "float vectors")
        if index and str(index.get("metric_type", "")).upper() != METRICS[self.metric]:
            problems.append(f"metric {index.get('metric_type')} != {METRICS[self.metric]}")
        if index and str(index.get("index_type", "")).upper() != self.index_type:
            problems.append(f"index {index.get('index_type')} != {self.index_type}")
        if problems:
            raise CollectionError(f"Milvus collection {self.collection!r} at {self.uri} exists with "
                                  f"{'; '.join(problems)}: drop it (MilvusIndex(..., reset=True)) or "
                                  "name another collection")

    def flush(self) -> None:
        """Seal buffered rows into segments, where Milvus builds the ANN index (rows still
        in the write buffer are searched exactly). ``save`` calls it."""
        self._call("flush", self._client.flush, self.collection)

    def wait_for_index(self, timeout: float = 600.0, poll: float = 0.5) -> None:
        """Flush, then wait until Milvus reports every row indexed (``describe_index``).

        Until then unindexed rows are searched exactly: results stay correct, only slower.

        Raises:
            CollectionError: not indexed within ``timeout`` seconds.
        """
        import time

        self.flush()
        deadline = time.monotonic() + timeout
        while True:
            info = self._call("describe_index", self._client.describe_index, self.collection, VECTOR_FIELD) or {}
            if int(info.get("pending_index_rows", 0) or 0) == 0 and \
                    int(info.get("indexed_rows", 0) or 0) >= int(info.get("total_rows", 0) or 0):
                return
            if time.monotonic() > deadline:
                raise CollectionError(f"Milvus collection {self.collection!r}: index not built after "
                                      f"{timeout:.0f} s ({info})")
            time.sleep(poll)

    def reload(self) -> None:
        """Release and load the collection again: loading brings every sealed segment's
        index into memory (milvus-lite builds missing ones first), so later searches use it.
        Searches fail while it runs; on a shared cluster prefer :meth:`wait_for_index`."""
        self._call("release", self._client.release_collection, self.collection)
        self._call("load", self._client.load_collection, self.collection)

    def drop(self) -> None:
        """Delete the whole Milvus collection (every shard's rows)."""
        if self._call("has_collection", self._client.has_collection, self.collection):
            self._call("drop_collection", self._client.drop_collection, self.collection)

    def close(self) -> None:
        """Close the client connection. (milvus-lite keeps serving a ``.db`` file, and
        holding its lock, until this process exits.)"""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> "MilvusIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------
    @property
    def is_binary(self) -> bool:
        return self.metric == "hamming"

    @property
    def is_trained(self) -> bool:
        return True  # Milvus trains IVF centroids itself, per sealed segment

    @property
    def n_removed(self) -> int:
        return 0  # Milvus compacts deleted rows away on its own

    def _scope(self) -> str:
        return f"{SHARD_FIELD} == {self.shard}" if self.shard is not None else ""

    def _count(self, expr: str) -> int:
        rows = self._call("count", self._client.query, self.collection, filter=expr,
                          output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def ntotal(self) -> int:
        """Live vectors: this writer's shard when ``shard`` is set, else the whole collection."""
        return self._count(self._scope())

    @property
    def ntotal_all(self) -> int:
        """Live vectors of every shard."""
        return self._count("")

    @property
    def ids(self) -> np.ndarray:
        """Live ids ``(n,) int64``, ascending (Milvus keeps no insertion order); this
        writer's shard only when ``shard`` is set."""
        iterator = self._call("query_iterator", self._client.query_iterator, self.collection,
                              batch_size=ID_CHUNK, filter=self._scope(), output_fields=[ID_FIELD])
        out = []
        try:
            while True:
                batch = self._call("query_iterator", iterator.next)
                if not batch:
                    break
                out.append(np.fromiter((row[ID_FIELD] for row in batch), dtype=np.int64, count=len(batch)))
        finally:
            iterator.close()
        return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "requested_spec": self.requested_spec, "dim": self.dim,
                "metric": self.metric, "ntotal": self.ntotal, "removed": 0, "trained": True,
                "auto_reason": self.auto_reason, "backend": "milvus", "uri": self.uri,
                "collection": self.collection, "index_type": self.index_type,
                "build_params": self.build_params, "shard": self.shard}

    def __repr__(self) -> str:
        return (f"MilvusIndex({self.spec!r}, dim={self.dim}, metric={self.metric!r}, "
                f"collection={self.collection!r})")

    # -- vectors ----------------------------------------------------------------------
    def _prepare(self, x: np.ndarray, what: str) -> np.ndarray:
        return prepare_vectors(x, self.dim, self.metric, what)

    def _rows(self, x: np.ndarray) -> list:
        """Vectors as pymilvus wants them: bytes per row for binary, float lists otherwise."""
        return [row.tobytes() for row in x] if self.is_binary else x.tolist()

    def train(self, x: np.ndarray) -> "MilvusIndex":
        """A no-op kept for the common interface (checks the shape only)."""
        self._prepare(x, "train")
        return self

    def add(self, x: np.ndarray, ids: Iterable[int]) -> None:
        """Upsert vectors with their int64 ids (an existing id is replaced), in batches.

        Args:
            x: ``(n, dim) float32`` (``(n, dim/8) uint8`` for hamming).
            ids: ``n`` int64 item ids, unique across every shard writing here.
        """
        x = self._prepare(x, "add")
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).ravel()
        if len(ids) != len(x):
            raise InputError(f"add: {len(x)} vectors but {len(ids)} ids")
        if len(np.unique(ids)) != len(ids):
            raise InputError("add: duplicate ids in one batch")
        shard = int(self.shard or 0)
        step = max(1, INSERT_BATCH_BYTES // max(1, x[0].nbytes if len(x) else 1))
        for start in range(0, len(x), step):
            chunk_ids = ids[start:start + step].tolist()
            vectors = self._rows(x[start:start + step])
            rows = [{ID_FIELD: i, SHARD_FIELD: shard, VECTOR_FIELD: v} for i, v in zip(chunk_ids, vectors)]
            self._call("upsert", self._client.upsert, self.collection, rows)

    def remove(self, ids: Iterable[int]) -> int:
        """Delete ids (this writer's shard only when ``shard`` is set); returns how many
        live vectors were removed."""
        ids = np.unique(np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64))
        removed = 0
        scope = self._scope()
        for start in range(0, len(ids), ID_CHUNK):
            expr = f"{ID_FIELD} in [{','.join(map(str, ids[start:start + ID_CHUNK].tolist()))}]"
            if scope:
                expr += f" and {scope}"
            # Milvus's delete count is the number of keys asked for, not found: count first.
            present = self._count(expr)
            if present:
                self._call("delete", self._client.delete, self.collection, filter=expr)
                removed += present
        return removed

    # -- search -----------------------------------------------------------------------
    def _search_knobs(self, knobs: dict[str, Any]) -> dict[str, int]:
        unknown = set(knobs) - set(SEARCH_KNOBS)
        if unknown:
            raise ConfigError(f"unknown search knobs {sorted(unknown)}; valid: {', '.join(SEARCH_KNOBS)}")
        out = {}
        for key, value in knobs.items():
            try:
                out["ef" if key == "efSearch" else key] = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"search knob {key}={value!r} is not an integer") from None
        return out

    def _search_params(self, k: int, knobs: dict[str, int]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.index_kind == "hnsw":
            params["ef"] = max(int(knobs.get("ef", 64)), k)  # Milvus requires ef >= k
        elif self.index_kind == "ivf":
            params["nprobe"] = min(int(knobs.get("nprobe", 8)), self.build_params["nlist"])
        return {"metric_type": METRICS[self.metric], "params": params}

    def _allowed_expr(self, allowed_ids) -> str | None:
        """``id in [...]`` for a metadata filter; None when no filter; '' when nothing is allowed."""
        if allowed_ids is None:
            return None
        allowed = np.unique(np.asarray(allowed_ids if isinstance(allowed_ids, np.ndarray)
                                       else list(allowed_ids), dtype=np.int64))
        if len(allowed) == 0:
            return ""
        return f"{ID_FIELD} in [{','.join(map(str, allowed.tolist()))}]"

    def _run_search(self, q: np.ndarray, limit: int, params: dict, expr: str | None) -> list:
        hits = []
        for start in range(0, len(q), 1024):  # Milvus caps nq per request
            hits.extend(self._call("search", self._client.search, self.collection,
                                   data=self._rows(q[start:start + 1024]), anns_field=VECTOR_FIELD,
                                   limit=limit, filter=expr or "", search_params=params,
                                   output_fields=[ID_FIELD], consistency_level="Strong"))
        return hits

    def search(self, queries: np.ndarray, k: int = 10, allowed_ids=None, **knobs) -> SearchResult:
        """Top-k nearest neighbours over the whole collection (every shard).

        Args:
            queries: ``(n, dim) float32`` (``(n, dim/8) uint8`` for hamming).
            k: neighbours per query (Milvus allows at most 16384).
            allowed_ids: optional ids to restrict the search to (an ``id in [...]`` filter).
            **knobs: per-call ``efSearch`` (or ``ef``) for HNSW, ``nprobe`` for IVF.

        Returns:
            :class:`SearchResult`: ids ``(n, k) int64`` (-1 padded), distances ``float32``
            ascending (Euclidean for l2, ``1 - cos``, ``-ip``, bit count), ``inf`` at padding.
        """
        merged = {**self.knobs, **self._search_knobs(knobs)}
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if k > MAX_TOPK:
            raise InputError(f"k={k}: Milvus returns at most {MAX_TOPK} neighbours per query")
        q = self._prepare(queries, "search")
        n = len(q)
        out_ids = np.full((n, k), -1, np.int64)
        raw = np.zeros((n, k), np.float64)
        expr = self._allowed_expr(allowed_ids)
        if n == 0 or expr == "":
            return SearchResult(out_ids, np.full((n, k), np.inf, np.float32))
        for row, hits in enumerate(self._run_search(q, k, self._search_params(k, merged), expr)):
            for j, hit in enumerate(hits[:k]):
                out_ids[row, j] = hit["id"]
                raw[row, j] = hit["distance"]
        return SearchResult(out_ids, self._to_ascending(raw, out_ids))

    def range_search(self, queries: np.ndarray, radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """All neighbours within ``radius`` (our distance units, inclusive), per query:
        ``(ids int64, distances float32)`` sorted ascending.

        Raises:
            InputError: a query has more than 16384 neighbours within the radius
                (Milvus's result cap): lower the radius.
        """
        q = self._prepare(queries, "range_search")
        r = float(radius)
        # Milvus's bound is strict and in its own units; loosen it a hair and filter exactly here.
        slack = 1e-5 * max(1.0, abs(r))
        milvus_radius = {"l2": (max(r, 0.0) + slack) ** 2, "ip": -r - slack, "cosine": 1.0 - r - slack,
                         "hamming": np.floor(r) + 0.5}[self.metric]
        total = self.ntotal_all
        if total == 0 or len(q) == 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(q))]
        limit = min(MAX_TOPK, total)
        params = self._search_params(limit, self.knobs)
        params["params"]["radius"] = float(milvus_radius)
        out = []
        for hits in self._run_search(q, limit, params, None):
            if len(hits) >= MAX_TOPK:
                raise InputError(f"range_search: more than {MAX_TOPK} neighbours within radius {r}; "
                                 "lower the radius")
            ids = np.array([h["id"] for h in hits], dtype=np.int64)
            d = self._to_ascending(np.array([h["distance"] for h in hits], np.float64)[None, :], ids[None, :])[0]
            keep = d <= r
            ids, d = ids[keep], d[keep]
            order = np.argsort(d, kind="stable")
            out.append((ids[order], d[order]))
        return out

    def _to_ascending(self, distances: np.ndarray, ids: np.ndarray) -> np.ndarray:
        d = np.asarray(distances, dtype=np.float64).copy()
        if self.metric == "l2":
            d = np.sqrt(np.maximum(d, 0))  # Milvus L2 is the squared distance
        elif self.metric == "cosine":
            d = 1.0 - d
        elif self.metric == "ip":
            d = -d
        d = d.astype(np.float32)
        d[ids < 0] = np.inf
        return d

    # -- persistence ------------------------------------------------------------------
    def to_pointer(self, extra: dict | None = None) -> dict[str, Any]:
        """The JSON-able description :meth:`save` writes (no vectors: they live in Milvus)."""
        return {"format": POINTER_FORMAT, "format_version": FORMAT_VERSION, "spec": self.spec,
                "requested_spec": self.requested_spec, "auto_reason": self.auto_reason,
                "uri": self.uri, "db": self.db_name, "collection": self.collection, "dim": self.dim,
                "metric": self.metric, "index": self.index_kind, "build_params": self.build_params,
                "shard": self.shard, "extra": extra or {}}

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """Write a small self-describing JSON pointer (uri, collection, dim, metric, spec)
        atomically (temp file + rename), after flushing buffered rows into indexed segments."""
        from ..atomic import atomic_write_bytes

        self.flush()
        atomic_write_bytes(Path(path), json.dumps(self.to_pointer(extra), indent=2).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MilvusIndex":
        return cls.load_with_extra(path)[0]

    @classmethod
    def load_with_extra(cls, path: str | os.PathLike) -> tuple["MilvusIndex", dict]:
        """Read a pointer written by :meth:`save` and reconnect to its collection.

        Raises:
            CollectionError: the file is missing/corrupt, or the Milvus collection is gone
                or no longer matches (dim, metric, index type).
        """
        path = Path(path)
        if not path.exists():
            raise CollectionError(f"{path}: index file missing")
        try:
            header = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise CollectionError(f"{path}: not a lookalike Milvus index pointer") from None
        if not isinstance(header, dict) or header.get("format") != POINTER_FORMAT:
            raise CollectionError(f"{path}: not a lookalike Milvus index pointer")
        if header.get("format_version") != FORMAT_VERSION:
            raise CollectionError(f"{path}: Milvus pointer format {header.get('format_version')} is not "
                                  f"supported (expected {FORMAT_VERSION})")
        self = cls.__new__(cls)
        self.requested_spec = header["requested_spec"]
        self.spec = header["spec"]
        self.params = parse_milvus_spec(self.spec)
        self.auto_reason = header.get("auto_reason", "")
        self.uri = header["uri"]
        self.db_name = header.get("db", "")
        self.collection = header["collection"]
        self.dim = int(header["dim"])
        self.metric = header["metric"]
        self.index_kind = header["index"]
        self.index_type = (BINARY_INDEXES if self.metric == "hamming" else FLOAT_INDEXES)[self.index_kind]
        self.build_params = {k: int(v) for k, v in header.get("build_params", {}).items()}
        self.shard = header.get("shard")
        self.knobs = self._search_knobs({k: v for k, v in self.params.items() if k in SEARCH_KNOBS})
        self._client = self._connect()
        if not self._call("has_collection", self._client.has_collection, self.collection):
            raise CollectionError(f"{path}: Milvus collection {self.collection!r} is gone from {self.uri}")
        self._check_existing()
        self._call("load", self._client.load_collection, self.collection)
        return self, header.get("extra", {})


def make_milvus_index(spec: str, dim: int, metric: str, n_hint: int = 0, **kwargs) -> MilvusIndex:
    """Build (or attach to) a Milvus-backed index from a ``milvus:...`` spec."""
    return MilvusIndex(spec, dim, metric, n_hint=n_hint, **kwargs)
