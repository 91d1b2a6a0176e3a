"""Thresholds from labelled pairs, saved beside the collection and used by default.

Input: a CSV of labelled pairs ``a,b,is_duplicate`` (paths; a header row is optional;
``is_duplicate`` is 1/0, true/false or yes/no). Each pair gets the two features the
decision rule reads (:mod:`lookalike.dedup.verify`): the CNN cosine similarity (larger =
more similar) and the smallest variant-hash distance in bits (smaller = more similar).
A grid search over ``(hash_radius, cnn_hash, cnn_any)`` then picks the rule that

* maximises F1 (``target_precision=None``), or
* maximises recall among the settings whose precision reaches ``target_precision``
  (ties broken by F1); if none does, the most precise setting is taken and flagged.

The choice is written to ``dedup.json`` beside ``manifest.json`` (atomically) and read
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
from .verify import Thresholds

THRESHOLDS_FILE = "dedup.json"
RADII = tuple(range(0, 17))
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


def pair_features(coll, pairs: Sequence[tuple[str, str, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CNN similarity ``(m,) float32`` (or NaN without CNN vectors), variant-hash distance
    ``(m,) int64`` and label ``(m,) bool`` of labelled pairs of collection items."""
    from ..descriptors.hashing import hamming_distance
    from .pipeline import _variant_store, descriptor_keys

    hash_key, cnn_key = descriptor_keys(coll)
    by_path = {row["path"]: row for row in coll.items()}
    missing = sorted({p for a, b, _ in pairs for p in (a, b) if p not in by_path})
    if missing:
        raise InputError(f"{len(missing)} labelled files are not (readable) items of the collection, e.g. "
                         f"{missing[0]}; add them first (lookalike add)")
    ids = sorted({by_path[p]["id"] for a, b, _ in pairs for p in (a, b)})
    sims = np.full(len(pairs), np.nan, np.float32)
    if cnn_key is not None:
        vid, vecs = coll.vectors(cnn_key, ids=ids)
        lookup = dict(zip(vid.tolist(), vecs))
        sims = np.array([float(np.dot(lookup[by_path[a]["id"]], lookup[by_path[b]["id"]])) for a, b, _ in pairs],
                        np.float32)
    hash_d = np.full(len(pairs), 1 << 10, np.int64)
    if hash_key is not None:
        store = _variant_store(coll, hash_key)
        store.update([by_path[p] for p in {p for a, b, _ in pairs for p in (a, b)}])
        sid, svar = store.get(ids)
        var = dict(zip(sid.tolist(), svar))
        for i, (a, b, _) in enumerate(pairs):
            va, vb = var.get(by_path[a]["id"]), var.get(by_path[b]["id"])
            if va is None or vb is None:
                continue
            hash_d[i] = min(int(hamming_distance(va, np.broadcast_to(vb[0], va.shape)).min()),
                            int(hamming_distance(vb, np.broadcast_to(va[0], vb.shape)).min()))
    labels = np.array([lab for _, _, lab in pairs], dtype=bool)
    return sims, hash_d, labels


def _prf(pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 of each row of ``pred (s, m) bool`` against ``labels (m,)``."""
    tp = (pred & labels).sum(axis=1).astype(np.float64)
    n_pred = pred.sum(axis=1)
    n_true = max(int(labels.sum()), 1)
    precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 1.0)
    recall = tp / n_true
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, f1


def choose_thresholds(sims: np.ndarray, hash_d: np.ndarray, labels: np.ndarray,
                      target_precision: float | None = None, radii: Sequence[int] = RADII,
                      base: Thresholds | None = None, n_levels: int = 80) -> tuple[Thresholds, dict[str, Any]]:
    """Grid search of the decision rule on labelled pair features.

    Args:
        sims: ``(m,)`` CNN similarities (all NaN: hash-only collections).
        hash_d: ``(m,)`` variant-hash distances in bits.
        labels: ``(m,)`` True for duplicates.
        target_precision: None for best F1, else the precision to reach.

    Returns:
        ``(thresholds, scores)`` with scores ``precision``, ``recall``, ``f1``,
        ``reached_target``, ``pairs``, ``positives``.
    """
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        raise InputError("calibration needs both duplicate and non-duplicate pairs")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ConfigError(f"target precision must be in (0, 1], got {target_precision}")
    base = base or Thresholds()
    sims = np.asarray(sims, np.float64)
    hash_d = np.asarray(hash_d)
    best: tuple | None = None

    def consider(p, r, f, make):
        nonlocal best
        for i in range(len(p)):
            reached = target_precision is None or p[i] >= target_precision - 1e-12
            key = (reached, f[i] if target_precision is None else (r[i] if reached else p[i]), f[i])
            if best is None or key > best[0]:
                best = (key, make(i), {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                       "reached_target": bool(reached)})

    if np.isnan(sims).all():
        pred = np.stack([hash_d <= r for r in radii])
        p, r, f = _prf(pred, labels)
        consider(p, r, f, lambda i: Thresholds(**{**base.to_dict(), "hash_only_radius": int(radii[i])}))
    else:
        finite = np.nan_to_num(sims, nan=-1.0)
        levels = np.unique(np.quantile(finite, np.linspace(0, 1, n_levels)))
        levels = np.unique(np.concatenate([levels, [1.01]]))  # 1.01: "never" for cnn_any
        above = finite[None, :] >= levels[:, None]             # (L, m)
        for radius in radii:
            near = hash_d <= radius
            for ia, t_any in enumerate(levels):
                t_hash = levels[: ia + 1]
                pred = above[ia][None, :] | (near[None, :] & above[: ia + 1])
                p, r, f = _prf(pred, labels)
                consider(p, r, f, lambda i, radius=radius, t_any=t_any, t_hash=t_hash: Thresholds(
                    **{**base.to_dict(), "hash_radius": int(radius), "cnn_hash": round(float(t_hash[i]), 6),
                       "cnn_any": round(float(t_any), 6)}))
    thresholds, scores = best[1], best[2]
    scores.update({"pairs": int(len(labels)), "positives": int(labels.sum()),
                   "objective": "best_f1" if target_precision is None else f"precision>={target_precision}"})
    return thresholds, scores


def save_thresholds(directory: str | os.PathLike, thresholds: Thresholds, scores: dict[str, Any],
                    source: str = "") -> Path:
    """Write ``dedup.json`` beside the collection's manifest."""
    from ..index.faiss import atomic_write_bytes

    path = Path(directory) / THRESHOLDS_FILE
    payload = {"format_version": 1, "thresholds": thresholds.to_dict(), "calibration": scores,
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
        return Thresholds.from_dict(payload["thresholds"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable dedup thresholds ({exc}); delete it or re-run calibrate") from None


def calibrate(coll, pairs_csv: str | os.PathLike, target_precision: float | None = None,
              save: bool = True) -> tuple[Thresholds, dict[str, Any]]:
    """Calibrate the collection's dedup thresholds from a labelled-pairs CSV (and save them)."""
    pairs = read_labelled_pairs(pairs_csv)
    sims, hash_d, labels = pair_features(coll, pairs)
    thresholds, scores = choose_thresholds(sims, hash_d, labels, target_precision, base=load_thresholds(coll.directory))
    if save:
        scores["saved_to"] = str(save_thresholds(coll.directory, thresholds, scores, source=str(pairs_csv)))
    return thresholds, scores
