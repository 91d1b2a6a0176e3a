"""Thresholds from labelled pairs, saved beside the collection and used by default.

Input: a CSV of labelled pairs ``a,b,is_duplicate`` (paths; a header row is optional;
``is_duplicate`` is 1/0, true/false or yes/no). Each pair gets the three features the
decision score reads (:mod:`lookalike.dedup.verify`): the smallest variant-hash
distance in bits (smaller = more similar) and the correlations of the aligned
thumbnails and of their edges (larger = more similar). A logistic regression on them
gives the score's weights, and the cut on the score

* maximises F1 (``target_precision=None``), or
* maximises recall among the cuts whose precision reaches ``target_precision``
  (ties broken by F1); if none does, the most precise cut is taken and flagged.

The choice is written to ``dedup.json`` beside ``manifest.json`` (or in a folder's
cache directory) atomically and read
by :func:`load_thresholds` whenever a dedup runs without explicit thresholds.
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .verify import Thresholds, design_matrix

#: Version of the saved thresholds: 2 = weights over :func:`~lookalike.dedup.verify.design_matrix`
#: (log distances of trimmed, rotation-aligned correlations); older files are ignored.
THRESHOLDS_VERSION = 2

THRESHOLDS_FILE = "dedup.json"
_TRUE = {"1", "true", "yes", "y", "t", "dup", "duplicate"}
_FALSE = {"0", "false", "no", "n", "f", "different", ""}


def read_labelled_pairs(path: str | os.PathLike) -> list[tuple[str, str, bool]]:
    """``(a, b, is_duplicate)`` rows of a labelled-pairs CSV (paths resolved against the
    CSV's folder when relative)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    rows = []
    with open(path, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < 3:
                raise InputError(f"{path}:{line_no}: expected a,b,is_duplicate, got {row!r}")
            a, b, label = (c.strip() for c in row[:3])
            if line_no == 1 and label.lower() in ("is_duplicate", "label", "duplicate"):
                continue
            if label.lower() in _TRUE:
                value = True
            elif label.lower() in _FALSE:
                value = False
            else:
                raise InputError(f"{path}:{line_no}: is_duplicate must be 1/0 or true/false, got {label!r}")
            resolve = lambda p: str((path.parent / p).resolve()) if not os.path.isabs(p) else str(Path(p).resolve())
            rows.append((resolve(a), resolve(b), value))
    if not rows:
        raise InputError(f"{path}: no labelled pairs")
    return rows


def pair_features(source, pairs: Sequence[tuple[str, str, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The decision features of labelled pairs: ``hash_distance (m,) int64``, ``ncc (m,)``,
    ``grad_ncc (m,)`` float32 and ``labels (m,) bool``.

    Args:
        source: a :class:`~lookalike.collection.Collection`, or a
            :class:`~lookalike.dedup.pipeline.Table` (e.g. of a folder).
    """
    from .pipeline import Table, collection_table

    table = source if isinstance(source, Table) else collection_table(source)[0]
    by_path = {it["path"]: i for i, it in table.items.items()}
    missing = sorted({p for a, b, _ in pairs for p in (a, b) if p not in by_path})
    if missing:
        raise InputError(f"{len(missing)} labelled files are not readable images of the folder/collection, e.g. "
                         f"{missing[0]}")
    hash_d, ncc, grad = table.features([(by_path[a], by_path[b]) for a, b, _ in pairs])
    return hash_d, ncc, grad, np.array([lab for _, _, lab in pairs], dtype=bool)


def _prf(pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 of each row of ``pred (s, m) bool`` against ``labels (m,)``."""
    tp = (pred & labels).sum(axis=1).astype(np.float64)
    n_pred = pred.sum(axis=1)
    n_true = max(int(labels.sum()), 1)
    precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 1.0)
    recall = tp / n_true
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, f1


def choose_thresholds(hash_d: np.ndarray, ncc: np.ndarray, grad: np.ndarray, labels: np.ndarray,
                      target_precision: float | None = None, base: Thresholds | None = None
                      ) -> tuple[Thresholds, dict[str, Any]]:
    """Fit the linear decision score on labelled pair features.

    A logistic regression (scikit-learn, features standardised, C=10) on ``(hash_distance,
    ncc, grad_ncc)``; then the cut on its decision function that maximises F1
    (``target_precision=None``) or recall among cuts reaching ``target_precision`` (the
    most precise cut, flagged, when none does). The cut is folded into the bias, so
    ``Thresholds.score >= 0`` reproduces the chosen predictions.

    Returns:
        ``(thresholds, scores)`` with scores ``precision``, ``recall``, ``f1``,
        ``reached_target``, ``pairs``, ``positives``, ``objective``.
    """
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        raise InputError("calibration needs both duplicate and non-duplicate pairs")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ConfigError(f"target precision must be in (0, 1], got {target_precision}")
    base = base or Thresholds()
    x = design_matrix(hash_d, ncc, grad)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    model = LogisticRegression(C=10.0, max_iter=5000).fit((x - mean) / std, labels)
    w = model.coef_[0] / std
    b = float(model.intercept_[0] - (model.coef_[0] * mean / std).sum())
    raw = x @ w + b
    cuts = np.unique(raw)
    pred = raw[None, :] >= cuts[:, None]
    p, r, f = _prf(pred, labels)
    if target_precision is None:
        best = int(np.argmax(f))
        reached = True
    else:
        ok = p >= target_precision - 1e-12
        reached = bool(ok.any())
        if reached:
            idx = np.nonzero(ok)[0]
            best = int(idx[np.lexsort((f[idx], r[idx]))[-1]])
        else:
            best = int(np.lexsort((r, p))[-1])
    # Midway to the next lower cut keeps the same predictions with a margin.
    cut = float(cuts[best])
    lower = cuts[best - 1] if best > 0 else cut - 1.0
    cut = (cut + float(lower)) / 2.0
    thresholds = Thresholds(**{**base.to_dict(), "bias": round(b - cut, 6), "w_hash": round(float(w[0]), 6),
                               "w_ncc": round(float(w[1]), 6), "w_grad": round(float(w[2]), 6)})
    final = thresholds.score(hash_d, ncc, grad) >= 0
    p1, r1, f1 = _prf(final[None, :], labels)
    scores = {"precision": float(p1[0]), "recall": float(r1[0]), "f1": float(f1[0]), "reached_target": reached,
              "pairs": int(len(labels)), "positives": int(labels.sum()),
              "objective": "best_f1" if target_precision is None else f"precision>={target_precision}"}
    return thresholds, scores


def save_thresholds(directory: str | os.PathLike, thresholds: Thresholds, scores: dict[str, Any],
                    source: str = "") -> Path:
    """Write ``dedup.json`` beside the collection's manifest."""
    from ..atomic import atomic_write_bytes

    path = Path(directory) / THRESHOLDS_FILE
    payload = {"format_version": THRESHOLDS_VERSION, "thresholds": thresholds.to_dict(), "calibration": scores,
               "source": source, "created": time.time()}
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())
    return path


def load_thresholds(directory: str | os.PathLike) -> Thresholds:
    """The collection's calibrated thresholds, or the defaults when it has none."""
    path = Path(directory) / THRESHOLDS_FILE
    if not path.exists():
        return Thresholds()
    try:
        payload = json.loads(path.read_text())
        if payload.get("format_version") != THRESHOLDS_VERSION:
            # Weights of another feature recipe would mean something else: use the
            # defaults until ``lookalike calibrate`` runs again.
            return Thresholds()
        return Thresholds.from_dict(payload["thresholds"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: unreadable dedup thresholds ({exc}); delete it or re-run calibrate") from None


def calibrate(source, pairs_csv: str | os.PathLike, target_precision: float | None = None,
              save: bool = True, directory: str | os.PathLike | None = None) -> tuple[Thresholds, dict[str, Any]]:
    """Calibrate dedup thresholds from a labelled-pairs CSV (and save them).

    Args:
        source: a collection, or a :class:`~lookalike.dedup.pipeline.Table` of a folder
            (then ``directory`` says where ``dedup.json`` goes: the folder's cache).
    """
    directory = Path(directory) if directory is not None else Path(source.directory)
    pairs = read_labelled_pairs(pairs_csv)
    hash_d, ncc, grad, labels = pair_features(source, pairs)
    thresholds, scores = choose_thresholds(hash_d, ncc, grad, labels, target_precision, base=load_thresholds(directory))
    if save:
        directory.mkdir(parents=True, exist_ok=True)
        scores["saved_to"] = str(save_thresholds(directory, thresholds, scores, source=str(pairs_csv)))
    return thresholds, scores
