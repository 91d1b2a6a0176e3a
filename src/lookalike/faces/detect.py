"""Face detection: dlib's HOG sliding-window detector or its CNN (MMOD) detector."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ._models import import_dlib, model_path

DETECTOR_MODELS = ("hog", "cnn")


@dataclass(frozen=True)
class Detection:
    """One detected face box.

    Attributes:
        box: ``(left, top, right, bottom)`` in pixels, dlib's inclusive rectangle; it may
            reach slightly outside the image.
        score: detector confidence, larger is surer (HOG: SVM margin; CNN: MMOD score).
    """

    box: tuple[int, int, int, int]
    score: float


class FaceDetector:
    """Find face boxes in an RGB image.

    Args:
        upsample: how many times the image is doubled before scanning. Each step finds
            faces half as large and costs about 4x the time (HOG on a 250x250 LFW image:
            about 9 ms at 0, 35 ms at 1, 150 ms at 2).
        min_score: keep detections whose score exceeds this (HOG: passed to dlib as
            ``adjust_threshold``, so negative values find more, weaker faces).
        model: ``"hog"`` (fast, frontal faces) or ``"cnn"`` (MMOD; slower on CPU, about
            0.5 s per 250x250 image, more robust to pose).
    """

    def __init__(self, upsample: int = 1, min_score: float = 0.0, model: str = "hog"):
        if model not in DETECTOR_MODELS:
            raise ConfigError(f"unknown face detector model {model!r}; valid: {', '.join(DETECTOR_MODELS)}")
        if int(upsample) < 0:
            raise ConfigError(f"upsample must be >= 0, not {upsample}")
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.model = model
        self._impl = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_impl"] = None  # dlib objects do not pickle; rebuilt lazily
        return state

    def _load(self):
        if self._impl is None:
            dlib = import_dlib()
            if self.model == "hog":
                self._impl = dlib.get_frontal_face_detector()
            else:
                self._impl = dlib.cnn_face_detection_model_v1(model_path("mmod"))
        return self._impl

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        """Detect faces.

        Args:
            pixels: ``uint8`` ``(H, W, 3)`` RGB array (or ``(H, W)`` gray).

        Returns:
            Detections sorted by descending score (possibly empty).
        """
        impl = self._load()
        if self.model == "hog":
            rects, scores, _ = impl.run(pixels, self.upsample, self.min_score)
            found = [(r, float(s)) for r, s in zip(rects, scores)]
        else:
            found = [(m.rect, float(m.confidence)) for m in impl(pixels, self.upsample)]
            found = [(r, s) for r, s in found if s > self.min_score]
        detections = [
            Detection((int(r.left()), int(r.top()), int(r.right()), int(r.bottom())), s) for r, s in found
        ]
        return sorted(detections, key=lambda d: -d.score)
