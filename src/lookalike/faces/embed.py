"""128-d face descriptors from aligned chips (dlib's ResNet, 99.38% on colour LFW)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._models import import_dlib, model_path

DESCRIPTOR_DIM = 128


class FaceEmbedder:
    """Map aligned 150x150 chips to 128-d descriptors; compare them by Euclidean distance.

    Args:
        num_jitters: dlib's test-time jitter: each chip is randomly shifted/zoomed/
            flipped this many times and the descriptors averaged (0 or 1 = none; cost
            grows linearly).
        mirror: also embed the horizontally flipped chip and average the two
            descriptors (2x cost).
        batch_size: chips per call to dlib (one batched call is cheaper per chip than
            one call per chip).
        normalize: scale each final descriptor (after mirror averaging) to unit length,
            so that Euclidean distance is a monotone function of cosine similarity. On
            LFW View 2 (grayscale) this lifted the mirrored pipeline from 98.82% to 98.97%
            but lowered the unmirrored one (98.67% -> 98.53%); distances shrink by about
            1/1.41, so its same/different cut is about 0.42 instead of 0.6.
    """

    def __init__(self, num_jitters: int = 0, mirror: bool = False, batch_size: int = 16,
                 normalize: bool = False):
        self.num_jitters = int(num_jitters)
        self.mirror = bool(mirror)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self._model = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def _load(self):
        if self._model is None:
            self._model = import_dlib().face_recognition_model_v1(model_path("resnet"))
        return self._model

    def _raw(self, chips: list[np.ndarray]) -> np.ndarray:
        model = self._load()
        out = np.empty((len(chips), DESCRIPTOR_DIM), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = [np.ascontiguousarray(c) for c in chips[start : start + self.batch_size]]
            # Overload "list of aligned chips": one forward pass for the whole batch.
            vectors = model.compute_face_descriptor(batch, self.num_jitters)
            out[start : start + len(batch)] = np.array([np.array(v) for v in vectors], dtype=np.float32)
        return out

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors of aligned chips.

        Args:
            chips: ``uint8`` ``(150, 150, 3)`` arrays cut by :class:`FaceAligner`.

        Returns:
            ``float32`` ``(n, 128)``; compare with Euclidean distance (smaller = more
            alike; about 0.6 separates same from different people, about 0.42 when
            ``normalize``).
        """
        chips = list(chips)
        if not chips:
            return np.zeros((0, DESCRIPTOR_DIM), dtype=np.float32)
        if not self.mirror:
            out = self._raw(chips)
        else:  # one batched pass over the chips and their mirror images
            both = self._raw(chips + [np.ascontiguousarray(c[:, ::-1]) for c in chips])
            out = (both[: len(chips)] + both[len(chips) :]) / 2.0
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
