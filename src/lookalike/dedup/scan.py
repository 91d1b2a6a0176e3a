"""Stage zero of dedup: one cheap decode per file -> content hash, size and the
dedup-internal variant hashes and thumbnails.

Everything the candidate search and the cheap verification need comes from a single
reduced-size decode (JPEG draft mode straight to gray, shorter side ``SCAN_SIDE`` or
more): the bytes are
read once (content hash), the image is decoded once to gray, and from those pixels come

* the hashes of :data:`DEDUP_VARIANTS`: the image, its mirror, its 90/180/270-degree
  rotations and its central 90% and 80% (a copy with 5% / 10% cut from every border
  *is* the original's central 90% / 80%, so its hash lands next to that variant's);
* a ``THUMB x THUMB`` (64 px) gray thumbnail of the image and of each centre crop, used by
  :mod:`.verify` for the thumbnail correlation of a candidate pair.

The hash is a DCT hash in the style of pHash (32x32 area-resized thumbnail, 2-D DCT-II,
the 8x8 lowest frequencies against their median) computed with OpenCV's area resize:
it is *not* bit-equal to ``imagehash.phash`` (the collection's stored ``phash``
descriptor is; this one is internal to dedup and never stored as a descriptor). Area
resizing commutes with flips and quarter turns of a square target, so the five
orientation variants are cut from one thumbnail instead of resized five times.

Distances are Hamming distances in bits (smaller = more similar).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

#: Variant order of :func:`variant_hashes` rows.
DEDUP_VARIANTS = ("identity", "hflip", "rot90", "rot180", "rot270", "crop90", "crop80")
#: Centre-crop fractions (kept share of each side) of the crop variants, in order.
CROP_FRACTIONS = (0.9, 0.8)
#: Thumbnail side kept for the correlation check (the hash input is its 2x2 mean, 32 px).
THUMB = 64
HASH_THUMB = 32
#: Smallest side the JPEG decoder may shrink to (draft mode decodes at 1/2, 1/4, 1/8 scale
#: while both sides stay >= SCAN_SIDE; no further resize): the 80% centre crop of such an
#: image still has >= 64 px for the 64-px thumbnail.
SCAN_SIDE = 80
#: Version of the hashing recipe (a cache with another version is recomputed).
SCAN_VERSION = 3


@dataclass
class ScanResult:
    """What one pass over the files learned.

    Attributes:
        paths: ``(n,)`` absolute paths of the readable files, in input order.
        content_hashes: ``(n,)`` hex BLAKE2b-128 of the bytes.
        sizes, mtimes: ``(n,)`` bytes and modification times.
        widths, heights: ``(n,)`` original (EXIF-rotated) dimensions.
        variants: ``(n, V, 8)`` uint8 packed 64-bit hashes, rows in :data:`DEDUP_VARIANTS` order.
        thumbs: ``(n, 1 + len(CROP_FRACTIONS), THUMB, THUMB)`` uint8 thumbnails of the
            image and of its centre crops.
        failures: ``(path, reason)`` of files that could not be read or decoded.
    """

    paths: list[str]
    content_hashes: list[str]
    sizes: np.ndarray
    mtimes: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    variants: np.ndarray
    thumbs: np.ndarray
    failures: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, i: int) -> dict:
        """Row ``i`` as the item dictionary :func:`lookalike.dedup.groups.build_groups` reads."""
        return {"path": self.paths[i], "content_hash": self.content_hashes[i], "size": int(self.sizes[i]),
                "mtime": float(self.mtimes[i]), "width": int(self.widths[i]), "height": int(self.heights[i])}


# ------------------------------------------------------------------------- hashing
def _area_thumb(gray: np.ndarray, side: int = THUMB) -> np.ndarray:
    import cv2

    return cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)


def centre_crop(gray: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of each side of ``(H, W)`` pixels (at least 1 px)."""
    h, w = gray.shape[:2]
    dy, dx = int(round(h * (1 - fraction) / 2)), int(round(w * (1 - fraction) / 2))
    return gray[dy:max(dy + 1, h - dy), dx:max(dx + 1, w - dx)]


def thumbnails(gray: np.ndarray) -> np.ndarray:
    """``(1 + len(CROP_FRACTIONS), THUMB, THUMB)`` uint8: the image and its centre crops."""
    return np.stack([_area_thumb(gray)] + [_area_thumb(centre_crop(gray, f)) for f in CROP_FRACTIONS])


def dct_hash(thumbs: np.ndarray) -> np.ndarray:
    """64-bit DCT hashes of ``(m, 64, 64)`` thumbnails -> ``(m, 8)`` uint8 packed bits
    (2x2 mean to 32x32, then a bit set where an 8x8 low-frequency DCT coefficient
    exceeds their median)."""
    from scipy.fft import dctn

    m, side = len(thumbs), thumbs.shape[1]
    f = side // HASH_THUMB
    # 2x2 block sums (uint16 is exact and cheaper than a float mean; the scale does not
    # change which coefficients exceed the median).
    small = thumbs.reshape(m, HASH_THUMB, f, HASH_THUMB, f).astype(np.uint16).sum(axis=(2, 4), dtype=np.uint16)
    coeffs = dctn(small.astype(np.float32), axes=(1, 2))[:, :8, :8].reshape(len(thumbs), 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1)


def variant_hashes(thumbs: np.ndarray) -> np.ndarray:
    """``(n, V, 8)`` packed hashes of :data:`DEDUP_VARIANTS` from ``(n, 3, T, T)`` thumbnails."""
    if len(thumbs) == 0:
        return np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8)
    base = thumbs[:, 0]
    stack = np.stack([base, base[:, :, ::-1], np.rot90(base, 1, axes=(1, 2)), np.rot90(base, 2, axes=(1, 2)),
                      np.rot90(base, 3, axes=(1, 2))] + [thumbs[:, 1 + i] for i in range(len(CROP_FRACTIONS))],
                     axis=1)                                              # (n, V, T, T)
    n, v = stack.shape[:2]
    return dct_hash(np.ascontiguousarray(stack.reshape(n * v, THUMB, THUMB))).reshape(n, v, 8)


def variant_thumbs(thumbs: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """The thumbnail of variant ``variant[i]`` of image ``i``: ``(m, 3, T, T)`` thumbnails and
    ``(m,)`` variant indices (into :data:`DEDUP_VARIANTS`) -> ``(m, T, T)``."""
    out = np.empty((len(thumbs),) + thumbs.shape[2:], thumbs.dtype)
    for k in range(len(DEDUP_VARIANTS)):
        sel = np.nonzero(variant == k)[0]
        if not len(sel):
            continue
        base = thumbs[sel, 0]
        if k == 0:
            out[sel] = base
        elif k == 1:
            out[sel] = base[:, :, ::-1]
        elif k <= 4:
            out[sel] = np.rot90(base, k - 1, axes=(1, 2))
        else:
            out[sel] = thumbs[sel, k - 4]
    return out


def gray_pixels_variants(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(variants (V, 8), thumbs (3, T, T))`` of one ``(H, W)`` uint8 gray image."""
    th = thumbnails(np.ascontiguousarray(gray))[None]
    return variant_hashes(th)[0], th[0]


# ------------------------------------------------------------------------- files
def decode_gray_small(data: bytes) -> tuple[np.ndarray, int, int]:
    """Gray pixels of encoded bytes at reduced size, plus the original (EXIF-rotated) size.

    JPEGs decode straight to gray at the smallest 1/2^k scale keeping both sides
    >= :data:`SCAN_SIDE` (Pillow draft mode), with no resize after it. Anything unusual
    (not a plain JPEG/PNG, EXIF rotation, animation, errors) goes through
    :func:`lookalike.images.load_image`, which also gives the reasons for failures.
    """
    import io

    from PIL import Image

    from ..images import load_image

    try:
        img = Image.open(io.BytesIO(data))
        plain = (img.format in ("JPEG", "PNG") and "exif" not in img.info and getattr(img, "n_frames", 1) == 1
                 and 0 < img.width * img.height <= 1 << 26)
        if plain:
            width, height = img.size
            if img.format == "JPEG":
                scale = max(1, min(img.width, img.height) // SCAN_SIDE)
                if scale > 1:
                    img.draft("L", (img.width // scale, img.height // scale))
            gray = np.asarray(img.convert("L"), dtype=np.uint8)
            return gray, width, height
    except Exception:  # noqa: BLE001 -- any failure: the careful loader below explains it
        pass
    loaded = load_image(data, mode="L")
    return loaded.pixels, loaded.width, loaded.height


def _scan_one(path: str):
    """``(path, content_hash, size, mtime, width, height, thumbs)`` or ``(path, reason)``."""
    from ..errors import ImageLoadError
    from ..extraction import content_hash

    try:
        data = Path(path).read_bytes()
        stat = os.stat(path)
        gray, width, height = decode_gray_small(data)
    except OSError as exc:
        return (path, f"cannot read: {exc.strerror or exc}")
    except ImageLoadError as exc:
        return (path, exc.reason)
    return (path, content_hash(data), stat.st_size, stat.st_mtime, width, height, thumbnails(gray))


def _scan_chunk(paths: Sequence[str]) -> list:
    return [_scan_one(p) for p in paths]


def scan_files(paths: Sequence[str | os.PathLike], workers: int = 1,
               progress: Callable[[int], None] | None = None, chunk: int = 64) -> ScanResult:
    """Read, hash and thumbnail files (one reduced-size decode each).

    Args:
        paths: image files.
        workers: processes (``> 1`` splits the files in chunks over a process pool).
        progress: called with the number of files finished after each chunk.

    Returns:
        :class:`ScanResult`; unreadable files are listed in ``failures`` with the reason.
    """
    paths = [str(Path(p).resolve()) for p in paths]
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    rows: list = []
    if workers > 1 and len(chunks) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_scan_chunk, chunks):
                rows.extend(part)
                if progress is not None:
                    progress(len(part))
    else:
        for c in chunks:
            part = _scan_chunk(c)
            rows.extend(part)
            if progress is not None:
                progress(len(part))
    ok = [r for r in rows if len(r) == 7]
    failures = [(r[0], r[1]) for r in rows if len(r) == 2]
    n_thumb = 1 + len(CROP_FRACTIONS)
    thumbs = np.stack([r[6] for r in ok]) if ok else np.zeros((0, n_thumb, THUMB, THUMB), np.uint8)
    return ScanResult(paths=[r[0] for r in ok], content_hashes=[r[1] for r in ok],
                      sizes=np.array([r[2] for r in ok], np.int64), mtimes=np.array([r[3] for r in ok], np.float64),
                      widths=np.array([r[4] for r in ok], np.int64), heights=np.array([r[5] for r in ok], np.int64),
                      variants=variant_hashes(thumbs) if ok else np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8),
                      thumbs=thumbs, failures=failures)
