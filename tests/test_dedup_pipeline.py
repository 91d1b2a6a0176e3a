"""The overlapped folder pipeline (scan, candidate search and pair checks interleaved on
one pool) against the serial one on real files, and the exactness of the scan's fast
paths (plain JPEG / PNG decode without Pillow, the median, the reflect padding, the
directory listing)."""
from __future__ import annotations

import io
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def folder(ukbench_dir, tmp_path_factory):
    """The UKBench fixture plus transformed copies of its photos (more candidate pairs,
    duplicates and near misses than the fixture alone)."""
    from PIL import Image, ImageOps

    root = tmp_path_factory.mktemp("dedup_pipeline") / "photos"
    shutil.copytree(ukbench_dir, root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    for i, src in enumerate(sorted((ukbench_dir / "base_images").glob("*.jpg"))):
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.resize((im.width // 2, im.height // 2)).save(root / f"half_{i}.jpg", quality=85)
            ImageOps.mirror(im).save(root / f"mirror_{i}.png")
            w, h = im.size
            im.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(root / f"crop_{i}.jpg", quality=70)
            im.rotate(4, resample=Image.BICUBIC).save(root / f"rot_{i}.jpg", quality=90)
    return root


def _run(folder: Path, cache: Path, workers: int):
    from lookalike.dedup.pipeline import find_duplicates_in_folder

    shutil.rmtree(cache, ignore_errors=True)
    return find_duplicates_in_folder(folder, cache, workers=workers)


def _summary(result):
    groups = sorted(sorted([g.keeper] + [m.path for m in g.members]) for g in result.groups)
    pairs = {(p.a, p.b): p for p in result.pairs}
    return groups, pairs


def _assert_same(serial, overlapped):
    g1, p1 = _summary(serial)
    g2, p2 = _summary(overlapped)
    assert g1 == g2
    assert sorted(p1) == sorted(p2)
    for key, a in p1.items():
        b = p2[key]
        assert (a.duplicate, a.hash_distance, a.sources) == (b.duplicate, b.hash_distance, b.sources), key
        # Only the batches of pairs differ: float rounding at most.
        assert abs(a.score - b.score) < 1e-2 and abs(a.ncc - b.ncc) < 1e-4 and abs(a.similarity - b.similarity) < 1e-4
    assert serial.skipped == overlapped.skipped
    for k in ("items", "candidate_pairs", "hash_candidates", "exact_pairs", "duplicate_pairs", "groups"):
        assert serial.stats[k] == overlapped.stats[k], k


def test_overlapped_pipeline_equals_serial(folder, tmp_path, monkeypatch):
    from lookalike.dedup import scan

    serial = _run(folder, tmp_path / "serial", workers=1)
    assert serial.stats["duplicate_pairs"] > 5 and serial.stats["candidate_pairs"] > serial.stats["duplicate_pairs"]
    assert [Path(p).name for p, _ in serial.skipped] == ["ukbench09268_corrupt.jpg"]
    # Small scan tasks: many arrivals, candidates found between chunks.
    monkeypatch.setattr(scan, "guided_chunks", lambda paths, workers: [list(paths[i:i + 3])
                                                                       for i in range(0, len(paths), 3)])
    overlapped = _run(folder, tmp_path / "overlapped", workers=2)
    _assert_same(serial, overlapped)
    assert "verify_wait" in overlapped.stats["seconds"]
    # The cache it wrote serves a re-run (nothing scanned again) with the same answer.
    from lookalike.dedup.pipeline import find_duplicates_in_folder

    again = find_duplicates_in_folder(folder, tmp_path / "overlapped", workers=2)
    _assert_same(serial, again)
    # ... and the serial path reads the same cache.
    _assert_same(serial, find_duplicates_in_folder(folder, tmp_path / "overlapped", workers=1))


def test_overlapped_pipeline_without_shared_memory_or_incremental_search(folder, tmp_path, monkeypatch):
    from lookalike.dedup import candidates

    serial = _run(folder, tmp_path / "serial", workers=1)
    # Thumbnails through pipes (no fork-shared memory) ...
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    _assert_same(serial, _run(folder, tmp_path / "piped", workers=2))
    monkeypatch.undo()
    # ... and one candidate search at the end (the large-folder mode).
    monkeypatch.setattr(candidates, "MIH_MIN_ITEMS", 0)
    _assert_same(serial, _run(folder, tmp_path / "at_end", workers=2))


def test_overlapped_pipeline_partial_cache(folder, tmp_path):
    """Cached rows and freshly scanned ones mixed (a file added after the first run)."""
    from lookalike.dedup.pipeline import find_duplicates_in_folder

    work = tmp_path / "photos"
    shutil.copytree(folder, work)
    extra = work / "zz_extra.jpg"
    shutil.move(work / "half_0.jpg", extra)
    cache = tmp_path / "cache"
    find_duplicates_in_folder(work, cache, workers=2)
    shutil.move(extra, work / "half_0.jpg")
    mixed = find_duplicates_in_folder(work, cache, workers=2)
    _assert_same(_run(work, tmp_path / "serial", workers=1), mixed)


# ------------------------------------------------------------------ exact fast paths
def _pillow_gray_small(data: bytes):
    """What decode_gray_small's Pillow path gives for a plain JPEG / PNG."""
    import cv2
    from PIL import Image

    from lookalike.dedup.scan import SCAN_SIDE

    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if img.format == "PNG":
        # 8-bit gray / RGB without transparency or interlacing: the samples as Pillow
        # decodes them, RGB turned gray with OpenCV's weights; anything else: libpng's gray.
        simple = data[24] == 8 and img.mode in ("L", "RGB") and "transparency" not in img.info \
            and not img.info.get("interlace")
        if simple:
            pixels = np.asarray(img)
            return (cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels), w, h
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), w, h
    s = max(1, min(w, h) // SCAN_SIDE)
    img.draft("L", (w // s, h // s))
    return np.asarray(img if img.mode == "L" else img.convert("L")), w, h


def test_plain_decode_equals_pillow_path(ukbench_dir, tmp_path):
    from PIL import Image

    from lookalike.dedup.scan import _decode_plain

    rng = np.random.default_rng(0)
    arr = (rng.random((300, 410, 3)) * 255).astype(np.uint8)
    arr[50:200, 100:300] = (30, 200, 90)
    im = Image.fromarray(arr)
    blobs = {}
    for name, kw in {"base": dict(format="JPEG", quality=80), "progressive": dict(format="JPEG", progressive=True),
                     "png": dict(format="PNG"), "png_rgba": dict(format="PNG"), "png_gray": dict(format="PNG"),
                     "png_palette": dict(format="PNG"), "png_trns": dict(format="PNG", transparency=(30, 200, 90))
                     }.items():
        buf = io.BytesIO()
        src = {"png_rgba": im.convert("RGBA"), "png_gray": im.convert("L"),
               "png_palette": im.convert("P", palette=Image.Palette.ADAPTIVE)}.get(name, im)
        src.save(buf, **kw)
        blobs[name] = buf.getvalue()
    buf = io.BytesIO()
    im.convert("L").save(buf, format="JPEG")
    blobs["gray"] = buf.getvalue()
    for p in sorted(ukbench_dir.rglob("*.jpg")):
        blobs[p.name] = p.read_bytes()
    fast_count = 0
    for name, data in blobs.items():
        fast = _decode_plain(data)
        if fast is None:
            continue
        fast_count += 1
        ref = _pillow_gray_small(data)
        assert fast[1:] == ref[1:] and np.array_equal(fast[0], ref[0]), name
    assert fast_count >= 5


def test_simple_png_rule():
    """Only whole 8-bit gray / RGB PNGs without palette or transparency go to libspng."""
    from PIL import Image

    from lookalike.dedup.scan import _png_gray, _simple_png

    arr = (np.random.default_rng(2).random((40, 50, 3)) * 255).astype(np.uint8)

    def png(img, **kw):
        buf = io.BytesIO()
        img.save(buf, format="PNG", **kw)
        return buf.getvalue()

    im = Image.fromarray(arr)
    rgb = png(im)
    assert _simple_png(rgb) and _simple_png(png(im.convert("L")))
    assert not _simple_png(png(im.convert("RGBA")))
    assert not _simple_png(png(im.convert("P", palette=Image.Palette.ADAPTIVE)))
    assert not _simple_png(png(im, transparency=(1, 2, 3)))
    assert not _simple_png(png(Image.fromarray((arr[:, :, 0].astype(np.uint16) * 257)), bits=16))
    # A damaged image-data chunk (wrong CRC) or a cut file: not simple, and the scan's
    # PNG decoder (libpng then) refuses the damaged one rather than decoding it.
    idat = rgb.index(b"IDAT")
    length = int.from_bytes(rgb[idat - 4:idat], "big")
    crc_at = idat + 4 + length
    damaged = rgb[:crc_at] + bytes([rgb[crc_at] ^ 0xFF]) + rgb[crc_at + 1:]
    assert not _simple_png(damaged) and not _simple_png(rgb[:-20])
    assert _png_gray(damaged) is None
    # The simple path's pixels: the samples, turned gray with OpenCV's weights.
    import cv2

    assert np.array_equal(_png_gray(rgb), cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY))


def test_plain_decode_leaves_unusual_files_to_pillow():
    from PIL import Image

    from lookalike.dedup.scan import _decode_plain, decode_gray_small

    im = Image.fromarray((np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    unusual = {}
    for name, kw in {"jpeg_exif": dict(format="JPEG", exif=exif.tobytes()),
                     "png_exif": dict(format="PNG", exif=exif.tobytes()),
                     "apng": dict(format="PNG", save_all=True, append_images=[im.rotate(5)]),
                     "cmyk": dict(format="JPEG")}.items():
        buf = io.BytesIO()
        (im.convert("CMYK") if name == "cmyk" else im).save(buf, **kw)
        unusual[name] = buf.getvalue()
    good = io.BytesIO()
    im.save(good, format="PNG")
    bad_crc = bytearray(good.getvalue())
    bad_crc[29] ^= 1  # the IHDR checksum
    unusual["png_bad_crc"] = bytes(bad_crc)
    unusual["truncated_jpeg"] = unusual["cmyk"][:200]
    for name, data in unusual.items():
        assert _decode_plain(data) is None, name
    gray, w, h = decode_gray_small(unusual["jpeg_exif"])
    assert (w, h) == (60, 80) and gray.shape == (80, 60)  # EXIF orientation applied by Pillow


def test_median_bits_and_reflect_padding_are_exact():
    from lookalike.dedup.scan import _bits
    from lookalike.dedup.verify import _padded_rows

    rng = np.random.default_rng(2)
    for c in (rng.standard_normal((500, 8, 8)).astype(np.float32),
              np.round(rng.standard_normal((500, 8, 8)) * 2).astype(np.float32)):
        flat = c.reshape(len(c), 64)
        assert np.array_equal(_bits(c), np.packbits(flat > np.median(flat, axis=1, keepdims=True), axis=1))
    x = rng.integers(0, 256, (5, 64, 64)).astype(np.uint8)
    for pad in (1, 4, 6, 63, 70):
        ref = np.pad(x.astype(np.float32), ((0, 0), (pad, pad), (0, 0)), mode="reflect").reshape(-1, 64)
        assert np.array_equal(_padded_rows(x, pad), ref), pad


def test_listing_matches_os_walk(tmp_path):
    from lookalike.dedup.pipeline import _resolved_images
    from lookalike.images import IMAGE_EXTENSIONS

    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "other").mkdir()
    for name in ("a.jpg", ".jpg", "..png", "b.JPG", "c.txt", "sub/d.png", "sub/deeper/e.jpeg", "other/f.png",
                 "x..jpg", ".hidden.png", "noext"):
        (root / name).write_bytes(b"x")
    os.symlink(root / "other", root / "sub" / "linkdir")
    os.symlink(root / "a.jpg", root / "sub" / "link.jpg")
    os.symlink(root / "missing.jpg", root / "broken.jpg")
    os.symlink(root / "other", root / "dirlink.jpg")

    def reference(folder, exclude=()):
        skip = [str(Path(e).resolve()) for e in exclude]
        found = []
        for dirpath, _, names in os.walk(Path(folder).resolve()):
            for name in names:
                if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                if os.path.islink(path) and not os.path.isfile(path):
                    continue
                found.append((path, os.path.realpath(path)))
        found = [f for f in sorted(found) if not any(f[1] == s or f[1].startswith(s + os.sep) for s in skip)]
        return [f[0] for f in found], [f[1] for f in found]

    assert _resolved_images(root) == reference(root)
    assert _resolved_images(root, [root / "other"]) == reference(root, [root / "other"])


def test_cache_writer_is_byte_identical_to_np_savez(tmp_path):
    from lookalike.dedup.pipeline import _savez

    rng = np.random.default_rng(3)
    arrays = dict(version=np.array(4), paths=np.array(["/a/b.jpg", "/a/ü.png"]),
                  mtimes=rng.random(2), variants=rng.integers(0, 256, (2, 7, 8)).astype(np.uint8),
                  thumbs=rng.integers(0, 256, (200, 3, 64, 64)).astype(np.uint8))
    with open(tmp_path / "ours.npz", "wb") as fh:
        _savez(fh, **arrays)
    np.savez(tmp_path / "numpy.npz", **arrays)
    assert (tmp_path / "ours.npz").read_bytes() == (tmp_path / "numpy.npz").read_bytes()


def test_exif_rotated_jpeg_decodes_reduced_and_upright(ukbench_dir):
    """A camera JPEG with an EXIF orientation takes the reduced luma decode too (no
    full-size decode), turned upright: the same pixels as the upright copy without EXIF,
    and the upright (EXIF-rotated) size."""
    from PIL import Image

    from lookalike.dedup.scan import SCAN_SIDE, decode_gray_small

    photo = Image.open(sorted((ukbench_dir / "base_images").glob("*.jpg"))[0]).convert("RGB")  # 640 x 480
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    plain = io.BytesIO()
    photo.save(plain, "JPEG", quality=90)
    gray, width, height = decode_gray_small(buf.getvalue())
    want, w0, h0 = decode_gray_small(plain.getvalue())
    assert (width, height) == (480, 640) and (w0, h0) == (640, 480)
    assert min(gray.shape) >= SCAN_SIDE and max(gray.shape) < 640 / 2  # decoded reduced
    assert np.array_equal(gray, np.rot90(want, k=-1))  # orientation 6 = rotate 90 clockwise


def test_thumbnails_same_in_concurrent_threads(ukbench_dir):
    """The scan's reused resize buffer is per thread: thumbnails made in four threads at
    once (OpenCV runs without the GIL) equal those made one by one."""
    import threading

    from lookalike.dedup.scan import decode_gray_small, thumbnails
    from lookalike.errors import ImageLoadError

    grays = []
    for p in sorted(ukbench_dir.rglob("*.jpg")):
        try:
            grays.append(decode_gray_small(p.read_bytes())[0])
        except ImageLoadError:  # the fixture's corrupt file
            continue
    assert len(grays) >= 5
    grays += [np.ascontiguousarray(g[: g.shape[0] // 2]) for g in grays]  # other shapes too
    expected = [thumbnails(g) for g in grays]
    mismatches = []

    def work() -> None:
        for _ in range(20):
            mismatches.extend(i for i, g in enumerate(grays) if not np.array_equal(thumbnails(g), expected[i]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches
