"""Frequency-domain global descriptors: Fourier band energies and wavelet sub-band statistics.

Both work on the gray image resized to a fixed square (``size``), so every image of a
batch becomes one ``(n, size, size)`` array and the transforms (``np.fft``, PyWavelets)
run once over the whole batch.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from .base import Descriptor, register_descriptor


def gray_stack(pixels: list[np.ndarray], size: int) -> np.ndarray:
    """Gray ``uint8`` images (any sizes) -> ``(n, size, size)`` float32 in ``[0, 1]``.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    """
    import cv2

    out = np.empty((len(pixels), size, size), dtype=np.float32)
    for i, p in enumerate(pixels):
        if p.ndim == 3:
            p = cv2.cvtColor(p, cv2.COLOR_RGB2GRAY)
        shrink = p.shape[0] >= size and p.shape[1] >= size
        resized = cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[i] = resized
    out *= 1.0 / 255.0
    return out


def standardize_rows(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Centre each row, then scale it to unit L2 norm.

    After this, ``||a - b||**2 = 2 - 2 * corr(a, b)`` (Pearson correlation of the raw
    rows), so L2 distance compares the shape of the profile, not its level or gain.
    """
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


@lru_cache(maxsize=16)
def _band_layout(size: int, radial: int, angular: int) -> tuple[np.ndarray, np.ndarray]:
    """Assignment of ``rfft2`` bins to ``radial x angular`` bands.

    Returns:
        ``(pooling, counts)``: ``pooling`` is ``(size * (size // 2 + 1), radial * angular)``
        float32 with ``1 / count`` for the bins of each band (so ``spectrum @ pooling`` is
        the band mean); ``counts`` the number of bins per band.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fy, fx) / 0.5  # 1.0 at the Nyquist frequency along an axis
    # Real images have symmetric spectra: the half plane fx >= 0 covers every direction once.
    angle = np.mod(np.arctan2(fy, fx) + np.pi / 2, np.pi) / np.pi  # 0..1 over 180 degrees
    r_band = np.minimum((radius * radial).astype(int), radial - 1)
    a_band = np.minimum((angle * angular).astype(int), angular - 1)
    valid = (radius > 0) & (radius <= 1.0)  # drop DC (brightness) and the corners past Nyquist
    band = np.where(valid, r_band * angular + a_band, -1).ravel()
    n_bands = radial * angular
    counts = np.bincount(band[band >= 0], minlength=n_bands).astype(np.float32)
    pooling = np.zeros((band.size, n_bands), dtype=np.float32)
    rows = np.flatnonzero(band >= 0)
    pooling[rows, band[rows]] = 1.0 / np.maximum(counts[band[rows]], 1.0)
    pooling.setflags(write=False)
    return pooling, counts


@register_descriptor
class FourierDescriptor(Descriptor):
    """Log-magnitude spectrum pooled into ``radial x angular`` frequency bands.

    The gray image is resized to ``size x size``, its mean removed, multiplied by a 2-D
    Hann window (so the image border is not read as a strong edge), and transformed
    with ``rfft2``. ``log(1 + |F|)`` is averaged in each band: ``radial`` rings from DC
    to the Nyquist frequency times ``angular`` orientation sectors over 180 degrees
    (the spectrum of a real image is point-symmetric). With ``std=True`` the standard
    deviation inside each band is appended.

    Normalisation: each block (means, stds) is centred and scaled to unit L2 norm, then
    the vector is divided by ``sqrt(blocks)``: insensitive to global contrast (a gain
    adds a constant to the log spectrum), and ``l2`` distance (smaller = closer) is
    ``sqrt(2 - 2 * mean correlation of the band profiles)``.
    """

    name = "fourier"
    cost = "cheap"
    image_mode = "L"

    def __init__(self, size: int = 128, radial: int = 8, angular: int = 8, std: bool = False):
        if not 16 <= int(size) <= 1024:
            raise ConfigError(f"fourier: size must be in 16..1024, got {size}")
        if not 1 <= int(radial) <= int(size) // 4:
            raise ConfigError(f"fourier: radial must be in 1..size/4, got {radial}")
        if not 1 <= int(angular) <= 64:
            raise ConfigError(f"fourier: angular must be in 1..64, got {angular}")
        if int(radial) * int(angular) < 2:
            raise ConfigError("fourier: radial * angular must be at least 2")
        self.size = int(size)
        self.radial = int(radial)
        self.angular = int(angular)
        self.std = bool(std)

    @property
    def dim(self) -> int:
        return self.radial * self.angular * (2 if self.std else 1)

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return 2 * self.size  # JPEG draft decoding down to about twice the working size

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        images = gray_stack(pixels, self.size)
        images -= images.mean(axis=(1, 2), keepdims=True)
        window = np.hanning(self.size).astype(np.float32)
        images *= np.outer(window, window)
        log_mag = np.log1p(np.abs(np.fft.rfft2(images))).astype(np.float32)
        flat = log_mag.reshape(len(images), -1)
        pooling, _ = _band_layout(self.size, self.radial, self.angular)
        mean = flat @ pooling
        blocks = [standardize_rows(mean)]
        if self.std:
            var = np.maximum((flat * flat) @ pooling - mean * mean, 0.0)
            blocks.append(standardize_rows(np.sqrt(var)))
        return np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))


WAVELET_STATS = ("energy", "mean_abs", "std")
WAVELET_MOMENTS = ("skewness", "kurtosis")


@register_descriptor
class WaveletDescriptor(Descriptor):
    """Statistics of the sub-bands of a multi-level 2-D discrete wavelet transform.

    The gray image (``size x size``, values in ``[0, 1]``) is decomposed with
    ``pywt.wavedec2(wavelet, level=levels, mode="periodization")`` over the whole batch
    at once. For each sub-band (the approximation, then H, V, D details from the coarsest
    level to the finest, ``3 * levels + 1`` bands) it records the RMS energy, the mean
    absolute value and the standard deviation; ``moments=True`` adds skewness and
    excess kurtosis.

    Normalisation: coefficients are first divided by ``2**level`` (an orthonormal 2-D DWT
    multiplies them by 2 per level), so all bands are in pixel units; the three
    magnitude statistics are then taken as ``log(1e-4 + value)``, so l2 distance compares
    ratios (a band twice as energetic is the same step at every scale); skewness is
    clipped to [-10, 10] and kurtosis enters as ``log(4 + kurtosis) - log(4)`` (0 for a
    Gaussian). Metric ``l2``; smaller = closer.
    """

    name = "wavelet"
    cost = "cheap"
    image_mode = "L"

    def __init__(self, wavelet: str = "db2", levels: int = 3, size: int = 128, moments: bool = False):
        import pywt

        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ConfigError(
                f"wavelet: unknown discrete wavelet {wavelet!r}; e.g. haar, db2, db4, sym4, coif1, bior2.2"
            )
        if not 16 <= int(size) <= 1024:
            raise ConfigError(f"wavelet: size must be in 16..1024, got {size}")
        max_level = pywt.dwt_max_level(int(size), pywt.Wavelet(wavelet).dec_len)
        if not 1 <= int(levels) <= max(1, max_level):
            raise ConfigError(f"wavelet: levels must be in 1..{max(1, max_level)} for {wavelet} at size {size}, got {levels}")
        self.wavelet = wavelet
        self.levels = int(levels)
        self.size = int(size)
        self.moments = bool(moments)

    @property
    def n_bands(self) -> int:
        return 3 * self.levels + 1

    @property
    def dim(self) -> int:
        return self.n_bands * (len(WAVELET_STATS) + (len(WAVELET_MOMENTS) if self.moments else 0))

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self) -> int:
        return 2 * self.size

    def _band_features(self, band: np.ndarray) -> np.ndarray:
        """``(n, h, w)`` coefficients -> ``(n, k)`` normalised statistics."""
        flat = band.reshape(len(band), -1).astype(np.float64)
        mean = flat.mean(axis=1)
        centred = flat - mean[:, None]
        var = (centred ** 2).mean(axis=1)
        std = np.sqrt(var)
        features = [np.log(1e-4 + np.sqrt((flat ** 2).mean(axis=1))),
                    np.log(1e-4 + np.abs(flat).mean(axis=1)),
                    np.log(1e-4 + std)]
        if self.moments:
            safe = np.maximum(var, 1e-12)
            skew = (centred ** 3).mean(axis=1) / safe ** 1.5
            kurt = (centred ** 4).mean(axis=1) / safe ** 2 - 3.0
            features += [np.clip(skew, -10, 10), np.log(4.0 + np.maximum(kurt, -2.0)) - np.log(4.0)]
        return np.stack(features, axis=1)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        import pywt

        images = gray_stack(pixels, self.size)
        coeffs = pywt.wavedec2(images, self.wavelet, level=self.levels, mode="periodization", axes=(-2, -1))
        parts = [self._band_features(coeffs[0] / 2.0 ** self.levels)]
        for depth, details in enumerate(coeffs[1:]):
            level = self.levels - depth  # coeffs[1] is the coarsest detail level
            for band in details:
                parts.append(self._band_features(band / 2.0 ** level))
        return np.concatenate(parts, axis=1).astype(np.float32)
