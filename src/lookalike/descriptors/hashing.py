"""Perceptual hashes (average, difference, DCT, wavelet, colour) as packed bits.

Each family reproduces the definition of the ``imagehash`` library (version 4.3) bit for
bit: ``str(imagehash.phash(Image.open(f)))`` equals ``to_hex(PerceptualHash().transform([f])[0])``
for ordinary RGB and gray files. The difference is speed: the numeric part (Lanczos
resize, DCT, wavelets, medians, comparisons) runs as one array operation over all images
of the same size instead of one Python call per image.

Bits are stored packed (``np.packbits``, most significant bit first) in imagehash's
flattening order (row-major over the ``hash_size x hash_size`` grid), so a packed row,
read as one big-endian integer, is the integer whose hex string imagehash prints. When a
family's bit count is not a multiple of 8 (colorhash with ``binbits=3``: 42 bits) the row
is padded with zero bits at the front, which keeps that integer unchanged and adds
nothing to Hamming distances.

Metric: ``hamming`` (number of differing bits; smaller = more similar).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .base import Descriptor, register_descriptor

HASH_FAMILIES = ("ahash", "dhash", "phash", "whash", "colorhash")
#: Order of the images :func:`hash_variants` returns.
VARIANTS = ("identity", "hflip", "rot90", "rot180", "rot270")

# Pillow's fixed-point resampling: coefficients scaled by 2**22 (Resample.c, 8 bits/channel).
_PRECISION_BITS = 32 - 8 - 2
# Images are resized in chunks of at most this many input pixels (float64 work arrays).
_CHUNK_PIXELS = 1 << 22


# --------------------------------------------------------------------------------------
# Pillow-exact primitives, vectorised
# --------------------------------------------------------------------------------------
def pil_luma(rgb: np.ndarray) -> np.ndarray:
    """RGB -> gray exactly as Pillow's ``convert("L")`` (ITU-R 601-2 luma, fixed point).

    Args:
        rgb: ``(..., 3)`` uint8.

    Returns:
        ``(...)`` uint8: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``.
    """
    rgb = rgb.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _lanczos(x: float) -> float:
    # Pillow's lanczos_filter: sinc(x) * sinc(x / 3) on [-3, 3).
    def sinc(v: float) -> float:
        if v == 0.0:
            return 1.0
        v = v * math.pi
        return math.sin(v) / v

    if -3.0 <= x < 3.0:
        return sinc(x) * sinc(x / 3.0)
    return 0.0


@lru_cache(maxsize=256)
def _lanczos_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's integer Lanczos coefficients as a dense ``(out_size, in_size)`` float64 matrix.

    Follows ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` of Pillow's Resample.c with
    the same double-precision operations (Python floats call the same C ``sin``), so the
    integer coefficients are identical. Values are integers below 2**23, so float64
    matrix products over uint8 pixels are exact.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ss = 1.0 / filterscale
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for w in weights:
            total += w
        for x, w in enumerate(weights):
            k = w / total if total != 0.0 else w
            fixed = int(-0.5 + k * (1 << _PRECISION_BITS)) if k < 0 else int(0.5 + k * (1 << _PRECISION_BITS))
            matrix[xx, xmin + x] = fixed
    matrix.setflags(write=False)
    return matrix


def _fixed_point_round(acc: np.ndarray) -> np.ndarray:
    # Pillow: (sum + 2**21) >> 22, clipped to 0..255 (arithmetic shift = floor).
    return np.clip(np.floor((acc + (1 << (_PRECISION_BITS - 1))) * (1.0 / (1 << _PRECISION_BITS))), 0, 255)


def _passes(gray: np.ndarray, kx: np.ndarray | None, ky: np.ndarray | None, vertical_first: bool) -> np.ndarray:
    x = gray.astype(np.float64)
    if vertical_first:
        if ky is not None:
            x = _fixed_point_round(np.matmul(ky, x))
        if kx is not None:
            x = _fixed_point_round(x @ kx)
    else:
        if kx is not None:
            x = _fixed_point_round(x @ kx)
        if ky is not None:
            x = _fixed_point_round(np.matmul(ky, x))
    return x


def _vertical_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Whether this Pillow resamples rows (vertical pass) before columns.

    Pillow >= 13 runs the vertical pass first when the height shrinks by more than
    twice as many pixels as the width (python-pillow/Pillow#9549); older versions always
    run the horizontal pass first. Which rule the installed Pillow follows is probed once.
    """
    return _pillow_pass_rule() == "pillow13" and in_h >= out_h and (in_h - out_h) > 2 * (in_w - out_w)


@lru_cache(maxsize=1)
def _pillow_pass_rule() -> str:
    """Probe the installed Pillow once: ``"pillow13"``, ``"horizontal"`` or ``"unknown"``."""
    from PIL import Image

    # A tall image shrunk mostly in height, where the two pass orders round differently.
    probe = np.random.default_rng(0).integers(0, 256, (3, 97, 31), dtype=np.uint8)
    want = np.stack([np.asarray(Image.fromarray(p).resize((29, 11), Image.LANCZOS)) for p in probe])
    kx, ky = _lanczos_matrix(31, 29).T, _lanczos_matrix(97, 11)
    if np.array_equal(_passes(probe, kx, ky, True), want):
        return "pillow13"
    if np.array_equal(_passes(probe, kx, ky, False), want):
        return "horizontal"
    return "unknown"


def lanczos_resize(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a batch of gray images exactly as Pillow's ``resize((width, height), LANCZOS)``.

    Pillow resamples in two separable passes, rounding to uint8 between them; both
    passes run here as float64 matrix products (exact, see :func:`_lanczos_matrix`) over
    the whole batch, in the pass order the installed Pillow uses. Should a Pillow
    version follow neither known order, each image is resized by Pillow itself.

    Args:
        gray: ``(n, H, W)`` uint8, all images the same size.
        width, height: output size.

    Returns:
        ``(n, height, width)`` uint8, bit-identical to Pillow.
    """
    n, in_h, in_w = gray.shape
    if (in_w, in_h) == (width, height):
        return gray.copy()
    if _pillow_pass_rule() == "unknown":
        from PIL import Image

        return np.stack([np.asarray(Image.fromarray(g).resize((width, height), Image.LANCZOS)) for g in gray])
    out = np.empty((n, height, width), dtype=np.uint8)
    step = max(1, _CHUNK_PIXELS // max(1, in_h * in_w))
    kx = _lanczos_matrix(in_w, width).T if in_w != width else None
    ky = _lanczos_matrix(in_h, height) if in_h != height else None
    vertical_first = _vertical_first(in_h, in_w, height, width)
    for start in range(0, n, step):
        out[start:start + step] = _passes(gray[start:start + step], kx, ky, vertical_first)
    return out


def _as_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return pil_luma(image)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise InputError(f"expected an (H, W) or (H, W, 3) uint8 image, got shape {image.shape}")


def _groups_by_shape(images: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape, []).append(i)
    return groups


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """``(n, nbits)`` bool -> ``(n, ceil(nbits / 8))`` uint8, zero-padded at the front."""
    n, nbits = bits.shape
    pad = (-nbits) % 8
    if pad:
        bits = np.concatenate([np.zeros((n, pad), dtype=bool), bits], axis=1)
    return np.packbits(bits, axis=1)


# --------------------------------------------------------------------------------------
# Helpers on packed hashes
# --------------------------------------------------------------------------------------
def hamming_distance(a_packed: np.ndarray, b_packed: np.ndarray) -> np.ndarray:
    """Number of differing bits between packed hashes (smaller = more similar).

    Args:
        a_packed, b_packed: uint8 arrays whose last axis is the packed code
            (``(code_size,)`` or ``(n, code_size)``); they broadcast against each other,
            so ``hamming_distance(x[:, None], x[None])`` is the full distance matrix.

    Returns:
        int64 array of the broadcast shape without the last axis (a 0-d array for two rows).
    """
    a = np.asarray(a_packed, dtype=np.uint8)
    b = np.asarray(b_packed, dtype=np.uint8)
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"hash widths differ: {a.shape[-1]} vs {b.shape[-1]} bytes")
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int64)


def to_hex(packed_row: np.ndarray, bits: int | None = None) -> str:
    """Hex string of one packed hash, equal to ``str()`` of the imagehash result.

    Args:
        packed_row: ``(code_size,)`` uint8.
        bits: the number of meaningful bits (default ``8 * code_size``); pass it for
            families whose width is not a multiple of 8 (colorhash: ``14 * binbits``),
            since imagehash pads its hex string to ``ceil(bits / 4)`` digits.
    """
    row = np.asarray(packed_row, dtype=np.uint8).ravel()
    nbits = 8 * row.size if bits is None else int(bits)
    return "{:0>{width}x}".format(int.from_bytes(row.tobytes(), "big"), width=math.ceil(nbits / 4))


def from_hex(hex_string: str, bits: int) -> np.ndarray:
    """Inverse of :func:`to_hex`: ``(ceil(bits / 8),)`` uint8 packed row."""
    value = int(hex_string, 16)
    if value >> bits:
        raise InputError(f"hex {hex_string!r} has more than {bits} bits")
    return np.frombuffer(value.to_bytes(math.ceil(bits / 8), "big"), dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------
# Descriptor families
# --------------------------------------------------------------------------------------
def _hash_size_for_bits(bits: int, family: str, power_of_two: bool = False) -> int:
    hash_size = math.isqrt(int(bits))
    ok = hash_size >= 2 and hash_size * hash_size == bits and bits % 8 == 0
    if power_of_two:
        ok = ok and hash_size & (hash_size - 1) == 0
    if not ok:
        kind = "a power of 2" if power_of_two else "a multiple of 4"
        raise ConfigError(
            f"{family}: bits must be hash_size**2 with hash_size >= 4 {kind} "
            f"(e.g. 64 or 256), got {bits}"
        )
    return hash_size


class _ImageHash(Descriptor):
    """Shared machinery: gray batches grouped by size, bits packed per row."""

    cost = "cheap"
    #: Pillow's ``convert("L")`` happens while loading, exactly as imagehash does it.
    image_mode = "L"

    def __init__(self, bits: int = 64):
        self.bits = int(bits)
        self.hash_size = _hash_size_for_bits(self.bits, self.name)

    @property
    def dim(self) -> int:
        return self.bits

    @property
    def hash_bits(self) -> int:
        """Meaningful bits per hash (``dim`` minus front padding)."""
        return self.bits

    @property
    def metric(self) -> str:
        return "hamming"

    def _group_bits(self, gray: np.ndarray) -> np.ndarray:
        """``(n, H, W)`` uint8 gray images of one size -> ``(n, hash_bits)`` bool."""
        raise NotImplementedError

    def _gray_inputs(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        return [_as_gray(p) for p in pixels]

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        images = self._gray_inputs(pixels)
        bits = np.zeros((len(images), self.hash_bits), dtype=bool)
        for _, idx in _groups_by_shape(images).items():
            bits[idx] = self._group_bits(np.stack([images[i] for i in idx]))
        return pack_bits(bits)

    def to_hex(self, packed_row: np.ndarray) -> str:
        """imagehash-style hex string of one row of :meth:`transform`'s output."""
        return to_hex(packed_row, self.hash_bits)


@register_descriptor
class AverageHash(_ImageHash):
    """aHash: ``hash_size x hash_size`` Lanczos thumbnail compared with its mean.

    Equals ``imagehash.average_hash(image, hash_size)``. ``bits = hash_size**2``.
    """

    name = "ahash"

    def _group_bits(self, gray):
        small = lanczos_resize(gray, self.hash_size, self.hash_size)
        n = len(small)
        flat = small.reshape(n, -1)
        mean = flat.mean(axis=1, keepdims=True)  # float64, as numpy.mean in imagehash
        return flat > mean


@register_descriptor
class DifferenceHash(_ImageHash):
    """dHash (horizontal): a ``(hash_size + 1) x hash_size`` thumbnail, bit = right > left.

    Equals ``imagehash.dhash(image, hash_size)``.
    """

    name = "dhash"

    def _group_bits(self, gray):
        small = lanczos_resize(gray, self.hash_size + 1, self.hash_size)
        return (small[:, :, 1:] > small[:, :, :-1]).reshape(len(small), -1)


@register_descriptor
class PerceptualHash(_ImageHash):
    """pHash: 2-D DCT-II of a ``(hash_size * highfreq_factor)``-square thumbnail; the
    top-left ``hash_size x hash_size`` coefficients compared with their median.

    Equals ``imagehash.phash(image, hash_size, highfreq_factor)``.
    """

    name = "phash"

    def __init__(self, bits: int = 64, highfreq_factor: int = 4):
        super().__init__(bits=bits)
        if int(highfreq_factor) < 1:
            raise ConfigError(f"phash: highfreq_factor must be >= 1, got {highfreq_factor}")
        self.highfreq_factor = int(highfreq_factor)

    def _group_bits(self, gray):
        from scipy.fft import dct

        side = self.hash_size * self.highfreq_factor
        small = lanczos_resize(gray, side, side).astype(np.float64)
        coeffs = dct(dct(small, axis=1), axis=2)[:, :self.hash_size, :self.hash_size]
        flat = coeffs.reshape(len(small), -1)
        return flat > np.median(flat, axis=1, keepdims=True)


@register_descriptor
class WaveletHash(_ImageHash):
    """wHash: low-pass band of a multi-level DWT compared with its median.

    Equals ``imagehash.whash(image, hash_size, image_scale, "haar", remove_max_haar_ll)``
    (imagehash's ``mode="db4"`` is left out: its padded low band is not
    ``hash_size``-square, so it does not give ``hash_size**2`` bits). The thumbnail side is ``image_scale`` (0 = imagehash's default, the largest power of
    2 not above the shorter image side, at least ``hash_size``), the Haar LL band of the
    deepest level is removed first when ``remove_ll``, then ``log2(image_scale /
    hash_size)`` Haar levels leave a ``hash_size``-square LL band.
    ``bits`` must be a power of 4 (16, 64, 256, 1024).
    """

    name = "whash"

    def __init__(self, bits: int = 64, image_scale: int = 0, remove_ll: bool = True):
        self.bits = int(bits)
        self.hash_size = _hash_size_for_bits(self.bits, self.name, power_of_two=True)
        image_scale = int(image_scale)
        if image_scale and (image_scale & (image_scale - 1) or image_scale < self.hash_size):
            raise ConfigError(
                f"whash: image_scale must be 0 (automatic) or a power of 2 >= {self.hash_size}, got {image_scale}"
            )
        self.image_scale = image_scale
        self.remove_ll = bool(remove_ll)

    def scale_for(self, height: int, width: int) -> int:
        """Thumbnail side imagehash uses for an image of this size."""
        if self.image_scale:
            return self.image_scale
        return max(2 ** int(np.log2(min(height, width))), self.hash_size)

    def _group_bits(self, gray):
        import pywt

        scale = self.scale_for(*gray.shape[1:])
        ll_max_level = int(np.log2(scale))
        dwt_level = ll_max_level - int(np.log2(self.hash_size))
        pixels = lanczos_resize(gray, scale, scale) / 255.0
        if self.remove_ll:
            coeffs = list(pywt.wavedec2(pixels, "haar", level=ll_max_level, axes=(-2, -1)))
            coeffs[0] = coeffs[0] * 0
            pixels = pywt.waverec2(coeffs, "haar", axes=(-2, -1))
        low = pywt.wavedec2(pixels, "haar", level=dwt_level, axes=(-2, -1))[0]
        flat = low.reshape(len(low), -1)
        return flat > np.median(flat, axis=1, keepdims=True)


@register_descriptor
class ColorHash(Descriptor):
    """Colour hash: fractions of black, gray, and 6 hues x 2 saturation levels.

    Equals ``imagehash.colorhash(image, binbits)``: 14 fractions, each quantised to
    ``binbits`` bits with imagehash's own bit pattern, ``14 * binbits`` bits in all
    (``dim`` rounds that up to a multiple of 8 with leading zero bits).
    Metric ``hamming``; rotation and flip invariant by construction.
    """

    name = "colorhash"
    cost = "cheap"
    image_mode = "RGB"

    def __init__(self, binbits: int = 3):
        if not 1 <= int(binbits) <= 16:
            raise ConfigError(f"colorhash: binbits must be in 1..16, got {binbits}")
        self.binbits = int(binbits)

    @property
    def hash_bits(self) -> int:
        return 14 * self.binbits

    @property
    def dim(self) -> int:
        return 8 * math.ceil(self.hash_bits / 8)

    @property
    def metric(self) -> str:
        return "hamming"

    def to_hex(self, packed_row: np.ndarray) -> str:
        return to_hex(packed_row, self.hash_bits)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        n = len(pixels)
        counts = np.zeros((n, 15), dtype=np.int64)
        sizes = np.zeros(n, dtype=np.int64)
        rgb_images = [np.dstack([p] * 3) if p.ndim == 2 else p for p in pixels]
        for _, idx in _groups_by_shape(rgb_images).items():
            counts[idx] = self._category_counts(np.stack([rgb_images[i] for i in idx]))
            sizes[idx] = rgb_images[idx[0]].shape[0] * rgb_images[idx[0]].shape[1]
        maxvalue = 2 ** self.binbits
        values = np.empty((n, 14), dtype=np.int64)
        # Same float64 arithmetic as imagehash: int(frac * maxvalue), int(counts * maxvalue * 1. / c).
        values[:, :2] = np.floor(counts[:, :2] / sizes[:, None] * maxvalue)
        n_colour = np.maximum(1, sizes - counts[:, 0] - counts[:, 1])
        values[:, 2:] = np.floor(counts[:, 2:14] * maxvalue * 1.0 / n_colour[:, None])
        values = np.minimum(values, maxvalue - 1)
        b = self.binbits
        i = np.arange(b)
        # imagehash's pattern: bit i = (v // 2**(b-1-i)) % 2**(b-i) > 0.
        bits = (values[:, :, None] // 2 ** (b - 1 - i)) % 2 ** (b - i) > 0
        return pack_bits(bits.reshape(n, -1))

    @staticmethod
    def _category_counts(rgb: np.ndarray) -> np.ndarray:
        """``(n, H, W, 3)`` uint8 -> ``(n, 15)`` pixel counts per imagehash category.

        Categories: 0 black, 1 gray, 2..7 faint colours by hue sextant, 8..13 bright
        colours by hue sextant, 14 none (saturation exactly 170, which imagehash skips).
        """
        from PIL import Image

        lut = _colorhash_lut()
        counts = np.empty((len(rgb), 15), dtype=np.int64)
        for i, image in enumerate(rgb):
            pil = Image.fromarray(image, "RGB")
            # Pillow's own L and HSV conversions (C) keep the rounding identical to imagehash.
            black = np.asarray(pil.convert("L")) < 256 // 8
            hsv = np.asarray(pil.convert("HSV"))
            cat = lut[hsv[..., 0].astype(np.uint16) << 8 | hsv[..., 1]]
            cat[black] = 0
            counts[i] = np.bincount(cat.ravel(), minlength=15)
        return counts


@lru_cache(maxsize=1)
def _colorhash_lut() -> np.ndarray:
    """Category of a non-black pixel, indexed by ``hue * 256 + saturation`` (uint8, 65536)."""
    hue, sat = np.divmod(np.arange(65536), 256)
    # np.histogram(h, bins=linspace(0, 255, 7)): edges 0, 42.5, 85, ..., 255 (last closed).
    hue_bin = np.minimum(hue * 6 // 255, 5)
    cat = np.where(sat > 170, 8 + hue_bin, np.where(sat < 170, 2 + hue_bin, 14))
    cat[sat < 256 // 3] = 1
    return cat.astype(np.uint8)


def make_hash(family: str, bits: int | None = None) -> Descriptor:
    """The hash descriptor of ``family`` (one of :data:`HASH_FAMILIES`) with ``bits`` bits.

    For ``colorhash``, ``bits`` is ``14 * binbits`` (default 42).
    """
    if family not in HASH_FAMILIES:
        raise ConfigError(f"unknown hash family {family!r}; valid: {', '.join(HASH_FAMILIES)}")
    if family == "colorhash":
        if bits is None:
            return ColorHash()
        if bits % 14:
            raise ConfigError(f"colorhash: bits must be 14 * binbits, got {bits}")
        return ColorHash(binbits=bits // 14)
    cls = {"ahash": AverageHash, "dhash": DifferenceHash, "phash": PerceptualHash,
           "whash": WaveletHash}[family]
    return cls() if bits is None else cls(bits=bits)


def hash_variants(pixels: np.ndarray, family: str = "phash", bits: int | None = None) -> np.ndarray:
    """Hashes of an image and of its flipped and rotated versions.

    Lets duplicate search catch mirrored or rotated copies: compare a candidate's hash
    with every row and keep the smallest Hamming distance.

    Args:
        pixels: one ``(H, W)`` or ``(H, W, 3)`` uint8 image.
        family: one of :data:`HASH_FAMILIES`.
        bits: hash width (see :func:`make_hash`).

    Returns:
        ``(5, code_size)`` uint8 packed hashes in :data:`VARIANTS` order: the image, its
        horizontal mirror, and the image rotated 90, 180 and 270 degrees counter-clockwise.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise InputError(f"hash_variants: expected one (H, W[, 3]) uint8 image, got {pixels.dtype} {pixels.shape}")
    descriptor = make_hash(family, bits)
    if descriptor.image_mode == "L":
        pixels = _as_gray(pixels)
    elif pixels.ndim == 2:
        pixels = np.dstack([pixels] * 3)
    versions = [pixels, pixels[:, ::-1], np.rot90(pixels, 1), np.rot90(pixels, 2), np.rot90(pixels, 3)]
    return descriptor.transform_pixels([np.ascontiguousarray(v) for v in versions])
