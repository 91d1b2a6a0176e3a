"""Evaluation plots written as PNG files.

matplotlib is imported inside each function and used through ``matplotlib.figure.Figure``
with the Agg canvas, so importing this module is cheap and the global pyplot backend
is never touched (safe in servers and worker processes). Every function returns the
path it wrote.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import InputError

__all__ = ["plot_roc", "plot_precision_recall", "plot_cmc", "plot_recall_vs_qps",
           "plot_bar_table", "plot_result_grid"]

PathLike = Union[str, os.PathLike]


def _figure(width: float = 6.4, height: float = 4.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _need_curves(curves: Mapping, what: str) -> None:
    if not curves:
        raise InputError(f"{what}: nothing to plot (empty mapping)")


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: PathLike,
             title: str = "ROC") -> Path:
    """ROC curves, TAR against FAR on a log FAR axis.

    Args:
        curves: name -> ``(far, tar)`` arrays (e.g. from ``metrics.roc_curve``); points
            with FAR = 0 cannot sit on a log axis and are dropped.
        path: PNG to write.
    """
    _need_curves(curves, "plot_roc")
    fig = _figure()
    ax = fig.add_subplot()
    lowest = 1.0
    for name, (far, tar) in curves.items():
        far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
        keep = far > 0
        if keep.any():
            lowest = min(lowest, far[keep].min())
        ax.plot(far[keep], tar[keep], label=name, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlim(max(lowest, 1e-6), 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR, log scale)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: PathLike,
                          title: str = "Precision-recall") -> Path:
    """Precision against recall.

    Args:
        curves: name -> ``(recall, precision)`` arrays (e.g. from
            ``sklearn.metrics.precision_recall_curve`` reordered, or per-rank values).
        path: PNG to write.
    """
    _need_curves(curves, "plot_precision_recall")
    fig = _figure()
    ax = fig.add_subplot()
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_cmc(curves: Mapping[str, np.ndarray], path: PathLike,
             title: str = "Cumulative match characteristic") -> Path:
    """CMC curves: identification rate against rank (1-based).

    Args:
        curves: name -> ``(max_rank,)`` array, entry ``r - 1`` = rate at rank ``r``
            (e.g. from ``metrics.cmc_curve``).
        path: PNG to write.
    """
    _need_curves(curves, "plot_cmc")
    fig = _figure()
    ax = fig.add_subplot()
    for name, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=float)
        ax.plot(np.arange(1, cmc.size + 1), cmc, marker="o", markersize=3, label=name)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_recall_vs_qps(points: Mapping[str, Sequence[tuple[float, float]]], path: PathLike,
                       title: str = "Recall vs queries per second", recall_label: str = "recall@10"
                       ) -> Path:
    """The ANN trade-off: queries per second (log scale) against recall, one line per
    index family (points sorted by recall), up and right is better.

    Args:
        points: name -> list of ``(recall, qps)`` operating points.
        path: PNG to write.
    """
    _need_curves(points, "plot_recall_vs_qps")
    fig = _figure()
    ax = fig.add_subplot()
    for name, pts in points.items():
        pts = sorted((float(r), float(q)) for r, q in pts)
        if not pts:
            continue
        recall, qps = zip(*pts)
        ax.plot(recall, qps, marker="o", markersize=4, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(recall_label)
    ax.set_ylabel("queries per second (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_bar_table(values: Mapping[str, Mapping[str, float]], path: PathLike,
                   title: str = "", ylabel: str = "score", ylim: tuple[float, float] | None = (0, 1)
                   ) -> Path:
    """Grouped bars comparing methods (descriptors, losses) on several metrics.

    Args:
        values: method -> {metric name -> value}; metrics missing for a method leave a gap.
        path: PNG to write.
        ylim: y-axis range (None = automatic).
    """
    _need_curves(values, "plot_bar_table")
    methods = list(values)
    metric_names = list(dict.fromkeys(m for row in values.values() for m in row))
    width = 0.8 / max(len(metric_names), 1)
    fig = _figure(max(6.4, 0.9 * len(methods) * max(1, len(metric_names)) ** 0.5 + 2), 4.8)
    ax = fig.add_subplot()
    x = np.arange(len(methods))
    for j, metric in enumerate(metric_names):
        heights = [values[m].get(metric, np.nan) for m in methods]
        bars = ax.bar(x + (j - (len(metric_names) - 1) / 2) * width, heights, width, label=metric)
        ax.bar_label(bars, fmt="%.3g", fontsize=6, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize="small")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def _thumbnail(image: Any, size: int) -> np.ndarray:
    """A path / bytes / array -> RGB uint8 array no larger than ``size``."""
    from ..images import load_pixels

    return load_pixels(image, mode="RGB", max_side=size)


def plot_result_grid(rows: Sequence[Mapping[str, Any]], path: PathLike, thumb_size: int = 96,
                     title: str = "") -> Path:
    """Query thumbnails (first column) and their top-k results.

    Args:
        rows: one per query: ``{"query": image, "results": [{"image": image,
            "distance": float, "relevant": bool | None}, ...]}`` where an image is a
            path, bytes or array accepted by :func:`lookalike.images.load_pixels`.
            Relevant results get a green frame, irrelevant ones red, unknown (None) grey;
            the distance is printed under each result.
        path: PNG to write.
        thumb_size: longest side of each thumbnail in pixels.
    """
    from matplotlib.patches import Rectangle

    if not rows:
        raise InputError("plot_result_grid: no rows")
    n_cols = 1 + max(len(r.get("results", [])) for r in rows)
    cell = thumb_size / 72.0  # inches per cell at 72 px/inch, so thumbnails stay crisp
    fig = _figure(n_cols * cell * 0.75 + 0.2, len(rows) * (cell * 0.75 + 0.3) + 0.3)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    colours = {True: "#1a9850", False: "#d73027", None: "#888888"}
    for i, row in enumerate(rows):
        cells = [(row["query"], None, "query")] + [
            (r["image"], r.get("distance"), r.get("relevant")) for r in row.get("results", [])]
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(cells):
                ax.axis("off")
                continue
            image, distance, relevant = cells[j]
            pixels = _thumbnail(image, thumb_size)
            ax.imshow(pixels)
            h, w = pixels.shape[:2]
            if j == 0:
                ax.set_xlabel("query", fontsize=7)
                colour = "#2166ac"
            else:
                colour = colours[None if relevant is None else bool(relevant)]
                if distance is not None:
                    ax.set_xlabel(f"{float(distance):.3g}", fontsize=7)
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=colour,
                                   linewidth=3))
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
