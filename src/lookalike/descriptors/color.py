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
    ``size`` is how many pixels a side needs: colour statistics need few (COIL-100
    nearest-neighbour accuracy is 0.992 at 64, 96, 128 and 256 px alike), so JPEGs decode
    at the smallest DCT scale that keeps both sides at least ``size``. A normalised
    histogram does not care about the pixel count, so the decoded image is counted as it
    is unless its longer side exceeds ``cap`` (``0``: ``2 * size``), and only then shrunk
    to ``cap``: no resize for most files (a 250 px JPEG decodes at 125 px and is counted
    there; resizing it to 96 px used to cost more than decoding it).
    Version 1 (collections made before ``cap`` existed) shrank every image to ``size``:
    ``cap=size`` reproduces it, and is what such collections get.
    Smaller distance = more similar.
    """

    name = "color"
    cost = "cheap"
    image_mode = "RGB"
    #: ``_transform_pixels`` also takes ``(H, W)`` gray arrays and describes them exactly
    #: as their three-channel replication (the extraction pipeline then skips the
    #: gray -> RGB expansion and the colour conversion).
    accepts_gray = True
    version = 2

    @classmethod
    def legacy_params(cls, version: int) -> dict:
        return {"cap": -1} if version < 2 else {}

    def __init__(self, space: str = "hsv", bins: int = 8, grid: int = 1,
                 norm: str = "hellinger", size: int = 96, cap: int = 0):
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
        if self.size < 1:
            raise ConfigError(f"size must be >= 1, got {size}")
        # -1 (what version 1 collections get, whatever their size): cap = size.
        self.cap = int(cap)
        if self.cap not in (0, -1) and self.cap < self.size:
            raise ConfigError(f"cap must be 0 (2 x size), -1 (= size) or at least size={self.size}, got {cap}")

    @property
    def dim(self) -> int:
        return self.bins ** 3 * self.grid ** 2

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return {0: 2 * self.size, -1: self.size}.get(self.cap, self.cap)

    @property
    def draft_side(self) -> int:
        return self.size

    def _gray_histogram(self, image: np.ndarray) -> np.ndarray:
        """Joint histogram of a gray image replicated to RGB, from its one channel: in
        RGB the pixel (v, v, v) lands on the diagonal bin; in HSV it is (0, 0, v)
        (OpenCV gives hue 0 and saturation 0 when max == min), so only the value bins
        of hue 0, saturation 0 are filled. Bit-identical to the RGB path."""
        import cv2

        b = self.bins
        cells = [image] if self.grid == 1 else [
            np.ascontiguousarray(image[r, c]) for r, c in grid_cells(*image.shape[:2], self.grid)]
        target = np.arange(b) * (b * b + b + 1) if self.space == "rgb" else np.arange(b)
        out = np.zeros((len(cells), b ** 3), dtype=np.float32)
        for i, cell in enumerate(cells):
            out[i, target] = cv2.calcHist([cell], [0], None, [b], [0, 256]).ravel()
        return out.ravel()

    def _histogram(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if image.ndim == 2:
            if self.space != "lab":
                return self._gray_histogram(image)
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)  # Lab of gray: no shortcut taken
        if self.space == "hsv":
            # OpenCV's 8-bit hue spans 0..179: bin it over [0, 180) directly.
            converted, ranges = cv2.cvtColor(image, cv2.COLOR_RGB2HSV), [0, 180, 0, 256, 0, 256]
        else:
            converted, ranges = convert_color_space(image, self.space), [0, 256] * 3
        sizes = [self.bins] * 3
        cells = [converted] if self.grid == 1 else [
            np.ascontiguousarray(converted[r, c]) for r, c in grid_cells(*converted.shape[:2], self.grid)]
        # calcHist bins uniformly: floor((v - lo) * bins / (hi - lo)), all in C.
        return np.concatenate([cv2.calcHist([cell], [0, 1, 2], None, sizes, ranges).ravel()
                               for cell in cells]).astype(np.float32)

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


@register_descriptor
class ColorMoments(Descriptor):
    """Colour moments: per channel mean, standard deviation and cube-rooted skewness.

    Computed in ``space`` (``rgb``, ``hsv`` or ``lab`` via :func:`convert_color_space`,
    channels scaled to ``[0, 1]``), per cell of a ``grid x grid`` layout (concatenated).
    The third moment enters as ``cbrt(E[(x - mean)**3])`` so all three share the units of
    the channel (Stricker & Orengo's colour moments). Metric ``l2`` on these raw moments
    (they are already comparable in scale); smaller = closer. ``dim = 9 * grid**2``.
    Note that hue is circular, so in ``hsv`` reds near 0 and 1 are far apart.
    """

    name = "colormoments"
    cost = "cheap"
    image_mode = "RGB"

    def __init__(self, space: str = "hsv", grid: int = 1, size: int = 256):
        if space not in COLOR_SPACES:
            raise ConfigError(f"unknown colour space {space!r}; valid: {', '.join(COLOR_SPACES)}")
        if not 1 <= int(grid) <= 8:
            raise ConfigError(f"grid must be in 1..8, got {grid}")
        if not 8 <= int(size) <= 4096:
            raise ConfigError(f"size must be in 8..4096, got {size}")
        self.space = space
        self.grid = int(grid)
        self.size = int(size)

    @property
    def dim(self) -> int:
        return 9 * self.grid ** 2

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return self.size

    def _moments(self, image: np.ndarray) -> np.ndarray:
        converted = convert_color_space(image, self.space).astype(np.float64) / 255.0
        parts = []
        for rows, cols in grid_cells(*converted.shape[:2], self.grid):
            cell = converted[rows, cols].reshape(-1, 3)
            if cell.shape[0] == 0:  # an image smaller than the grid: empty cell
                parts.append(np.zeros(9))
                continue
            mean = cell.mean(axis=0)
            centred = cell - mean
            std = np.sqrt((centred ** 2).mean(axis=0))
            skew = np.cbrt((centred ** 3).mean(axis=0))
            parts.append(np.concatenate([mean, std, skew]))
        return np.concatenate(parts)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        return np.stack([self._moments(p) for p in pixels]).astype(np.float32)
