"""Image loading and validation: one place that turns files, bytes or arrays into pixels.

Every failure raises :class:`~lookalike.errors.ImageLoadError` naming the source and
the reason. Orientation (EXIF), palette/alpha, CMYK, 16-bit and gray inputs are
normalised here so descriptors only ever see ``uint8`` arrays of the mode they ask for.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

#: Largest accepted image, in pixels (about 16k x 10k). Larger files are refused before
#: decoding, which guards against decompression bombs.
MAX_PIXELS = 178_956_970

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".pgm", ".ppm",
     ".pbm", ".pnm", ".jfif"}
)

ImageSource = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels plus facts about the original file.

    Attributes:
        pixels: ``uint8`` array, ``(H, W, 3)`` for RGB or ``(H, W)`` for L.
        width, height: size of the original image after EXIF rotation (before any
            reduced-size decoding).
        source: a printable name of where it came from.
    """

    pixels: np.ndarray
    width: int
    height: int
    source: str


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    """True when the file extension is one lookalike reads."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_image_files(root: Union[str, os.PathLike], recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (by extension), sorted for deterministic order."""
    return [Path(path) for path, _ in list_image_files(root, recursive)]


def list_image_files(root: Union[str, os.PathLike], recursive: bool = True) -> list[tuple[str, bool]]:
    """``(path, is_symlink)`` of the image files under ``root``, as strings, in
    :func:`iter_image_files` order. One ``scandir`` per folder: the entry types come
    with the listing, so a big folder costs no ``stat`` per file (symlinked files are
    followed to check they are files; symlinked folders are not entered, as ``rglob``)."""
    root = os.fspath(root)
    if os.path.isfile(root):
        return [(root, os.path.islink(root))]
    if not os.path.isdir(root):
        raise ImageLoadError(root, "no such file or directory")
    found: list[tuple[str, bool]] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable folder: as rglob, skip it
        for entry in entries:
            try:
                link = entry.is_symlink()
                if entry.is_dir():
                    if recursive and not link:
                        folders.append(entry.path)
                elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append((entry.path, link))
            except OSError:
                continue
    # Path order (component by component), not plain string order.
    found.sort(key=lambda item: item[0].split(os.sep))
    return found


def _source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<PIL image>"


def _open(source: ImageSource, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    try:
        if isinstance(source, bytes):
            if not source:
                raise ImageLoadError(name, "empty data")
            return Image.open(io.BytesIO(source))
        # Open first and explain afterwards: stat calls cost more than tiny decodes.
        return Image.open(source)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(name, "is a directory, not an image file") from None
    except UnidentifiedImageError:
        if not isinstance(source, bytes) and os.path.getsize(source) == 0:
            raise ImageLoadError(name, "empty file (0 bytes)") from None
        raise ImageLoadError(name, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(name, f"image too large (decompression bomb guard): {exc}") from None
    except OSError as exc:
        raise ImageLoadError(name, f"cannot open: {exc}") from None


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageLoadError(name, f"array of shape {array.shape} is not an image (H,W[,1|3|4])")
    if array.size == 0:
        raise ImageLoadError(name, "empty array")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        elif array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        else:
            array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


#: 16/32-bit integer gray modes (scaled to 8 bits by :func:`_to_mode`).
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to RGB or L, compositing alpha on white."""
    if img.mode in _WIDE_GRAY_MODES:
        # 16/32-bit gray: scale to 8 bits by the type's range rather than clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "1":
        img = img.convert("L")
    if img.mode != mode:
        img = img.convert(mode)  # CMYK, YCbCr, LAB, RGB<->L
    return img


#: Pillow modes that hold one gray channel (converted to ``L`` by :func:`_to_mode`).
GRAY_MODES = frozenset({"L", "1", "F", *_WIDE_GRAY_MODES})


# -- a fast path for plain JPEG bytes ----------------------------------------------------
_SOF_PLAIN = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman frames


def _jpeg_frame(data: bytes) -> tuple[int, bool] | None:
    """Position of a JPEG's frame (SOF) marker and whether an EXIF, MPF (APP2: an MPO,
    which Pillow opens as several frames) or Adobe APP14 segment comes before it; None
    when the data is not JPEG or the scan starts first."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end, odd = 2, len(data), False
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if ((marker == 0xE1 and data[pos + 4:pos + 8] == b"Exif") or marker == 0xEE
                or (marker == 0xE2 and data[pos + 4:pos + 8] == b"MPF\x00")):
            odd = True  # EXIF may carry an orientation; APP14 a colour transform (CMYK)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (pos, odd) if pos + 10 <= end else None
        if marker == 0xDA:
            return None  # scan before any frame header: malformed
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def plain_jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, components)`` of a JPEG that Pillow and OpenCV decode the same
    way (8-bit, 1 or 3 components, Huffman coded, no EXIF block, not an MPO, no Adobe
    colour transform marker, ending in an EOI marker); None for anything else,
    including files that are not JPEG at all."""
    if data[-2:] != b"\xff\xd9":
        return None  # truncated, or not a JPEG (Pillow reports that: let it)
    frame = _jpeg_frame(data)
    if frame is None or frame[1]:
        return None
    pos = frame[0]
    if data[pos + 1] not in _SOF_PLAIN or data[pos + 4] != 8:
        return None
    height = (data[pos + 5] << 8) | data[pos + 6]
    width = (data[pos + 7] << 8) | data[pos + 8]
    components = data[pos + 9]
    return (width, height, components) if components in (1, 3) else None


def jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header (as stored: before any EXIF
    rotation, which is what draft mode scales), or None when there is none."""
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    pos = frame[0]
    return (data[pos + 7] << 8) | data[pos + 8], (data[pos + 5] << 8) | data[pos + 6]


def draft_scale(size: tuple[int, int] | None, draft_side: int | None) -> int:
    """The reduction (1, 2, 4 or 8) a JPEG of ``size`` (:func:`jpeg_frame_size`; None
    for anything else) decodes at for ``draft_side``: Pillow's draft(), the largest of 8,
    4, 2 the image still covers. Two requests with the same scale decode to the same
    pixels before any mode conversion or resize."""
    if draft_side is None or size is None:
        return 1
    fit = min(size[0] // draft_side, size[1] // draft_side)
    return next((s for s in (8, 4, 2) if fit >= s), 1)


def _load_plain_jpeg(data: bytes, mode: str, max_side: int | None, keep_gray: bool,
                     draft_side: int | None = None) -> LoadedImage | None:
    """Decode plain JPEG bytes with OpenCV's libjpeg-turbo straight into an array:
    the same pixels as the Pillow path (same library, same IDCT, same scaled decoding
    for draft mode; checked bit for bit on CIFAR-10, LFW and the photo fixtures) at a
    fraction of Pillow's per-file Python cost. None when the file is not plain (see
    :func:`plain_jpeg_header`) or OpenCV refuses it: the caller then uses Pillow."""
    header = plain_jpeg_header(data)
    if header is None:
        return None
    width, height, components = header
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        return None
    gray = components == 1
    if mode == "L" and not gray:
        return None  # Pillow's RGB -> L conversion: let it do that
    try:
        import cv2
    except ImportError:
        return None
    pixels = decode_jpeg_scaled(data, gray, draft_scale((width, height), max_side if draft_side is None else draft_side),
                                (width, height))
    if pixels is None:
        return None
    if not gray and not hasattr(cv2, "IMREAD_COLOR_RGB"):
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    # Pillow's resize, as on the Pillow path (only a resize: the mode already matches).
    pixels = adapt_pixels(pixels, "L" if gray else "RGB", max_side)
    if gray and mode == "RGB" and not keep_gray:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return LoadedImage(pixels=pixels, width=width, height=height, source="<bytes>")


def decode_jpeg_scaled(data: bytes, gray: bool, scale: int, size: tuple[int, int]) -> np.ndarray | None:
    """OpenCV's libjpeg-turbo decode of JPEG bytes at ``1/scale`` (1, 2, 4 or 8), gray
    (only the luma channel decoded) or colour, EXIF orientation ignored; None when
    OpenCV refuses the data or the result is not the ``ceil(size / scale)`` the frame
    header (``size``: width, height) promises."""
    import cv2

    flags = _CV2_FLAGS.get((gray, scale))
    if flags is None:
        flags = _cv2_flags(cv2, gray, scale)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        return None
    width, height = size
    if pixels is None or pixels.shape[:2] != ((height + scale - 1) // scale, (width + scale - 1) // scale):
        return None
    return pixels


_CV2_FLAGS: dict[tuple[bool, int], int] = {}


def _cv2_flags(cv2, gray: bool, scale: int) -> int:
    if gray:
        base = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[scale]
    else:
        # IMREAD_COLOR_RGB asks libjpeg for RGB output directly (no BGR swap); older
        # OpenCV lacks it and the caller swaps instead.
        base = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[scale]
        if hasattr(cv2, "IMREAD_COLOR_RGB"):
            base = (base & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB
    _CV2_FLAGS[(gray, scale)] = flags = base | cv2.IMREAD_IGNORE_ORIENTATION
    return flags


def load_image(
    source: ImageSource,
    mode: str = "RGB",
    max_side: int | None = None,
    keep_gray: bool = False,
    draft_side: int | None = None,
) -> LoadedImage:
    """Decode one image into a ``uint8`` array.

    Args:
        source: a path, encoded bytes, a PIL image, or an ``(H, W[, C])`` array.
        mode: ``"RGB"`` gives ``(H, W, 3)``; ``"L"`` gives ``(H, W)``.
        max_side: when set, the decoder may return a smaller image whose longer side is
            still at least ``max_side`` (JPEG draft mode), and the result is then
            resized so its longer side is at most ``max_side``. ``None`` keeps full size.
        keep_gray: with ``mode="RGB"``, return a gray source as ``(H, W)`` instead of
            replicating it into three equal channels (a third of the resizing work;
            :func:`adapt_pixels` gives exactly the RGB array this call would have).
        draft_side: the side JPEG draft mode must keep instead of ``max_side`` (both
            sides stay at least this); the result is still shrunk to ``max_side``. A
            family that copes with any size up to ``max_side`` asks for a smaller
            ``draft_side`` and skips most resizing (see the colour histogram).

    Returns:
        A :class:`LoadedImage` (``width``/``height`` are of the original, EXIF-rotated).

    Raises:
        ImageLoadError: unreadable, empty, truncated, too large, or not an image.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    if draft_side is None:
        draft_side = max_side
    if isinstance(source, bytes) and len(source) > 4:
        fast = _load_plain_jpeg(source, mode, max_side, keep_gray, draft_side)
        if fast is not None:
            return fast
    name = _source_name(source)
    img = _open(source, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageLoadError(
                    name, f"image too large: {width}x{height} pixels exceeds the limit of {MAX_PIXELS}"
                )
            if width == 0 or height == 0:
                raise ImageLoadError(name, "image has zero width or height")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/TIFF: first frame
            # Parsing EXIF costs ~0.2 ms: only do it when the file carries an EXIF block.
            has_exif = "exif" in img.info or img.format in ("TIFF", "MPO")
            orientation = img.getexif().get(0x0112, 1) if has_exif else 1
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if draft_side is not None and img.format == "JPEG":
                # Draft mode decodes at 1/2, 1/4 or 1/8 scale: far cheaper for big photos.
                img.draft(img.mode if img.mode in ("RGB", "L") else None, (draft_side, draft_side))
            img.load()
            img = ImageOps.exif_transpose(img) if orientation != 1 else img
            img = _to_mode(img, "L" if keep_gray and img.mode in GRAY_MODES else mode)
            if max_side is not None and max(img.size) > max_side:
                scale = max_side / max(img.size)
                new_size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(new_size, Image.BILINEAR, reducing_gap=2.0)
            pixels = np.asarray(img, dtype=np.uint8)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(name, f"image too large (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated or corrupt file ({reason})"
        raise ImageLoadError(name, f"cannot decode: {reason}") from None
    return LoadedImage(pixels=pixels, width=int(width), height=int(height), source=name)


def load_pixels(source: ImageSource, mode: str = "RGB", max_side: int | None = None,
                draft_side: int | None = None) -> np.ndarray:
    """Shortcut for ``load_image(...).pixels``."""
    return load_image(source, mode=mode, max_side=max_side, draft_side=draft_side).pixels


def load_many(
    sources: Iterable[ImageSource], mode: str = "RGB", max_side: int | None = None
) -> tuple[list[np.ndarray], list[ImageLoadError]]:
    """Load a batch, collecting failures instead of stopping at the first.

    Returns:
        (pixels of the images that loaded, in order; the errors of those that did not).
    """
    loaded, failed = [], []
    for source in sources:
        try:
            loaded.append(load_pixels(source, mode=mode, max_side=max_side))
        except ImageLoadError as exc:
            failed.append(exc)
    return loaded, failed


def adapt_pixels(pixels: np.ndarray, mode: str, max_side: int | None) -> np.ndarray:
    """Adapt decoded ``uint8`` pixels to another request: convert RGB<->L and shrink so
    the longer side is at most ``max_side``, exactly as :func:`load_image` would."""
    img = None
    if mode == "L" and pixels.ndim == 3:
        img = Image.fromarray(pixels).convert("L")
    elif mode == "RGB" and pixels.ndim == 2:
        img = Image.fromarray(pixels).convert("RGB")
    if max_side is not None and max(pixels.shape[:2]) > max_side:
        img = img or Image.fromarray(pixels)
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BILINEAR, reducing_gap=2.0)
    return pixels if img is None else np.asarray(img)
