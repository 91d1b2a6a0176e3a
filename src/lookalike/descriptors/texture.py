"""Texture descriptors: local binary pattern histograms and Gabor filter-bank energies.

Both work on the gray image resized to a fixed square (``size``) so the whole batch is
one ``(n, size, size)`` array and the filtering runs once over it.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from .base import Descriptor, register_descriptor
from .color import grid_cells
from .spectral import gray_stack

LBP_METHODS = ("uniform", "nri_uniform")


def _shift(images: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``out[:, r, c] = images[:, r + dr, c + dc]``, zero outside (scikit-image's cval=0)."""
    n, h, w = images.shape
    out = np.zeros_like(images)
    r0, r1 = max(0, -dr), min(h, h - dr)
    c0, c1 = max(0, -dc), min(w, w - dc)
    if r0 < r1 and c0 < c1:
        out[:, r0:r1, c0:c1] = images[:, r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    return out


def lbp_codes(images: np.ndarray, points: int = 8, radius: float = 1.0,
              method: str = "uniform") -> np.ndarray:
    """Local binary pattern codes, the same as ``skimage.feature.local_binary_pattern``.

    Vectorised over the batch: each of the ``points`` circular neighbours is one bilinear
    interpolation of shifted copies of the whole stack (outside the image counts as 0),
    with scikit-image's sampling offsets and its order of floating-point operations, so
    the codes are identical.

    Args:
        images: ``(n, H, W)`` gray images (uint8 or float).
        points: neighbours on the circle (P).
        radius: circle radius in pixels (R).
        method: ``"uniform"`` (rotation-invariant uniform patterns, codes ``0..P + 1``) or
            ``"nri_uniform"`` (non-rotation-invariant uniform, codes ``0..P(P-1) + 2``).

    Returns:
        ``(n, H, W)`` int codes.
    """
    if method not in LBP_METHODS:
        raise ConfigError(f"lbp: unknown method {method!r}; valid: {', '.join(LBP_METHODS)}")
    image = np.asarray(images, dtype=np.float64)
    angles = 2 * np.pi * np.arange(points, dtype=np.float64) / points
    rp = np.round(-radius * np.sin(angles), 5)
    cp = np.round(radius * np.cos(angles), 5)
    bits = np.empty((points,) + image.shape, dtype=bool)
    rows = np.arange(image.shape[1], dtype=np.float64)[:, None]
    cols = np.arange(image.shape[2], dtype=np.float64)[None, :]
    for i in range(points):
        # scikit-image interpolates at (r + rp, c + cp) per pixel; the fractional parts
        # are taken from those sums so rounding matches to the last bit.
        r, c = rows + rp[i], cols + cp[i]
        minr, minc = np.floor(r), np.floor(c)
        dr, dc = r - minr, c - minc
        off_r, off_c = int(np.floor(rp[i])), int(np.floor(cp[i]))
        up_r, up_c = int(np.ceil(rp[i])), int(np.ceil(cp[i]))
        top = (1 - dc) * _shift(image, off_r, off_c) + dc * _shift(image, off_r, up_c)
        bottom = (1 - dc) * _shift(image, up_r, off_c) + dc * _shift(image, up_r, up_c)
        value = (1 - dr) * top + dr * bottom
        bits[i] = value - image >= 0
    # Transitions between consecutive neighbours (not wrapping, as scikit-image counts).
    changes = np.count_nonzero(bits[:-1] != bits[1:], axis=0)
    ones = bits.sum(axis=0)
    if method == "uniform":
        return np.where(changes <= 2, ones, points + 1)
    return _nri_uniform_codes(bits, changes, ones, points)


def _nri_uniform_codes(bits: np.ndarray, changes: np.ndarray, ones: np.ndarray, points: int) -> np.ndarray:
    # scikit-image: 0 ones -> 0; P ones -> P(P-1)+1; non-uniform -> P(P-1)+2; otherwise
    # 1 + (ones - 1) * P + rot, rot = ones - first_zero if bit 0 is set, else P - first_one.
    first_one = np.argmax(bits, axis=0)
    first_zero = np.argmax(~bits, axis=0)
    rotation = np.where(bits[0], ones - first_zero, points - first_one)
    codes = np.where(changes <= 2, 1 + (ones - 1) * points + rotation, points * (points - 1) + 2)
    codes = np.where(ones == 0, 0, codes)
    return np.where(ones == points, points * (points - 1) + 1, codes)


@register_descriptor
class LBPHistogram(Descriptor):
    """Histogram of uniform local binary patterns (optionally per cell of a grid).

    The gray image is resized to ``size x size``; pixels within ``ceil(radius)`` of the
    border are left out (their circle leaves the image). ``method="uniform"`` gives
    ``points + 2`` bins (rotation invariant), ``"nri_uniform"`` ``points * (points - 1)
    + 3``. Normalised like :class:`~lookalike.descriptors.color.ColorHistogram`'s
    Hellinger option: each cell histogram sums to ``1 / cells``, then square roots, so
    the vector has unit L2 norm and l2 distance is a Hellinger distance (smaller = closer).
    """

    name = "lbp"
    cost = "cheap"
    image_mode = "L"

    def __init__(self, points: int = 8, radius: float = 1.0, method: str = "uniform",
                 grid: int = 1, size: int = 128):
        if not 4 <= int(points) <= 24:
            raise ConfigError(f"lbp: points must be in 4..24, got {points}")
        if not 0.5 <= float(radius) <= 8:
            raise ConfigError(f"lbp: radius must be in 0.5..8, got {radius}")
        if method not in LBP_METHODS:
            raise ConfigError(f"lbp: unknown method {method!r}; valid: {', '.join(LBP_METHODS)}")
        if not 1 <= int(grid) <= 8:
            raise ConfigError(f"lbp: grid must be in 1..8, got {grid}")
        if not 16 <= int(size) <= 1024:
            raise ConfigError(f"lbp: size must be in 16..1024, got {size}")
        self.points = int(points)
        self.radius = float(radius)
        self.method = method
        self.grid = int(grid)
        self.size = int(size)

    @property
    def n_bins(self) -> int:
        p = self.points
        return p + 2 if self.method == "uniform" else p * (p - 1) + 3

    @property
    def dim(self) -> int:
        return self.n_bins * self.grid ** 2

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return 2 * self.size

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        images = np.round(gray_stack(pixels, self.size) * 255.0)
        codes = lbp_codes(images, self.points, self.radius, self.method)
        border = int(np.ceil(self.radius))
        inner = codes[:, border:self.size - border, border:self.size - border]
        n, cells, bins = len(images), self.grid ** 2, self.n_bins
        cell_index = np.zeros(inner.shape[1:], dtype=np.int64)
        for k, (rows, cols) in enumerate(grid_cells(*inner.shape[1:], self.grid)):
            cell_index[rows, cols] = k
        flat = (np.arange(n)[:, None, None] * cells + cell_index) * bins + inner
        hist = np.bincount(flat.ravel(), minlength=n * cells * bins).reshape(n, cells, bins)
        freq = hist / np.maximum(hist.sum(axis=2, keepdims=True), 1) / cells
        return np.sqrt(freq.reshape(n, -1)).astype(np.float32)


@lru_cache(maxsize=8)
def _gabor_bank(size: int, scales: int, orientations: int, padded: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequency responses of complex Gabor filters (even + i * odd, from OpenCV kernels).

    Returns:
        ``(bank, wavelengths)``: ``bank`` is ``(scales * orientations, padded, padded)``
        complex64, ``fft2`` of each kernel centred at the origin.
    """
    import cv2

    wavelengths = 4.0 * 2.0 ** np.arange(scales)  # octave spacing: 4, 8, 16, ... pixels
    bank = []
    for lambd in wavelengths:
        sigma = 0.56 * lambd  # about one octave of bandwidth
        half = int(np.ceil(3 * sigma))
        half = min(half, padded // 2 - 1)
        ksize = 2 * half + 1
        for k in range(orientations):
            theta = np.pi * k / orientations
            even = cv2.getGaborKernel((ksize, ksize), sigma, theta, lambd, 0.5, 0, ktype=cv2.CV_64F)
            odd = cv2.getGaborKernel((ksize, ksize), sigma, theta, lambd, 0.5, np.pi / 2, ktype=cv2.CV_64F)
            even -= even.mean()  # no response to flat areas
            kernel = np.zeros((padded, padded), dtype=np.complex128)
            kernel[:ksize, :ksize] = even + 1j * odd
            kernel = np.roll(kernel, (-half, -half), axis=(0, 1))  # centre at (0, 0)
            response = np.fft.fft2(kernel)
            bank.append(response / np.abs(response).max())  # unit peak gain per filter
    bank = np.stack(bank).astype(np.complex64)
    bank.setflags(write=False)
    return bank, wavelengths


@register_descriptor
class GaborDescriptor(Descriptor):
    """Mean and standard deviation of Gabor response magnitudes over a filter bank.

    ``scales x orientations`` complex Gabor filters (OpenCV ``getGaborKernel`` even and odd
    kernels; wavelengths 4, 8, 16, ... pixels, sigma = 0.56 wavelength, aspect 0.5) are
    applied by FFT convolution over the whole batch; the gray image (``size x size``) is
    first normalised to zero mean and unit variance (contrast invariance) and padded by
    reflection (a quarter of the side) against wrap-around. Per filter: mean and standard deviation of the
    response magnitude (the square root of the variance, to keep both in the same units).

    Normalisation: ``log(1e-3 + value)`` per feature (scales that differ by a factor
    count the same everywhere), metric ``l2``, smaller = closer.
    """

    name = "gabor"
    cost = "moderate"
    image_mode = "L"

    def __init__(self, scales: int = 4, orientations: int = 6, size: int = 128):
        if not 1 <= int(scales) <= 6:
            raise ConfigError(f"gabor: scales must be in 1..6, got {scales}")
        if not 1 <= int(orientations) <= 16:
            raise ConfigError(f"gabor: orientations must be in 1..16, got {orientations}")
        if not 32 <= int(size) <= 512:
            raise ConfigError(f"gabor: size must be in 32..512, got {size}")
        self.scales = int(scales)
        self.orientations = int(orientations)
        self.size = int(size)

    @property
    def dim(self) -> int:
        return 2 * self.scales * self.orientations

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return 2 * self.size

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        images = gray_stack(pixels, self.size)
        images -= images.mean(axis=(1, 2), keepdims=True)
        images /= np.maximum(images.std(axis=(1, 2), keepdims=True), 1e-3)
        from scipy import fft as sfft

        pad = self.size // 4
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        bank, _ = _gabor_bank(self.size, self.scales, self.orientations, padded.shape[1])
        spectrum = sfft.fft2(padded).astype(np.complex64)
        n = len(images)
        features = np.empty((n, len(bank), 2), dtype=np.float64)
        inner = (slice(None), slice(pad, pad + self.size), slice(pad, pad + self.size))
        for f, response in enumerate(bank):
            magnitude = np.abs(sfft.ifft2(spectrum * response)[inner])
            features[:, f, 0] = magnitude.mean(axis=(1, 2))
            features[:, f, 1] = magnitude.std(axis=(1, 2))
        return np.log(1e-3 + features.reshape(n, -1)).astype(np.float32)
