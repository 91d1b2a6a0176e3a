"""Colour histograms (joint bins in RGB, HSV or Lab) and colour moments."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Descriptor, l2_normalize, register_descriptor

COLOR_SPACES = ("rgb", "hsv", "lab")
NORMS = ("hellinger", "l1", "l2")


def convert_color_space(rgb: np.ndarray, space: str) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> the same shape in ``space``, each channel in 0..255.

    OpenCV's 8-bit conversions are used (hue is 0..179 there, so it is rescaled to 0..255).
    """
    if space == "rgb":
        return rgb
    import cv2

    if space == "hsv":
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.uint16) * 255 // 180).astype(np.uint8)
        return hsv
    if space == "lab":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    raise ConfigError(f"unknown colour space {space!r}; valid: {', '.join(COLOR_SPACES)}")


def grid_cells(height: int, width: int, grid: int) -> list[tuple[slice, slice]]:
    """Row/column slices of a ``grid x grid`` layout covering the image."""
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    return [(slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1]))
            for i in range(grid) for j in range(grid)]


@register_descriptor
class ColorHistogram(Descriptor):
    """Joint colour histogram with ``bins`` levels per channel (``bins**3`` cells).

    Normalisation makes the metric meaningful:

    * ``hellinger`` (default): L1-normalise, square-root, then L2 distance equals the
      Hellinger distance (up to a factor) and inner product the Bhattacharyya coefficient;
    * ``l1``: plain frequencies, L2 metric;
    * ``l2``: L2-normalised counts, cosine-like.

    ``grid > 1`` concatenates one histogram per cell of a ``grid x grid`` layout.
    Smaller distance = more similar.
    """

    name = "color"
    cost = "cheap"
    image_mode = "RGB"

    def __init__(self, space: str = "hsv", bins: int = 8, grid: int = 1,
                 norm: str = "hellinger", size: int = 256):
        if space not in COLOR_SPACES:
            raise ConfigError(f"unknown colour space {space!r}; valid: {', '.join(COLOR_SPACES)}")
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        if not 2 <= int(bins) <= 64:
            raise ConfigError(f"bins must be in 2..64, got {bins}")
        if not 1 <= int(grid) <= 8:
            raise ConfigError(f"grid must be in 1..8, got {grid}")
        self.space = space
        self.bins = int(bins)
        self.grid = int(grid)
        self.norm = norm
        self.size = int(size)

    @property
    def dim(self) -> int:
        return self.bins ** 3 * self.grid ** 2

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return self.size

    def _histogram(self, image: np.ndarray) -> np.ndarray:
        converted = convert_color_space(image, self.space)
        # Integer bin index per channel, then one joint index per pixel.
        q = (converted.astype(np.uint16) * self.bins) >> 8
        joint = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]
        cells = self.bins ** 3
        if self.grid == 1:
            return np.bincount(joint.ravel(), minlength=cells).astype(np.float32)
        parts = [np.bincount(joint[r, c].ravel(), minlength=cells)
                 for r, c in grid_cells(*joint.shape, self.grid)]
        return np.concatenate(parts).astype(np.float32)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        hist = np.stack([self._histogram(p) for p in pixels])
        if self.grid > 1:
            hist = hist.reshape(len(pixels), self.grid ** 2, -1)
        sums = np.maximum(hist.sum(axis=-1, keepdims=True), 1.0)
        freq = hist / sums
        if self.grid > 1:
            freq = freq.reshape(len(pixels), -1) / self.grid ** 2  # each cell weighs 1/grid^2 in L1
        if self.norm == "hellinger":
            return np.sqrt(freq)
        if self.norm == "l2":
            return l2_normalize(freq)
        return freq
