"""The evaluation driver: protocol + (descriptor spec | collection) -> JSON report + plots.

One way through:

1. load the protocol (:func:`lookalike.evaluation.protocols.load_protocol`), optionally
   cut to a seeded subset (``limit``);
2. get one vector per protocol image: either describe the images with a descriptor
   spec (learned descriptors are fitted first, on the gallery / training part), or take
   a collection's stored vectors (matching protocol paths to item paths by resolved
   path) and describe only the images the collection lacks, with its own descriptor;
3. exact distances with numpy in float64, in the descriptor's metric
   (:func:`exact_distances`, smaller = closer);
4. score with :mod:`lookalike.evaluation.report`, and write every query's ranked result
   ids with relevance flags so each number can be recomputed from the JSON alone;
5. pictures with :mod:`lookalike.evaluation.plots`.

Everything random (subset, fitting sample) follows ``seed``; the same inputs give the
same report apart from the ``timing`` block.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..distances import exact_distances, pair_distances
from ..errors import ConfigError, InputError
from . import metrics, report
from .protocols import (AnnProtocol, IdentificationProtocol, RetrievalProtocol,
                        VerificationProtocol, load_lfw_pairs, load_protocol)

__all__ = ["EvaluationResult", "run_evaluation", "exact_distances", "pair_distances",
           "subset_protocol", "describe_paths", "collection_vectors", "parse_option_value",
           "precision_recall_curve", "REPORT_FORMAT"]

REPORT_FORMAT = 1
#: Default number of ranked results stored per query in the JSON report.
DEFAULT_TOP_K = 100

ProgressFactory = Callable[[int, str], Any]


# --------------------------------------------------------------------------- protocol subsets
def parse_option_value(text: str) -> Any:
    """``"12"`` -> 12, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None,
    ``"51-100"`` -> range(51, 101) (inclusive integer range), else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    parts = text.split("-")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return list(range(int(parts[0]), int(parts[1]) + 1))
    return text


def _reindex(paths: list[Path], used: np.ndarray) -> tuple[list[Path], np.ndarray]:
    """Keep ``paths[used]`` (sorted, unique) and a map old position -> new position."""
    used = np.unique(used)
    remap = np.full(len(paths), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return [paths[i] for i in used], remap


def subset_protocol(protocol, limit: int | None, seed: int = 0):
    """A seeded, smaller copy of a protocol (for quick runs and tests).

    * retrieval / identification: ``limit`` classes (identities) drawn at random, with
      every image of those classes (the query/gallery split is kept);
    * verification: ``limit`` pairs drawn at random (folds kept).

    ``limit=None`` (or a limit >= the size) returns the protocol unchanged.
    """
    if limit is None:
        return protocol
    if limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    rng = np.random.default_rng(seed)
    if isinstance(protocol, VerificationProtocol):
        n = len(protocol.is_same)
        if limit >= n:
            return protocol
        chosen = np.sort(rng.choice(n, size=limit, replace=False))
        paths, remap = _reindex(protocol.paths, np.concatenate(
            [protocol.index_a[chosen], protocol.index_b[chosen]]))
        return VerificationProtocol(
            name=protocol.name, paths=paths, index_a=remap[protocol.index_a[chosen]],
            index_b=remap[protocol.index_b[chosen]], is_same=protocol.is_same[chosen],
            folds=protocol.folds[chosen],
            description=f"{protocol.description}; random subset of {limit} pairs (seed={seed})")
    if isinstance(protocol, (RetrievalProtocol, IdentificationProtocol)):
        classes = np.unique(protocol.labels)
        if limit >= len(classes):
            return protocol
        keep = np.sort(rng.choice(classes, size=limit, replace=False))
        in_keep = np.isin(protocol.labels, keep)
        paths, remap = _reindex(protocol.paths, np.flatnonzero(in_keep))
        labels = protocol.labels[in_keep]
        note = f"; random subset of {limit} classes (seed={seed})"
        if isinstance(protocol, RetrievalProtocol):
            q = protocol.query_indices[in_keep[protocol.query_indices]]
            g = protocol.gallery_indices[in_keep[protocol.gallery_indices]]
            return RetrievalProtocol(
                name=protocol.name, paths=paths, labels=labels, query_indices=remap[q],
                gallery_indices=remap[g], exclude_self=protocol.exclude_self,
                label_names=protocol.label_names, description=protocol.description + note)
        g = protocol.gallery_indices[in_keep[protocol.gallery_indices]]
        p = protocol.probe_indices[in_keep[protocol.probe_indices]]
        return IdentificationProtocol(
            name=protocol.name, paths=paths, labels=labels, gallery_indices=remap[g],
            probe_indices=remap[p], label_names=protocol.label_names,
            description=protocol.description + note)
    raise ConfigError(f"cannot take a subset of a {type(protocol).__name__}")


# --------------------------------------------------------------------------- describing
class _NoBar:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _rich_bar(total: int, label: str):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
    progress.start()
    task = progress.add_task(label, total=total)

    class _Bar:
        def advance(self, n: int) -> None:
            progress.advance(task, n)

        def close(self) -> None:
            progress.stop()

    return _Bar()


def describe_paths(descriptor, paths: Sequence[Path], batch_size: int = 64, workers: int = 1,
                   progress: bool = False, label: str = "describing") -> np.ndarray:
    """Describe image files in batches (through the same extraction code as
    ``Collection.add``, so vectors match a collection's stored ones bit for bit).

    Args:
        descriptor: a (fitted) :class:`~lookalike.descriptors.base.Descriptor`.
        paths: image files.
        batch_size: images per batch.
        workers: extraction processes (1 = this process).
        progress: show a rich progress bar on stderr.

    Returns:
        ``(len(paths), code_size)`` array in the descriptor's dtype, rows in ``paths`` order.

    Raises:
        InputError: some images could not be described (lists up to 5 with reasons).
    """
    from ..extraction import Job, extract

    out = np.zeros((len(paths), descriptor.code_size), dtype=descriptor.dtype)
    if not len(paths):
        return out
    row_of = {}
    for i, p in enumerate(paths):
        row_of.setdefault(str(p), []).append(i)
    jobs = [Job(p) for p in row_of]
    bar = _rich_bar(len(jobs), label) if progress else _NoBar()
    failed: list[tuple[str, str]] = []
    try:
        for results in extract(jobs, {"d": descriptor}, workers=workers, batch_size=batch_size):
            for r in results:
                if r.error is not None or "d" not in r.vectors:
                    failed.append((r.path, r.error or "no vector"))
                    continue
                out[row_of[r.path]] = r.vectors["d"]
            bar.advance(len(results))
    finally:
        bar.close()
    if failed:
        shown = "; ".join(f"{p}: {why}" for p, why in failed[:5])
        raise InputError(f"{len(failed)} of {len(jobs)} images could not be described: {shown}")
    return out


def _fit_images(protocol, data_path: Path | None) -> tuple[list[Path], str]:
    """Images a learned descriptor is fitted on, and a one-line note for the report.

    Retrieval: the gallery (for leave-one-out protocols that is every image).
    Identification: the enrolled gallery. Verification: LFW View 1 training pairs'
    images when the protocol is LFW (identity-disjoint from View 2 and from
    dev-test), otherwise the protocol's own images (optimistic: noted).
    """
    if isinstance(protocol, RetrievalProtocol):
        return [protocol.paths[i] for i in protocol.gallery_indices], "gallery images"
    if isinstance(protocol, IdentificationProtocol):
        return [protocol.paths[i] for i in protocol.gallery_indices], "enrolled gallery images"
    if protocol.name.startswith("lfw") and protocol.name != "lfw-view1-train" and data_path:
        try:
            dev = load_lfw_pairs(data_path, view="dev-train", check_files=False)
            return list(dev.paths), "LFW View 1 training-pair images (pairsDevTrain.txt)"
        except InputError:
            pass
    return list(protocol.paths), "the protocol's own images (no separate training part: optimistic)"


def _fit_descriptor(descriptor, images: list[Path], sample: int, seed: int) -> int:
    """Fit on a seeded sample of ``images``; returns how many were used."""
    rng = np.random.default_rng(seed)
    chosen = images if len(images) <= sample else [
        images[i] for i in np.sort(rng.choice(len(images), size=sample, replace=False))]
    descriptor.fit(chosen)
    return len(chosen)


def collection_vectors(coll, paths: Sequence[Path], key: str | None = None, batch_size: int = 64,
                       workers: int = 1, progress: bool = False
                       ) -> tuple[np.ndarray, int, int]:
    """Vectors of ``paths`` from a collection's store, describing the missing ones.

    Protocol paths match item paths by resolved path (the collection stores resolved
    paths). Images the collection lacks are described with the collection's own
    (fitted) descriptor, so their vectors live in the same space.

    Returns:
        ``(vectors (len(paths), code_size), n_from_collection, n_described)``.
    """
    key = key or coll.manifest["default_descriptor"]
    descriptor = coll.descriptor(key)  # raises ConfigError for an unknown key
    id_of = {row["path"]: row["id"] for row in coll.items()}
    resolved = [str(Path(p).resolve()) for p in paths]
    wanted = [id_of.get(p, -1) for p in resolved]
    ids, stored = coll.vectors(key, ids=[i for i in wanted if i >= 0])
    row_of_id = {int(i): r for r, i in enumerate(ids)}
    out = np.zeros((len(paths), descriptor.code_size), dtype=descriptor.dtype)
    missing = []
    for pos, item_id in enumerate(wanted):
        if item_id in row_of_id:
            out[pos] = stored[row_of_id[item_id]]
        else:
            missing.append(pos)
    if missing:
        out[missing] = describe_paths(descriptor, [Path(resolved[i]) for i in missing],
                                      batch_size=batch_size, workers=workers, progress=progress,
                                      label="describing images missing from the collection")
    return out, len(paths) - len(missing), len(missing)


# --------------------------------------------------------------------------- curves
def precision_recall_curve(relevant: np.ndarray, n_relevant: np.ndarray,
                           levels: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision at evenly spaced recall levels (PASCAL VOC style).

    For each query, precision at recall ``r`` is the best precision at any rank whose
    recall is ``>= r``; the curve averages that over queries with ``n_relevant > 0``.

    Args:
        relevant: ``(n_queries, width) bool``, the full ranking, best first.
        n_relevant: ``(n_queries,) int``.

    Returns:
        ``(recall_levels (levels,), precision (levels,))`` float64.
    """
    rel = np.asarray(relevant, dtype=bool)
    n_rel = np.asarray(n_relevant)
    keep = n_rel > 0
    rel, n_rel = rel[keep], n_rel[keep]
    grid = np.linspace(0.0, 1.0, levels)
    if rel.shape[0] == 0:
        raise InputError("no query has any relevant item: no precision-recall curve")
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    precision = hits / ranks
    recall = hits / n_rel[:, None]
    # Interpolate: best precision at this rank or any later one.
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((rel.shape[0], levels))
    for i in range(rel.shape[0]):
        pos = np.searchsorted(recall[i], grid, side="left")  # first rank reaching the level
        ok = pos < rel.shape[1]
        out[i, ok] = best_after[i, pos[ok]]
    return grid, out.mean(axis=0)


# --------------------------------------------------------------------------- results
@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` produced.

    Attributes:
        report: the JSON-able report (see :func:`run_evaluation`).
        plots: name -> PNG path written.
        summary: short ``[(label, value)]`` list for the console.
    """

    report: dict[str, Any]
    plots: dict[str, str] = field(default_factory=dict)
    summary: list[tuple[str, str]] = field(default_factory=list)


def _ranked_rows(distances: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                 self_index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Gallery order per query (stable, NaN last: the same order as
    :func:`metrics.ranked_relevance`) with each query's own entry removed.

    Returns:
        ``(order (n_queries, width) int64, relevant (n_queries, width) bool)``;
        ``width = n_gallery - 1`` when every query has a self entry.
    """
    orders, rels = [], []
    for start in range(0, len(distances), metrics.ROW_CHUNK):
        block = distances[start:start + metrics.ROW_CHUNK]
        order = np.argsort(block, axis=1, kind="stable")
        if self_index is not None:
            own = self_index[start:start + len(block), None]
            keep = order != own
            # Every row drops at most one entry; pad rows that kept all with -1 at the end.
            rows = [o[k] for o, k in zip(order, keep)]
            width = distances.shape[1] - int((self_index >= 0).all())
            order = np.full((len(block), width), -1, dtype=np.int64)
            for i, r in enumerate(rows):
                order[i, :min(width, len(r))] = r[:width]
        valid = order >= 0
        rel = valid & (gallery_labels[np.where(valid, order, 0)] ==
                       query_labels[start:start + len(block), None])
        orders.append(order)
        rels.append(rel)
    return np.concatenate(orders), np.concatenate(rels)


def _settings(protocol_name: str, options: dict, data_path, descriptor_spec: str,
              requested: str | None, metric: str, dim: int, source: dict, seed: int, limit: int | None,
              top_k: int) -> dict[str, Any]:
    from .. import __version__

    return {"protocol": protocol_name, "protocol_options": options,
            "data": str(data_path), "descriptor": descriptor_spec,
            "descriptor_requested": requested, "metric": metric, "dim": dim,
            "source": source, "seed": seed, "limit": limit, "top_k": top_k,
            "distances": "exact, numpy float64 (rounded to float32), smaller = closer",
            "lookalike_version": __version__, "report_format": REPORT_FORMAT}


def _retrieval_report(protocol: RetrievalProtocol, vectors: np.ndarray, metric: str,
                      top_k: int) -> tuple[dict, dict]:
    """Metrics + per-query rankings of a retrieval protocol, and arrays for the plots."""
    q_vec = vectors[protocol.query_indices]
    g_vec = vectors[protocol.gallery_indices]
    d = exact_distances(q_vec, g_vec, metric)
    scored = report.evaluate_retrieval(d, protocol, ks=(1, 5, 10, 20, 50, 100),
                                       cmc_ranks=min(50, d.shape[1]))
    self_index = protocol.self_index if protocol.exclude_self else None
    order, relevant = _ranked_rows(d, protocol.query_labels, protocol.gallery_labels, self_index)
    n_relevant = metrics.count_relevant(protocol.query_labels, protocol.gallery_labels,
                                        self_index)
    scored["map_full_check"] = metrics.mean_average_precision(relevant, n_relevant)
    if abs(scored["map_full_check"] - scored["map"]) > 1e-12:  # same sort, same flags
        raise AssertionError("ranking disagrees with metrics.ranked_relevance")
    del scored["map_full_check"]
    keep = top_k if top_k > 0 else order.shape[1]
    gallery_paths = [str(protocol.paths[i]) for i in protocol.gallery_indices]
    ap = np.full(len(order), np.nan)
    queries = []
    for i, qi in enumerate(protocol.query_indices):
        row = order[i]
        valid = row >= 0
        ranks = (np.flatnonzero(relevant[i]) + 1).tolist()
        if n_relevant[i] > 0:
            ap[i] = metrics.average_precision(relevant[i], int(n_relevant[i]))
        top = row[:keep][valid[:keep]]
        queries.append({
            "query": int(i), "path": str(protocol.paths[qi]),
            "label": _label_name(protocol, protocol.labels[qi]),
            "n_relevant": int(n_relevant[i]),
            "average_precision": None if np.isnan(ap[i]) else float(ap[i]),
            "ranked_ids": top.tolist(),
            "distances": [float(x) for x in d[i, top]],
            "relevant": [int(x) for x in relevant[i, :len(top)]],
            "relevant_ranks": ranks,
            "ranking_length": int(valid.sum()),
        })
    body = {"metrics": scored, "gallery": gallery_paths, "queries": queries}
    arrays = {"distances": d, "order": order, "relevant": relevant, "n_relevant": n_relevant,
              "ap": ap}
    return body, arrays


def _label_name(protocol, label: int) -> str:
    names = getattr(protocol, "label_names", None) or []
    return names[int(label)] if 0 <= int(label) < len(names) else str(int(label))


def _verification_report(protocol: VerificationProtocol, vectors: np.ndarray,
                         metric: str) -> tuple[dict, dict]:
    d = pair_distances(vectors[protocol.index_a], vectors[protocol.index_b], metric)
    scored = report.evaluate_verification(d, protocol)
    pairs = [{"pair": int(i), "a": str(protocol.paths[a]), "b": str(protocol.paths[b]),
              "same": bool(s), "fold": int(f), "distance": float(dist)}
             for i, (a, b, s, f, dist) in enumerate(zip(protocol.index_a, protocol.index_b,
                                                        protocol.is_same, protocol.folds, d))]
    return {"metrics": scored, "pairs": pairs}, {"distances": d}


def _identification_report(protocol: IdentificationProtocol, vectors: np.ndarray, metric: str,
                           top_k: int) -> tuple[dict, dict]:
    d = exact_distances(vectors[protocol.probe_indices], vectors[protocol.gallery_indices], metric)
    scored = report.evaluate_identification(d, protocol)
    order, relevant = _ranked_rows(d, protocol.probe_labels, protocol.gallery_labels, None)
    keep = top_k if top_k > 0 else order.shape[1]
    mated = protocol.mated
    probes = []
    for i, pi in enumerate(protocol.probe_indices):
        top = order[i, :keep]
        probes.append({"probe": int(i), "path": str(protocol.paths[pi]),
                       "label": _label_name(protocol, protocol.labels[pi]), "mated": bool(mated[i]),
                       "ranked_ids": top.tolist(), "distances": [float(x) for x in d[i, top]],
                       "relevant": [int(x) for x in relevant[i, :len(top)]]})
    body = {"metrics": scored,
            "gallery": [str(protocol.paths[i]) for i in protocol.gallery_indices],
            "probes": probes}
    n_rel = relevant.sum(axis=1)
    return body, {"distances": d, "order": order, "relevant": relevant, "n_relevant": n_rel}


# --------------------------------------------------------------------------- plots
def _grid_rows_retrieval(protocol, arrays, n_rows: int, n_results: int, best: bool,
                         query_indices, gallery_indices) -> list[dict]:
    ap = arrays["ap"]
    scored = np.flatnonzero(~np.isnan(ap))
    # Ties in AP broken by query position, so the grid is deterministic.
    ranked = scored[np.lexsort((scored, -ap[scored] if best else ap[scored]))][:n_rows]
    rows = []
    for i in ranked:
        top = arrays["order"][i, :n_results]
        top = top[top >= 0]
        rows.append({"query": protocol.paths[query_indices[i]],
                     "results": [{"image": protocol.paths[gallery_indices[j]],
                                  "distance": float(arrays["distances"][i, j]),
                                  "relevant": bool(arrays["relevant"][i, r])}
                                 for r, j in enumerate(top)]})
    return rows


def _write_plots(protocol, arrays: dict, body: dict, plot_dir: Path, title: str,
                 n_grid: int = 4, n_results: int = 8) -> dict[str, str]:
    from . import plots

    plot_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if isinstance(protocol, RetrievalProtocol):
        recall, precision = precision_recall_curve(arrays["relevant"], arrays["n_relevant"])
        written["precision_recall"] = str(plots.plot_precision_recall(
            {title: (recall, precision)}, plot_dir / "precision_recall.png",
            title=f"Precision-recall: {protocol.name}"))
        written["cmc"] = str(plots.plot_cmc({title: np.array(body["metrics"]["cmc"])},
                                            plot_dir / "cmc.png", title=f"CMC: {protocol.name}"))
        rows = (_grid_rows_retrieval(protocol, arrays, n_grid, n_results, True,
                                     protocol.query_indices, protocol.gallery_indices)
                + _grid_rows_retrieval(protocol, arrays, n_grid, n_results, False,
                                       protocol.query_indices, protocol.gallery_indices))
        written["grid"] = str(plots.plot_result_grid(
            rows, plot_dir / "best_worst.png",
            title=f"{protocol.name}, {title}: {n_grid} best then {n_grid} worst queries by AP "
                  "(green = relevant)"))
    elif isinstance(protocol, VerificationProtocol):
        scores = metrics.distances_to_scores(arrays["distances"])
        far, tar, _ = metrics.roc_curve(scores, protocol.is_same)
        auc = body["metrics"]["auc"]
        written["roc"] = str(plots.plot_roc({f"{title} (AUC {auc:.3f})": (far, tar)},
                                            plot_dir / "roc.png", title=f"ROC: {protocol.name}"))
        d = arrays["distances"]
        same = np.flatnonzero(protocol.is_same)
        diff = np.flatnonzero(~protocol.is_same)
        # Hardest pairs: different people closest together, same people farthest apart.
        hard_diff = diff[np.lexsort((diff, d[diff]))][:n_grid]
        hard_same = same[np.lexsort((same, -d[same]))][:n_grid]
        rows = [{"query": protocol.paths[protocol.index_a[i]],
                 "results": [{"image": protocol.paths[protocol.index_b[i]],
                              "distance": float(d[i]), "relevant": bool(protocol.is_same[i])}]}
                for i in np.concatenate([hard_diff, hard_same])]
        if rows:
            written["grid"] = str(plots.plot_result_grid(
                rows, plot_dir / "hardest_pairs.png",
                title="hardest pairs"))  # narrow figure: the legend is in the docstring
    elif isinstance(protocol, IdentificationProtocol):
        mated = protocol.mated
        rel = arrays["relevant"][mated]
        if rel.size:
            cmc = metrics.cmc_curve(rel, min(50, rel.shape[1]))
            written["cmc"] = str(plots.plot_cmc({title: cmc}, plot_dir / "cmc.png",
                                                title=f"CMC (mated probes): {protocol.name}"))
    return written


# --------------------------------------------------------------------------- driver
def run_evaluation(protocol_name: str, data_path: str | os.PathLike,
                   descriptor: str | None = None, db: str | os.PathLike | None = None,
                   db_key: str | None = None, options: dict[str, Any] | None = None,
                   seed: int = 0, limit: int | None = None, top_k: int = DEFAULT_TOP_K,
                   plot_dir: str | os.PathLike | None = None, batch_size: int = 64,
                   workers: int = 1, fit_sample: int = 1000, progress: bool = False
                   ) -> EvaluationResult:
    """Evaluate a descriptor spec or a collection on a protocol.

    Args:
        protocol_name: a name from :data:`lookalike.evaluation.protocols.PROTOCOL_NAMES`
            (``folder`` / ``csv`` for the user's own labelled data).
        data_path: the shared data root (or the dataset folder / labelled folder / CSV).
        descriptor: descriptor spec to evaluate (exclusive with ``db``).
        db: collection directory whose stored vectors are evaluated.
        db_key: which of the collection's descriptors (default: its default one).
        options: keyword options for the protocol loader (e.g. ``query_angle=0``).
        seed: seeds the subset (``limit``) and the fitting sample.
        limit: keep ``limit`` random classes (retrieval/identification) or pairs
            (verification).
        top_k: ranked results stored per query (0 = all).
        plot_dir: where PNGs go (None = no plots).
        batch_size, workers: describing images.
        fit_sample: images sampled to fit a learned descriptor.
        progress: rich progress bars on stderr.

    Returns:
        :class:`EvaluationResult`. ``report`` holds ``settings`` (everything needed to
        rerun), ``protocol`` (counts), ``metrics``, the per-query rankings (retrieval:
        ``gallery`` paths and ``queries[i]`` with ``ranked_ids`` (gallery positions,
        best first, the query itself removed in leave-one-out), ``distances``,
        ``relevant`` (0/1 per rank), ``n_relevant``, ``relevant_ranks`` (1-based rank of
        every relevant item in the full ranking, so mAP/MAP@R/recall@k recompute
        exactly), ``average_precision``; verification: ``pairs`` with distances;
        identification: ``probes``), and ``timing``.

    Raises:
        ConfigError: unknown protocol, option or descriptor; both or neither of
            ``descriptor`` and ``db``; an ANN (vector) protocol.
        InputError: bad data, images that cannot be read.
    """
    if (descriptor is None) == (db is None):
        raise ConfigError("give exactly one of a descriptor spec (--descriptor) or a collection (--db)")
    options = dict(options or {})
    timing: dict[str, float] = {}
    started = time.perf_counter()
    protocol = load_protocol(protocol_name, data_path, **options)
    if isinstance(protocol, AnnProtocol):
        raise ConfigError(f"{protocol_name!r} is a vector (ANN) benchmark, not an image protocol; "
                          "use `lookalike tune-index` or bench/ann.py")
    protocol = subset_protocol(protocol, limit, seed)
    timing["load_protocol_s"] = time.perf_counter() - started

    t0 = time.perf_counter()
    if descriptor is not None:
        from ..descriptors.base import make_descriptor

        desc = make_descriptor(descriptor)
        source: dict[str, Any] = {"kind": "descriptor"}
        if desc.requires_fit:
            images, what = _fit_images(protocol, Path(data_path))
            used = _fit_descriptor(desc, images, fit_sample, seed)
            source["fitted_on"] = f"{used} of {len(images)} {what} (seed={seed})"
        timing["fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vectors = describe_paths(desc, protocol.paths, batch_size=batch_size, workers=workers,
                                 progress=progress)
        source["described"] = len(protocol.paths)
    else:
        from ..collection import Collection

        with Collection.open(db) as coll:
            key = db_key or coll.manifest["default_descriptor"]
            desc = coll.descriptor(key)  # raises ConfigError for an unknown key
            vectors, n_stored, n_described = collection_vectors(
                coll, protocol.paths, key, batch_size=batch_size, workers=workers,
                progress=progress)
        source = {"kind": "collection", "collection": str(Path(db).resolve()), "key": key,
                  "from_collection": n_stored, "described": n_described}
    timing["describe_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    metric = desc.metric
    if isinstance(protocol, RetrievalProtocol):
        body, arrays = _retrieval_report(protocol, vectors, metric, top_k)
    elif isinstance(protocol, VerificationProtocol):
        body, arrays = _verification_report(protocol, vectors, metric)
    else:
        body, arrays = _identification_report(protocol, vectors, metric, top_k)
    timing["score_s"] = time.perf_counter() - t0

    out = {"settings": _settings(protocol_name, options, data_path, desc.spec, descriptor, metric, desc.dim,
                                 source, seed, limit, top_k),
           "protocol": protocol.summary()}
    body["metrics"].pop("protocol", None)
    out.update(body)
    result = EvaluationResult(report=out, summary=_summary(protocol, body["metrics"]))
    if plot_dir is not None:
        t0 = time.perf_counter()
        result.plots = _write_plots(protocol, arrays, body, Path(plot_dir), desc.spec)
        timing["plots_s"] = time.perf_counter() - t0
    out["plots"] = result.plots
    timing["total_s"] = time.perf_counter() - started
    out["timing"] = {k: round(v, 3) for k, v in timing.items()}
    return result


def _summary(protocol, m: dict[str, Any]) -> list[tuple[str, str]]:
    """A few headline numbers for the console."""
    if isinstance(protocol, RetrievalProtocol):
        rows = [("queries scored", f"{m['n_queries_scored']} of {m['n_queries']}"),
                ("gallery", str(m["n_gallery"])), ("mAP", f"{m['map']:.4f}"),
                ("MAP@R", f"{m['map_at_r']:.4f}")]
        rows += [(f"Recall@{k}", f"{v:.4f}") for k, v in m["recall_at_k"].items()]
        rows += [(f"P@{k}", f"{m['precision_at_k'][k]:.4f}") for k in ("1", "10")
                 if k in m["precision_at_k"]]
        return rows
    if isinstance(protocol, VerificationProtocol):
        rows = [("pairs", str(protocol.summary()["n_pairs"])), ("AUC", f"{m['auc']:.4f}"),
                ("EER", f"{m['eer']:.4f}")]
        if "kfold" in m:
            rows.append((f"{len(m['kfold']['fold_accuracies'])}-fold accuracy",
                         f"{m['kfold']['mean_accuracy']:.4f} ± {m['kfold']['std_accuracy']:.4f}"))
        else:
            rows.append(("accuracy at best threshold (same pairs: optimistic)",
                         f"{m['accuracy_at_best_threshold']:.4f}"))
        rows += [(f"TAR@FAR={far}", f"{t:.4f}") for far, t in m["tar_at_far"].items()]
        return rows
    rows = [("mated / non-mated probes", f"{m.get('n_mated')} / {m.get('n_nonmated')}")]
    for k, v in m.get("rank_k", {}).items():
        rows.append((f"rank-{k}", f"{v:.4f}"))
    for f, v in m.get("dir_at_fpir", {}).items():
        rows.append((f"DIR@FPIR={f}", f"{v:.4f}" if isinstance(v, float) else str(v)))
    return rows
