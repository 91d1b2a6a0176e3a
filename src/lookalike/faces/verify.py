"""Face verification: Euclidean distance between 128-d descriptors and its threshold.

dlib's convention: smaller distance = more alike; 0.6 is its usual same/different cut.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import InputError

DEFAULT_THRESHOLD = 0.6


def face_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance row by row.

    Args:
        a, b: ``(128,)`` or ``(n, 128)`` descriptors (broadcast against each other).

    Returns:
        ``float64`` distances, ``()`` or ``(n,)``; smaller = more alike.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"descriptor sizes differ: {a.shape[-1]} vs {b.shape[-1]}")
    return np.linalg.norm(a - b, axis=-1)


def verify(a: np.ndarray, b: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Decide whether two descriptors are the same person.

    Returns:
        ``{"distance": float, "threshold": float, "same": bool}`` with
        ``same = distance <= threshold``.
    """
    distance = float(face_distance(np.ravel(a), np.ravel(b)))
    if not np.isfinite(distance):
        raise InputError("a descriptor holds nan/inf (was a face found in both images?)")
    return {"distance": distance, "threshold": float(threshold), "same": bool(distance <= threshold)}


def calibrate_threshold(
    distances: np.ndarray, is_same: np.ndarray, target_far: Optional[float] = None
) -> dict:
    """Choose the distance threshold from labelled pairs.

    Args:
        distances: ``(n,)`` pair distances, smaller = more alike.
        is_same: ``(n,)`` bools, True for same-person pairs.
        target_far: when given, the largest threshold whose false-accept rate on the
            different pairs stays ``<= target_far``; else the threshold with the best
            accuracy (midpoint between neighbouring distances).

    Returns:
        ``{"threshold", "accuracy", "far", "tar", "n_pairs"}`` measured on these pairs.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(is_same, dtype=bool)
    if d.shape != y.shape or d.ndim != 1 or d.size == 0:
        raise InputError(f"distances {d.shape} and is_same {y.shape} must be equal non-empty 1-d arrays")
    if not np.all(np.isfinite(d)):
        raise InputError("distances hold nan/inf")
    if y.all() or not y.any():
        raise InputError("calibration needs both same and different pairs")
    values = np.unique(d)
    # Candidates: below everything, midpoints, the max itself (accept all).
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2.0, [values[-1]]])
    order = np.argsort(d)
    d_sorted, y_sorted = d[order], y[order]
    accepted = np.searchsorted(d_sorted, candidates, side="right")
    same_acc = np.concatenate([[0], np.cumsum(y_sorted)])[accepted]  # true accepts
    diff_acc = accepted - same_acc  # false accepts
    n_same, n_diff = int(y.sum()), int((~y).sum())
    tar = same_acc / n_same
    far = diff_acc / n_diff
    accuracy = (same_acc + (n_diff - diff_acc)) / d.size
    if target_far is None:
        best = int(np.argmax(accuracy))
    else:
        ok = np.flatnonzero(far <= target_far)
        best = int(ok[-1])  # candidates ascend, so the last admissible accepts the most
    return {
        "threshold": float(candidates[best]),
        "accuracy": float(accuracy[best]),
        "far": float(far[best]),
        "tar": float(tar[best]),
        "n_pairs": int(d.size),
    }


@dataclass(frozen=True)
class LabelledPair:
    """One LFW pair: two image paths, the truth, and its fold (0 for View 1)."""

    path_a: Path
    path_b: Path
    same: bool
    fold: int


def read_lfw_pairs(pairs_file: Union[str, os.PathLike], images_dir: Union[str, os.PathLike, None] = None) -> list[LabelledPair]:
    """Parse an LFW pairs file (View 1 ``pairsDev*.txt`` or View 2 ``pairs.txt``).

    Header ``N`` (one set) or ``folds<TAB>N``; then per fold N same lines ``name i j``
    followed by N different lines ``name1 i name2 j``. Images live at
    ``images_dir/NAME/NAME_{i:04d}.jpg`` (default: ``images`` beside the pairs file).
    """
    pairs_file = Path(pairs_file)
    images_dir = Path(images_dir) if images_dir is not None else pairs_file.parent / "images"
    lines = [ln.split() for ln in pairs_file.read_text().splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{pairs_file}: empty pairs file")
    header = [int(v) for v in lines[0]]
    folds, per_half = (1, header[0]) if len(header) == 1 else (header[0], header[1])

    def path(name: str, index: str) -> Path:
        return images_dir / name / f"{name}_{int(index):04d}.jpg"

    pairs = []
    for row, fields in enumerate(lines[1:]):
        fold = row // (2 * per_half)
        if len(fields) == 3:
            pairs.append(LabelledPair(path(fields[0], fields[1]), path(fields[0], fields[2]), True, fold))
        elif len(fields) == 4:
            pairs.append(LabelledPair(path(fields[0], fields[1]), path(fields[2], fields[3]), False, fold))
        else:
            raise InputError(f"{pairs_file}: line {row + 2} is not a pair: {' '.join(fields)}")
    if len(pairs) != folds * 2 * per_half:
        raise InputError(f"{pairs_file}: expected {folds * 2 * per_half} pairs, found {len(pairs)}")
    return pairs


def pair_descriptors(pipeline, pairs: Sequence[LabelledPair], select: Optional[str] = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed each distinct image once: the descriptors of both sides of every pair.

    Returns:
        ``(a, b, is_same)``: ``float32`` ``(n, 128)`` each (``nan`` rows where a face was
        not found) and ``bool`` ``(n,)``.
    """
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    vectors, _ = pipeline.descriptors(paths, select=select)
    row = {p: i for i, p in enumerate(paths)}
    a = vectors[[row[p.path_a] for p in pairs]]
    b = vectors[[row[p.path_b] for p in pairs]]
    return a, b, np.array([p.same for p in pairs])


def pair_distances(pipeline, pairs: Sequence[LabelledPair], select: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed each distinct image once and measure every pair.

    Returns:
        ``(distances, is_same)``: ``float64`` ``(n,)`` (``nan`` where a face was not
        found in one of the two images) and ``bool`` ``(n,)``.
    """
    a, b, is_same = pair_descriptors(pipeline, pairs, select)
    return face_distance(a, b), is_same


def calibrate_on_lfw(
    pipeline,
    lfw_dir: Union[str, os.PathLike],
    pairs_name: str = "pairsDevTrain.txt",
    target_far: Optional[float] = None,
    select: Optional[str] = None,
) -> dict:
    """Calibrate the threshold of ``pipeline`` on LFW View 1 training pairs.

    Pairs where a face is missing in either image are left out of the calibration and
    counted in ``"n_missing"``.
    """
    pairs = read_lfw_pairs(Path(lfw_dir) / pairs_name, Path(lfw_dir) / "images")
    distances, is_same = pair_distances(pipeline, pairs, select=select)
    ok = np.isfinite(distances)
    result = calibrate_threshold(distances[ok], is_same[ok], target_far=target_far)
    result["n_missing"] = int((~ok).sum())
    return result
