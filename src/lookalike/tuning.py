"""Index tuning: sweep FAISS index types and search knobs on a collection's own vectors.

The question answered: *which index and which search settings are the fastest that
still find at least ``target_recall`` of the true 10 nearest neighbours?*

How it is measured:

* **Queries** are ``n_queries`` stored vectors drawn at random (``seed``); each query's
  own entry is dropped from every result list (search ``k + 1``, drop the query id),
  so recall measures finding the *other* neighbours, as ``search_item`` does.
* **Ground truth** is exact search (FAISS flat) on the same vectors. Recall@k counts
  an approximate result as correct when its true distance is no larger than the true
  k-th distance (ties at the boundary would otherwise punish a correct answer).
* **Speed** is queries per second for the whole query batch in one ``search`` call,
  with the FAISS thread count set explicitly (``threads``), median of ``repeats``.
* **Memory** is the size of the serialised index (bytes), **build time** covers
  training and adding.

Candidates (skipped when they cannot train: IVF needs ``n >= 39 * nlist``):
flat (exact reference); HNSW with ``M`` in {16, 32} and an ``efSearch`` sweep; IVF-Flat
with ``nlist ~ 4 sqrt(n)`` and an ``nprobe`` sweep; IVF + 4-bit fast-scan PQ with exact
re-ranking (``ivfpqfs``) with ``nprobe`` x ``k_factor``; IVF-PQ 8-bit with re-ranking
(``ivfpq``, when ``n`` is large enough to train 256 centroids per sub-quantiser).
Hamming (binary) vectors: flat and binary IVF (``nprobe`` fixed at build time).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import ConfigError, InputError

__all__ = ["TuningPoint", "TuningReport", "tune_index", "tune_collection", "candidate_builds",
           "recall_with_ties", "FAMILIES"]

#: Index families the tuner knows, in the order they are tried.
FAMILIES = ("flat", "hnsw", "ivf", "ivfpqfs", "ivfpq")
#: FAISS k-means wants at least this many training points per centroid.
MIN_POINTS_PER_CENTROID = 39
EF_SEARCH_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_SWEEP = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
K_FACTOR_SWEEP = (1, 2, 4, 8, 16)
HNSW_M = (16, 32)
HNSW_EF_CONSTRUCTION = 80
#: Stop a family's sweep once its recall reaches this (more knob only costs speed).
SATURATED_RECALL = 0.999


@dataclass
class TuningPoint:
    """One measured setting.

    Attributes:
        spec: full index spec, search knobs included (what ``Collection.set_index`` takes).
        family: ``flat``, ``hnsw``, ``ivf``, ``ivfpqfs``, ``ivfpq``, ``binary-ivf``.
        build: the build part of the spec (one built index serves a whole knob sweep).
        knobs: search knobs of this point (``efSearch``, ``nprobe``, ``k_factor``).
        recall: recall@k against exact search, in [0, 1].
        qps: queries per second (batch), median of repeats.
        memory_bytes: serialised index size.
        build_seconds: train + add wall time of the build.
        meets_target: ``recall >= target``.
    """

    spec: str
    family: str
    build: str
    knobs: dict[str, int]
    recall: float
    qps: float
    memory_bytes: int
    build_seconds: float
    meets_target: bool = False


@dataclass
class TuningReport:
    """All measured points, the chosen one, and how they were measured."""

    points: list[TuningPoint]
    best: TuningPoint | None
    target_recall: float
    k: int
    n_vectors: int
    dim: int
    metric: str
    n_queries: int
    threads: int
    seed: int
    skipped: dict[str, str] = field(default_factory=dict)
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {key: value for key, value in asdict(self).items() if key not in ("points", "best")}
        out["points"] = [asdict(p) for p in self.points]
        out["best"] = asdict(self.best) if self.best else None
        return out

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """Family label -> ``(recall, qps)`` points for :func:`plots.plot_recall_vs_qps`."""
        out: dict[str, list[tuple[float, float]]] = {}
        for p in self.points:
            label = p.build.replace(",efConstruction=80", "") if p.family == "hnsw" else p.family
            out.setdefault(label, []).append((p.recall, p.qps))
        return out


# --------------------------------------------------------------------------- measuring
def recall_with_ties(approx_ids: np.ndarray, exact_kth_distance: np.ndarray,
                     true_distance: Callable[[int, np.ndarray], np.ndarray], k: int) -> float:
    """Recall@k where a result counts when its true distance is ``<=`` the exact k-th.

    Args:
        approx_ids: ``(n_queries, >= k) int64`` approximate ids, best first (-1 = none).
        exact_kth_distance: ``(n_queries,)`` exact k-th nearest distance per query.
        true_distance: ``(query row, ids) -> distances`` computed exactly.
        k: cut-off.
    """
    hits = 0
    for row in range(len(approx_ids)):
        ids = approx_ids[row, :k]
        ids = ids[ids >= 0]
        if len(ids):
            d = true_distance(row, ids)
            limit = exact_kth_distance[row]
            hits += int((d <= limit + 1e-6 * max(1.0, abs(limit))).sum())
    return hits / float(k * len(approx_ids))


def _drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own id (first occurrence) and keep ``k`` columns (-1 padded)."""
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for row, (r, own) in enumerate(zip(ids, self_ids)):
        kept = r[r != own][:k]
        out[row, :len(kept)] = kept
    return out


def _time_search(index, queries: np.ndarray, k: int, knobs: dict[str, int], repeats: int
                 ) -> tuple[np.ndarray, float]:
    """Run the batch ``repeats`` times; return the ids and the median queries/second."""
    times = []
    ids = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids, _ = index.search(queries, k=k, **knobs)
        times.append(time.perf_counter() - t0)
    return ids, len(queries) / max(statistics.median(times), 1e-9)


def _divisor_m(dim: int, max_m: int = 64, max_fraction: int = 2) -> int | None:
    """Largest number of PQ sub-quantisers dividing ``dim`` with >= ``max_fraction`` dims each."""
    for m in range(min(max_m, dim // max_fraction), 0, -1):
        if dim % m == 0:
            return m
    return None


def candidate_builds(n: int, dim: int, metric: str, families: Iterable[str] = FAMILIES
                     ) -> tuple[list[tuple[str, str, list[dict[str, int]]]], dict[str, str]]:
    """The builds to try and each one's knob sweep.

    Returns:
        ``([(family, build_spec, [knobs, ...]), ...], {family: why skipped})``.
    """
    families = list(families)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ConfigError(f"unknown index families {sorted(unknown)}; valid: {', '.join(FAMILIES)}")
    builds: list[tuple[str, str, list[dict[str, int]]]] = []
    skipped: dict[str, str] = {}
    nlist = int(min(4 * np.sqrt(n), n / MIN_POINTS_PER_CENTROID))
    if metric == "hamming":
        if "flat" in families:
            builds.append(("flat", "flat", [{}]))
        if "ivf" in families:
            if nlist >= 4:
                for p in (q for q in NPROBE_SWEEP if q <= nlist):
                    builds.append(("binary-ivf", f"binary:kind=ivf,nlist={nlist},nprobe={p}", [{}]))
            else:
                skipped["ivf"] = f"{n} vectors cannot train {MIN_POINTS_PER_CENTROID} x 4 lists"
        for fam in set(families) - {"flat", "ivf"}:
            skipped[fam] = "not available for binary (hamming) vectors"
        return builds, skipped
    if "flat" in families:
        builds.append(("flat", "flat", [{}]))
    if "hnsw" in families:
        for m in HNSW_M:
            builds.append(("hnsw", f"hnsw:M={m},efConstruction={HNSW_EF_CONSTRUCTION}",
                           [{"efSearch": ef} for ef in EF_SEARCH_SWEEP]))
    ivf_ok = nlist >= 4
    why_not_ivf = (f"{n} vectors are too few for an IVF index (need n >= "
                   f"{MIN_POINTS_PER_CENTROID} x nlist with nlist >= 4)")
    probes = [p for p in NPROBE_SWEEP if p <= nlist]
    if "ivf" in families:
        if ivf_ok:
            builds.append(("ivf", f"ivf:nlist={nlist}", [{"nprobe": p} for p in probes]))
        else:
            skipped["ivf"] = why_not_ivf
    if "ivfpqfs" in families:
        m = _divisor_m(dim, max_m=64, max_fraction=2)
        if not ivf_ok:
            skipped["ivfpqfs"] = why_not_ivf
        elif m is None or n < 16 * MIN_POINTS_PER_CENTROID:
            skipped["ivfpqfs"] = f"dim {dim} / {n} vectors cannot train 4-bit PQ"
        else:
            builds.append(("ivfpqfs", f"ivfpqfs:nlist={nlist},m={m}",
                           [{"nprobe": p, "k_factor": kf} for p in probes for kf in K_FACTOR_SWEEP]))
    if "ivfpq" in families:
        m = _divisor_m(dim, max_m=64, max_fraction=4)
        if not ivf_ok:
            skipped["ivfpq"] = why_not_ivf
        elif m is None or n < 256 * MIN_POINTS_PER_CENTROID:
            skipped["ivfpq"] = (f"{n} vectors are too few to train 8-bit PQ codebooks "
                                f"(want >= {256 * MIN_POINTS_PER_CENTROID})")
        else:
            builds.append(("ivfpq", f"ivfpq:nlist={nlist},m={m},nbits=8,refine=true",
                           [{"nprobe": p, "k_factor": kf} for p in probes for kf in K_FACTOR_SWEEP]))
    return builds, skipped


def _spec_with_knobs(build: str, knobs: dict[str, int]) -> str:
    if not knobs:
        return build
    sep = "," if ":" in build else ":"
    return build + sep + ",".join(f"{k}={v}" for k, v in knobs.items())


def tune_index(ids: np.ndarray, vectors: np.ndarray, metric: str, dim: int,
               target_recall: float = 0.95, k: int = 10, n_queries: int = 200, seed: int = 0,
               threads: int = 1, repeats: int = 3, families: Iterable[str] = FAMILIES,
               on_point: Callable[[TuningPoint], None] | None = None) -> TuningReport:
    """Sweep index types and search knobs on ``vectors`` and pick the fastest setting
    whose recall@k reaches ``target_recall``.

    Args:
        ids: ``(n,) int64`` item ids of the vectors.
        vectors: ``(n, code_size)`` float32 (uint8 packed bits for hamming).
        metric: ``l2``, ``cosine``, ``ip`` or ``hamming``.
        dim: vector dimension (bits for hamming).
        target_recall: recall@k the chosen setting must reach.
        k: neighbours per query.
        n_queries: stored vectors used as queries (seeded sample).
        seed: query sample seed.
        threads: FAISS OpenMP threads during the measurement (set explicitly).
        repeats: timed runs per point (median).
        families: subset of :data:`FAMILIES`.
        on_point: callback per measured point (progress display).

    Returns:
        :class:`TuningReport`; ``best`` is None when nothing reaches the target.
    """
    from .index.faiss import make_index, set_faiss_threads

    if not 0.0 < target_recall <= 1.0:
        raise InputError(f"target recall must lie in (0, 1], got {target_recall}")
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    if n < k + 1:
        raise InputError(f"tuning needs more than k={k} vectors, the collection has {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    queries, query_ids = vectors[rows], ids[rows]
    set_faiss_threads(threads)

    exact = make_index("flat", dim, metric, n_hint=n)
    exact.add(vectors, ids)
    exact_ids = _drop_self(exact.search(queries, k=k + 1).ids, query_ids, k)
    row_of = {int(i): r for r, i in enumerate(ids)}

    def true_distance(row: int, found: np.ndarray) -> np.ndarray:
        from .evaluation.runner import exact_distances

        return exact_distances(queries[row:row + 1],
                               vectors[[row_of[int(i)] for i in found]], metric)[0]

    kth = np.array([true_distance(r, exact_ids[r, k - 1:k])[0] if exact_ids[r, k - 1] >= 0
                    else np.inf for r in range(len(rows))])

    builds, skipped = candidate_builds(n, dim, metric, families)
    points: list[TuningPoint] = []
    for family, build, sweep in builds:
        t0 = time.perf_counter()
        index = make_index(build, dim, metric, n_hint=n)
        try:
            index.add(vectors, ids)
        except (InputError, ConfigError, RuntimeError) as exc:
            skipped[build] = f"cannot build: {exc}"
            continue
        build_seconds = time.perf_counter() - t0
        memory = len(index.to_bytes())
        for knobs in sweep:
            found, qps = _time_search(index, queries, k + 1, knobs, repeats)
            recall = recall_with_ties(_drop_self(found, query_ids, k), kth, true_distance, k)
            point = TuningPoint(spec=_spec_with_knobs(build, knobs), family=family, build=build,
                                knobs=dict(knobs), recall=recall, qps=qps, memory_bytes=memory,
                                build_seconds=build_seconds, meets_target=recall >= target_recall)
            points.append(point)
            if on_point:
                on_point(point)
            # Knobs are swept from cheap to expensive: once recall saturates, stop
            # (for ivfpqfs/ivfpq only when the largest k_factor saturates at this nprobe).
            if recall >= SATURATED_RECALL and knobs.get("k_factor", K_FACTOR_SWEEP[-1]) == K_FACTOR_SWEEP[-1]:
                break
    meeting = [p for p in points if p.meets_target]
    # Fastest wins; ties (equal qps) go to the smaller index, then the earlier point.
    best = max(meeting, key=lambda p: (p.qps, -p.memory_bytes)) if meeting else None
    return TuningReport(points=points, best=best, target_recall=target_recall, k=k, n_vectors=n,
                        dim=dim, metric=metric, n_queries=len(rows), threads=threads, seed=seed,
                        skipped=skipped)


def tune_collection(coll, key: str | None = None, target_recall: float = 0.95, k: int = 10,
                    n_queries: int = 200, seed: int = 0, threads: int = 1, repeats: int = 3,
                    families: Sequence[str] = FAMILIES, apply: bool = False,
                    on_point: Callable[[TuningPoint], None] | None = None) -> TuningReport:
    """:func:`tune_index` on a collection's stored vectors; with ``apply`` the best spec
    (knobs included) becomes the collection's index (``Collection.set_index``).

    Raises:
        InputError: the collection is too small, or ``apply`` was asked and no setting
            met the target.
    """
    key = key or coll.manifest["default_descriptor"]
    coll.descriptor(key)  # raises ConfigError for an unknown key
    entry = coll.manifest["descriptors"][key]
    ids, vectors = coll.vectors(key)
    tuned = tune_index(ids, vectors, entry["metric"], entry["dim"], target_recall=target_recall,
                       k=k, n_queries=n_queries, seed=seed, threads=threads, repeats=repeats,
                       families=families, on_point=on_point)
    if apply:
        if tuned.best is None:
            raise InputError(f"no index setting reached recall@{k} >= {target_recall}; "
                             "nothing applied")
        coll.set_index(tuned.best.spec, key=key)
        tuned.applied = True
    return tuned
