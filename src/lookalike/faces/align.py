"""Five-point landmarks and aligned face chips (dlib's shape predictor + get_face_chip)."""
from __future__ import annotations

import numpy as np

from ._models import import_dlib, model_path


def _rect(dlib, box):
    left, top, right, bottom = (int(round(v)) for v in box)
    return dlib.rectangle(left, top, right, bottom)


class FaceAligner:
    """Locate 5 landmarks inside a face box and cut the aligned chip the embedder expects.

    Args:
        chip_size: side of the square chip in pixels (dlib's ResNet wants 150).
        padding: border around the landmark-defined face, as a fraction of the face
            size (dlib's ResNet was trained with 0.25).
    """

    def __init__(self, chip_size: int = 150, padding: float = 0.25):
        self.chip_size = int(chip_size)
        self.padding = float(padding)
        self._predictor = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_predictor"] = None
        return state

    def _load(self):
        if self._predictor is None:
            self._predictor = import_dlib().shape_predictor(model_path("landmarks5"))
        return self._predictor

    def landmarks(self, pixels: np.ndarray, box) -> np.ndarray:
        """Five landmarks (eye corners and the base of the nose) inside ``box``.

        Args:
            pixels: ``uint8`` ``(H, W, 3)`` RGB array.
            box: ``(left, top, right, bottom)``.

        Returns:
            ``float32`` ``(5, 2)`` array of ``(x, y)`` pixel positions.
        """
        dlib = import_dlib()
        shape = self._load()(pixels, _rect(dlib, box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def chip(self, pixels: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
        """Rotate, scale and crop the face to an upright ``uint8`` ``(S, S, 3)`` chip."""
        dlib = import_dlib()
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks)]
        shape = dlib.full_object_detection(_rect(dlib, box), points)
        return dlib.get_face_chip(pixels, shape, size=self.chip_size, padding=self.padding)
