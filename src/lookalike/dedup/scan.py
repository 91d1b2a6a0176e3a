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

The hash is a DCT hash in the style of pHash (32x32 area-reduced thumbnail, 2-D DCT-II,
the 8x8 lowest frequencies against their median): it is *not* bit-equal to
``imagehash.phash`` (the collection's stored ``phash`` descriptor is; this one is
internal to dedup and never stored as a descriptor). Mirroring the input only flips the
signs of odd-frequency DCT coefficients and a transpose transposes them, so the hashes of
the mirror and the three quarter turns come from the image's own 8x8 coefficients with
no further transform (:func:`variant_hashes`).

Speed: a file is opened, hashed (BLAKE2b) and decoded once; JPEGs decode only their luma
channel at a reduced DCT scale, PNGs through libspng where they are simple
(:func:`_png_gray`; plain JPEGs and PNGs without opening them in Pillow:
:func:`_decode_plain`, the same pixels as Pillow's path);
thumbnails are made by a
bilinear resize to 128 px followed by an exact 2x area reduction (OpenCV's area resize is
slow at fractional factors); the hashes of a chunk of files are computed together, and
chunks are spread over a process pool (:func:`scan_files` with ``workers > 1``; the
folder pipeline's overlapped mode uses :func:`guided_chunks`, :func:`shared_thumbs` and
:func:`_scan_chunk_shared`).

Distances are Hamming distances in bits (smaller = more similar).
"""
from __future__ import annotations

import os
import threading
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
SCAN_VERSION = 6


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
def centre_crop(gray: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of each side of ``(H, W)`` pixels (at least 1 px)."""
    h, w = gray.shape[:2]
    dy, dx = int(round(h * (1 - fraction) / 2)), int(round(w * (1 - fraction) / 2))
    return gray[dy:max(dy + 1, h - dy), dx:max(dx + 1, w - dx)]


def thumbnails(gray: np.ndarray) -> np.ndarray:
    """``(1 + len(CROP_FRACTIONS), THUMB, THUMB)`` uint8: the image and its centre crops."""
    out = np.empty((1 + len(CROP_FRACTIONS), THUMB, THUMB), np.uint8)
    _thumbs_into(np.ascontiguousarray(gray), out)
    return out


def _dct_rows(n: int = HASH_THUMB, k: int = 8) -> np.ndarray:
    """``(k, n)`` float32: the first ``k`` rows of the (unnormalised) DCT-II matrix, as
    ``scipy.fft.dct`` computes it: ``X_u = 2 sum_i x_i cos(pi u (2 i + 1) / (2 n))``."""
    u = np.arange(k)[:, None]
    i = np.arange(n)[None, :]
    return (2.0 * np.cos(np.pi * u * (2 * i + 1) / (2 * n))).astype(np.float32)


_DCT8 = _dct_rows()


def _low_dct(thumbs: np.ndarray) -> np.ndarray:
    """``(m, T, T)`` uint8 thumbnails -> ``(m, 8, 8)`` float32 lowest DCT-II coefficients of
    their 2 x 2 means (32 x 32)."""
    import cv2

    m, side = len(thumbs), thumbs.shape[1]
    flat = np.ascontiguousarray(thumbs, np.float32).reshape(m * side, side)
    small = cv2.resize(flat, (HASH_THUMB, m * HASH_THUMB), interpolation=cv2.INTER_AREA).reshape(
        m, HASH_THUMB, HASH_THUMB)
    return _DCT8 @ small @ _DCT8.T


def _bits(coeffs: np.ndarray) -> np.ndarray:
    """``(m, 8, 8)`` coefficients -> ``(m, 8)`` packed bits (coefficient > their median)."""
    c = coeffs.reshape(len(coeffs), 64)
    # The median as np.median computes it (the mean of the 32nd and 33rd smallest, in
    # float32: bit-identical), without np.median's first-call cost (~25 ms in every
    # freshly forked worker) and per-call overhead.
    p = np.partition(c, (31, 32), axis=1)
    return np.packbits(c > (p[:, 31:32] + p[:, 32:33]) / 2, axis=1)


def dct_hash(thumbs: np.ndarray) -> np.ndarray:
    """64-bit DCT hashes of ``(m, 64, 64)`` thumbnails -> ``(m, 8)`` uint8 packed bits
    (2x2 mean to 32x32, then a bit set where an 8x8 low-frequency DCT coefficient
    exceeds their median)."""
    if len(thumbs) == 0:
        return np.zeros((0, 8), np.uint8)
    return _bits(_low_dct(thumbs))


#: (-1)^u of DCT row u: mirroring the input negates the odd-frequency coefficients.
_ODD = np.where(np.arange(8) % 2, -1.0, 1.0).astype(np.float32)


def variant_hashes(thumbs: np.ndarray) -> np.ndarray:
    """``(n, V, 8)`` packed hashes of :data:`DEDUP_VARIANTS` from ``(n, 3, T, T)`` thumbnails.

    The mirror and quarter turns need no DCT of their own: reversing the columns of the
    input multiplies coefficient ``(u, v)`` by ``(-1)^v``, reversing the rows by
    ``(-1)^u``, and a transpose transposes the coefficients, so the four orientation
    variants follow from the image's coefficients exactly (only the centre crops are
    transformed again)."""
    if len(thumbs) == 0:
        return np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8)
    n = len(thumbs)
    c = _low_dct(thumbs.reshape(-1, THUMB, THUMB)).reshape(n, thumbs.shape[1], 8, 8)
    base = c[:, 0]
    col = _ODD[None, None, :]          # mirror left-right: (-1)^v
    row = _ODD[None, :, None]          # mirror top-bottom: (-1)^u
    t = base.transpose(0, 2, 1)
    # np.rot90(img, 1) = flip rows of the transpose; rot180 = both mirrors; rot270 = flip columns of the transpose.
    stack = np.stack([base, base * col, t * row, base * row * col, t * col]
                     + [c[:, 1 + i] for i in range(len(CROP_FRACTIONS))], axis=1)
    return _bits(stack.reshape(-1, 8, 8)).reshape(n, len(DEDUP_VARIANTS), 8)


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
    th = thumbnails(gray)[None]
    return variant_hashes(th)[0], th[0]


# ------------------------------------------------------------------------- files
def decode_gray_small(data: bytes) -> tuple[np.ndarray, int, int]:
    """Gray pixels of encoded bytes at reduced size, plus the original (EXIF-rotated) size.

    JPEGs decode straight to gray at the smallest 1/2^k scale keeping both sides
    >= :data:`SCAN_SIDE` (Pillow draft mode), with no resize after it; plain PNGs decode
    at full size by :func:`_png_gray`. Anything unusual (another format, EXIF rotation,
    animation, errors) goes through :func:`lookalike.images.load_image`, which also gives
    the reasons for failures.
    """
    import io

    from PIL import Image

    from ..images import load_image

    fast = _decode_plain(data)
    if fast is not None:
        return fast
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        exif = "exif" in img.info
        plain = (fmt in ("JPEG", "PNG") and not (exif and fmt == "PNG") and getattr(img, "n_frames", 1) == 1
                 and 0 < img.width * img.height <= 1 << 26)
        if plain:
            width, height = img.size
            if fmt == "PNG":
                gray = _png_gray(data)
                if gray is not None and gray.shape == (height, width) and gray.dtype == np.uint8:
                    return gray, width, height
            else:
                # Gray straight from the decoder (only the luma channel is decoded), at
                # 1/2^k scale where the image is large.
                scale = max(1, min(width, height) // SCAN_SIDE)
                # A camera photo's EXIF orientation is applied after the reduced decode
                # (an exact transpose), as for any other JPEG: no full-size decode.
                orientation = img.getexif().get(0x0112, 1) if exif else 1
                img.draft("L", (width // scale, height // scale))
                if orientation != 1:
                    from PIL import ImageOps

                    img = ImageOps.exif_transpose(img)
                    if orientation in (5, 6, 7, 8):
                        width, height = height, width
                gray = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)
                if gray.ndim == 2:
                    return gray, width, height
    except Exception:  # noqa: BLE001 -- any failure: the careful loader below explains it
        pass
    loaded = load_image(data, mode="L")
    return loaded.pixels, loaded.width, loaded.height


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: (bit depth, colour type) combinations Pillow opens (``PngImagePlugin._MODES``).
_PNG_MODES = frozenset({(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3), (4, 3),
                        (8, 3), (8, 4), (16, 4), (8, 6), (16, 6)})
#: Ancillary PNG chunks allowed before the image data on the fast path, with the least
#: length Pillow accepts for each (anything else takes the Pillow path).
_PNG_SAFE = {b"PLTE": 0, b"tRNS": 6, b"bKGD": 0, b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"tEXt": 0}


def _png_layout(data: bytes) -> tuple[int, int, bool, bool] | None:
    """What one walk over a PNG's chunks tells: ``(width, height, plain, simple)``, or
    None for data that is not a PNG starting with its header chunk.

    * ``plain``: the Pillow path of :func:`decode_gray_small` would hand the file to
      :func:`_png_gray` unchanged (Pillow opens it: valid header and chunk CRCs up to the
      image data, a known mode; no EXIF, no animation), so the fast path may too;
    * ``simple``: 8-bit gray or RGB, not interlaced, no palette or transparency chunk,
      and whole: every chunk up to the end chunk there with a right CRC (libpng refuses a
      damaged image-data chunk; libspng, as pyspng sets it up, would not, so a damaged
      file must not reach it). Such a file decodes to the same samples in libspng as in
      libpng.
    """
    import zlib

    end = len(data)
    if end < 33 or data[:8] != _PNG_MAGIC or data[12:16] != b"IHDR":
        return None
    simple = data[24] == 8 and data[25] in (0, 2) and data[28] == 0  # bit depth, colour type, interlace
    plain, in_header, ended = True, True, False
    width = height = 0
    view = memoryview(data)
    pos = 8
    while pos + 12 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        cid = data[pos + 4:pos + 8]
        body_end = pos + 8 + length
        if cid == b"IDAT":
            in_header = False  # the fast path's rules stop here
        if body_end + 4 > end or zlib.crc32(view[pos + 4:body_end]) != int.from_bytes(data[body_end:body_end + 4], "big"):
            plain &= not in_header
            simple = False
            break
        simple &= cid not in (b"PLTE", b"tRNS")
        if in_header:
            body = view[pos + 8:body_end]
            if cid == b"IHDR":
                if width or length < 13 or (body[8], body[9]) not in _PNG_MODES or body[11]:
                    plain = False
                width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
                plain &= 0 < width * height <= 1 << 26
            elif not width or length < _PNG_SAFE.get(cid, 1 << 31):
                plain = False
            elif cid == b"tEXt" and bytes(body).split(b"\0", 1)[0] == b"exif":
                plain = False
        if cid == b"IEND":
            ended = True
            break
        pos = body_end + 4
    return width, height, plain and not in_header, simple and ended


def _simple_png(data: bytes) -> bool:
    """Whether a PNG goes to libspng (the ``simple`` of :func:`_png_layout`)."""
    layout = _png_layout(data)
    return layout is not None and layout[3]


def _png_gray(data: bytes, simple: bool | None = None) -> np.ndarray | None:
    """Gray pixels of a PNG (None where it cannot be decoded): a simple one
    (:func:`_png_layout`; ``simple`` when the caller already knows) through libspng
    (pyspng, a third fewer instructions than libpng), RGB turned gray by OpenCV's BT.601
    weights (these can differ by one level from libpng's own conversion: every path of
    the scan uses this function, so a file always gets the same pixels); any other PNG,
    or all where pyspng is missing, by OpenCV's libpng."""
    import cv2

    if _simple_png(data) if simple is None else simple:
        try:
            import pyspng
        except ImportError:
            pyspng = None
        if pyspng is not None:
            try:
                pixels = pyspng.load(data)
            except (RuntimeError, ValueError):
                return None
            if pixels.dtype != np.uint8:
                return None
            if pixels.ndim == 3 and pixels.shape[2] == 3:
                return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
            return pixels if pixels.ndim == 2 else None
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error:
        return None


def _decode_plain(data: bytes) -> tuple[np.ndarray, int, int] | None:
    """:func:`decode_gray_small` for plain JPEGs and PNGs without opening them in Pillow
    (its per-file Python cost): the same pixels (the same libjpeg-turbo scaled decode to
    gray as Pillow's draft mode, checked bit for bit on the bench's LFW, COIL, UKBench
    and Sacré-Cœur files and their transformed copies; the same OpenCV PNG decode), or
    None where the Pillow path must decide."""
    if data[:2] == b"\xff\xd8":
        from ..images import decode_jpeg_scaled, plain_jpeg_header

        header = plain_jpeg_header(data)
        if header is None:  # (an MPO, among others: Pillow's path)
            return None
        width, height, _ = header
        if not 0 < width * height <= 1 << 26:
            return None
        # Pillow's draft("L", (width // s, height // s)): the largest of 8, 4, 2 that
        # both sides still cover.
        s = max(1, min(width, height) // SCAN_SIDE)
        fit = min(width // (width // s), height // (height // s))
        scale = next((k for k in (8, 4, 2) if fit >= k), 1)
        gray = decode_jpeg_scaled(data, True, scale, (width, height))
        return None if gray is None else (gray, width, height)
    if data[:8] == _PNG_MAGIC:
        layout = _png_layout(data)
        if layout is None or not layout[2]:
            return None
        width, height, _, simple = layout
        gray = _png_gray(data, simple)
        if gray is not None and gray.shape == (height, width) and gray.dtype == np.uint8:
            return gray, width, height
    return None


def _fast_thumb(gray: np.ndarray) -> np.ndarray:
    """A ``THUMB x THUMB`` area-style thumbnail of a small image, fast: OpenCV's area
    resize is slow for fractional factors but quick for exactly 2x, so a small image
    (both sides <= 4 THUMB) is first resized bilinearly to 2 THUMB (a factor of at most
    2, where bilinear loses little) and then halved by area; larger ones take the plain
    area resize."""
    import cv2

    if max(gray.shape) > 4 * THUMB:
        return cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    mid = cv2.resize(gray, (2 * THUMB, 2 * THUMB), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(mid, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


#: Per thread, the bilinear 2 THUMB x 2 THUMB images of a small image and its crops, one
#: above the other (reused by :func:`_thumbs_into`: one area resize halves all three at
#: once; one buffer per thread, as OpenCV works without the GIL).
_MID = threading.local()


def _thumbs_into(gray: np.ndarray, out: np.ndarray) -> None:
    """Write the ``(3, T, T)`` thumbnails (image, centre crops) of ``gray`` into ``out``
    (each as :func:`_fast_thumb` makes it)."""
    import cv2

    if max(gray.shape) > 4 * THUMB or not out.flags.c_contiguous:
        out[0] = _fast_thumb(gray)
        for i, f in enumerate(CROP_FRACTIONS):
            out[1 + i] = _fast_thumb(centre_crop(gray, f))
        return
    # The small-image path of _fast_thumb for the three, with the bilinear images
    # written straight into one buffer and halved by a single area resize: the same
    # pixels (an exact 2x area reduction never mixes rows of two stacked 2T-row images)
    # in four OpenCV calls instead of six.
    side = 2 * THUMB
    mid = getattr(_MID, "buffer", None)
    if mid is None or mid.shape != (len(out) * side, side):
        mid = _MID.buffer = np.empty((len(out) * side, side), np.uint8)
    cv2.resize(gray, (side, side), dst=mid[:side], interpolation=cv2.INTER_LINEAR)
    for i, f in enumerate(CROP_FRACTIONS, 1):
        cv2.resize(centre_crop(gray, f), (side, side), dst=mid[i * side:(i + 1) * side],
                   interpolation=cv2.INTER_LINEAR)
    cv2.resize(mid, (THUMB, len(out) * THUMB), dst=out.reshape(len(out) * THUMB, THUMB),
               interpolation=cv2.INTER_AREA)


def _scan_chunk(paths: Sequence[str]) -> tuple:
    """Scan a list of files in one go (one worker task).

    Returns:
        ``(rows, thumbs, variants, failures)``: ``rows`` are ``(path, content_hash,
        size, mtime, width, height)`` of the readable files, ``thumbs (k, 3, T, T)`` and
        ``variants (k, V, 8)`` uint8 in the same order, failures ``(path, reason)``.
    """
    from ..errors import ImageLoadError
    from ..extraction import content_hash, read_file

    rows, failures = [], []
    thumbs = np.empty((len(paths), 1 + len(CROP_FRACTIONS), THUMB, THUMB), np.uint8)
    for path in paths:
        try:
            stat, data = read_file(path)
            gray, width, height = decode_gray_small(data)
        except OSError as exc:
            failures.append((path, f"cannot read: {exc.strerror or exc}"))
            continue
        except ImageLoadError as exc:
            failures.append((path, exc.reason))
            continue
        _thumbs_into(gray, thumbs[len(rows)])
        rows.append((path, content_hash(data), stat.st_size, stat.st_mtime,
                     width, height))
    thumbs = thumbs[:len(rows)]
    return rows, thumbs, variant_hashes(thumbs), failures


#: Thumbnail arrays in memory shared with forked pool workers (``{token: (n, 3, T, T)
#: uint8}``, see :func:`shared_thumbs`): scan tasks write their thumbnails there and pair
#: checks read them there, instead of sending them through pipes.
_SHARED: dict[int, np.ndarray] = {}


def shared_thumbs(n: int) -> tuple[int, np.ndarray]:
    """``(token, array)``: a zeroed ``(n, 3, T, T)`` uint8 array in an anonymous shared
    mapping, registered under ``token`` for workers forked *after* this call."""
    import mmap

    shape = (n, 1 + len(CROP_FRACTIONS), THUMB, THUMB)
    buf = mmap.mmap(-1, max(1, int(np.prod(shape))))
    arr = np.frombuffer(buf, np.uint8, count=int(np.prod(shape))).reshape(shape)
    token = id(arr)
    _SHARED[token] = arr
    return token, arr


def _scan_chunk_shared(token: int, paths: Sequence[str], slots: Sequence[int]) -> tuple:
    """:func:`_scan_chunk` whose thumbnails go into the shared array ``token`` at the
    rows ``slots`` (of the readable files, in order) instead of the reply."""
    rows, thumbs, variants, failures = _scan_chunk(paths)
    if rows:
        where = dict(zip(paths, slots))
        _SHARED[token][[where[r[0]] for r in rows]] = thumbs
    return rows, None, variants, failures


def _preload_worker_modules() -> None:
    """Import what a scan worker uses (OpenCV, Pillow's JPEG and PNG plugins, libspng,
    the image loader, the file reader and content hash) in this process, so forked
    workers inherit the modules: imported in each worker instead, they cost every
    worker ~35 ms of its first task."""
    import cv2  # noqa: F401
    from PIL import Image, JpegImagePlugin, PngImagePlugin  # noqa: F401

    from .. import extraction, images  # noqa: F401

    try:
        import pyspng  # noqa: F401
    except ImportError:  # PNGs then go to OpenCV's decoder
        pass
    Image.preinit()


def _pool(workers: int):
    """A process pool of ``workers`` (forked where the platform allows, after the
    workers' modules are imported here: no re-imports)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        ctx = multiprocessing.get_context("fork")
        _preload_worker_modules()
    except ValueError:
        ctx = None
    from ..worker_memory import keep_freed_memory

    # No per-worker OpenCV settings: changing OpenCV's thread pool in a forked child can
    # block on the parent's threads, which the child does not have. Workers keep the
    # memory they free (the pair checks' arrays are reused, not faulted in again).
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=keep_freed_memory)


def guided_chunks(paths: Sequence[str], workers: int, largest: int = 64, smallest: int = 12) -> list[list[str]]:
    """Split files into pool tasks of shrinking size (guided self-scheduling): each
    chunk a ``1 / (2 workers)`` share of what is left, between ``smallest`` and
    ``largest`` files, so the big early chunks keep the task overhead low and the small
    last ones let the workers finish together (no straggler chunk at the end)."""
    out, i, n = [], 0, len(paths)
    while i < n:
        size = min(largest, max(smallest, -(-(n - i) // (2 * max(1, workers)))))
        out.append(list(paths[i:i + size]))
        i += size
    return out


def scan_files(paths: Sequence[str | os.PathLike], workers: int = 1,
               progress: Callable[[int], None] | None = None, chunk: int = 48,
               resolved: bool = False, pool=None) -> ScanResult:
    """Read, hash and thumbnail files (one reduced-size decode each).

    Args:
        paths: image files.
        workers: processes (``> 1`` splits the files in chunks over a process pool).
        progress: called with the number of files finished after each chunk.
        resolved: the paths are already absolute and resolved (skip resolving them).
        pool: a process pool to use (with ``workers`` its size) instead of a new one.

    Returns:
        :class:`ScanResult`; unreadable files are listed in ``failures`` with the reason.
    """
    paths = [str(p) for p in paths] if resolved else [str(Path(p).resolve()) for p in paths]
    if workers > 1:
        # About four chunks per worker at least, so the work spreads evenly.
        chunk = max(8, min(chunk, -(-len(paths) // (4 * workers))))
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    parts: list = []
    if workers > 1 and len(chunks) > 1:
        own = pool is None
        pool = _pool(min(workers, len(chunks))) if own else pool
        try:
            for part in pool.map(_scan_chunk, chunks):
                parts.append(part)
                if progress is not None:
                    progress(len(part[0]) + len(part[3]))
        finally:
            if own:
                pool.shutdown()
    else:
        for c in chunks:
            part = _scan_chunk(c)
            parts.append(part)
            if progress is not None:
                progress(len(part[0]) + len(part[3]))
    rows = [r for part in parts for r in part[0]]
    failures = [f for part in parts for f in part[3]]
    n_thumb = 1 + len(CROP_FRACTIONS)
    thumbs = (np.concatenate([part[1] for part in parts]) if rows
              else np.zeros((0, n_thumb, THUMB, THUMB), np.uint8))
    variants = (np.concatenate([part[2] for part in parts]) if rows
                else np.zeros((0, len(DEDUP_VARIANTS), 8), np.uint8))
    return ScanResult(paths=[r[0] for r in rows], content_hashes=[r[1] for r in rows],
                      sizes=np.array([r[2] for r in rows], np.int64), mtimes=np.array([r[3] for r in rows], np.float64),
                      widths=np.array([r[4] for r in rows], np.int64), heights=np.array([r[5] for r in rows], np.int64),
                      variants=variants, thumbs=thumbs, failures=failures)
