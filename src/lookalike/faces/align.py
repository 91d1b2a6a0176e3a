"""Five- (or 68-) point landmarks and aligned face chips (dlib's shape predictor + get_face_chip)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ._models import import_dlib, model_path


def _rect(dlib, box):
    left, top, right, bottom = (int(round(v)) for v in box)
    return dlib.rectangle(left, top, right, bottom)


class FaceAligner:
    """Locate landmarks inside a face box and cut the aligned chip the embedder expects.

    Args:
        chip_size: side of the square chip in pixels (dlib's ResNet wants 150).
        padding: border around the landmark-defined face, as a fraction of the face
            size (dlib's ResNet was trained with 0.25).
        landmarks: 5 (dlib's 5-point model: eye corners and nose base; the default) or 68
            (the iBUG 68-point model, ~100 MB, slower to load: ``get_face_chip`` then
            aligns on the 51 inner points, brows, eyes, nose and mouth).
    """

    def __init__(self, chip_size: int = 150, padding: float = 0.25, landmarks: int = 5):
        if int(landmarks) not in (5, 68):
            raise ConfigError(f"landmarks must be 5 or 68, not {landmarks!r}")
        self.chip_size = int(chip_size)
        self.padding = float(padding)
        self.num_landmarks = int(landmarks)
        self._predictor = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_predictor"] = None
        return state

    def _load(self):
        if self._predictor is None:
            self._predictor = import_dlib().shape_predictor(model_path(f"landmarks{self.num_landmarks}"))
        return self._predictor

    def landmarks(self, pixels: np.ndarray, box) -> np.ndarray:
        """The 5 (eye corners and the base of the nose) or 68 landmarks inside ``box``.

        Args:
            pixels: ``uint8`` ``(H, W, 3)`` RGB array.
            box: ``(left, top, right, bottom)``.

        Returns:
            ``float32`` ``(5, 2)`` or ``(68, 2)`` array of ``(x, y)`` pixel positions.
        """
        dlib = import_dlib()
        shape = self._load()(pixels, _rect(dlib, box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def chip(self, pixels: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
        """Rotate, scale and crop the face to an upright ``uint8`` ``(S, S, 3)`` chip.

        ``landmarks`` may hold 5 or 68 points (dlib aligns on whichever it is given).
        """
        dlib = import_dlib()
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks)]
        shape = dlib.full_object_detection(_rect(dlib, box), points)
        return dlib.get_face_chip(pixels, shape, size=self.chip_size, padding=self.padding)
