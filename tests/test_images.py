"""Image loading: every odd kind of input, generated from real photos."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ImageLoadError
from lookalike.images import MAX_PIXELS, iter_image_files, load_image, load_many


@pytest.fixture(scope="module")
def photo(ukbench_dir) -> Image.Image:
    """A real 640x480 UKBench photo."""
    path = sorted((ukbench_dir / "base_images").glob("*.jpg"))[0]
    return Image.open(path).convert("RGB")


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def test_common_formats_decode_to_same_picture(photo, tmp_path):
    reference = np.asarray(photo, dtype=np.float32)
    for ext, kwargs in [("png", {}), ("bmp", {}), ("tiff", {}), ("webp", {"lossless": True}),
                        ("ppm", {}), ("jpg", {"quality": 95})]:
        path = _save(photo, tmp_path / f"photo.{ext}", **kwargs)
        loaded = load_image(path)
        assert loaded.pixels.shape == (480, 640, 3) and loaded.pixels.dtype == np.uint8
        assert (loaded.width, loaded.height) == (640, 480)
        assert np.abs(loaded.pixels.astype(np.float32) - reference).mean() < 3.0, ext


def test_gray_pgm_and_mode_conversions(photo, tmp_path):
    gray = _save(photo.convert("L"), tmp_path / "gray.pgm")
    assert load_image(gray).pixels.shape == (480, 640, 3)  # gray expanded to RGB
    assert load_image(gray, mode="L").pixels.shape == (480, 640)
    assert load_image(tmp_path.joinpath("rgb.png") if False else _save(photo, tmp_path / "rgb.png"),
                      mode="L").pixels.ndim == 2


def test_cmyk_16bit_palette_alpha(photo, tmp_path):
    reference = np.asarray(photo, dtype=np.float32)
    cmyk = _save(photo.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(load_image(cmyk).pixels - reference).mean() < 8

    gray16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    path16 = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path16)
    assert Image.open(path16).mode.startswith("I")
    pixels16 = load_image(path16, mode="L").pixels
    assert np.abs(pixels16.astype(int) - np.asarray(photo.convert("L"), dtype=int)).max() <= 1

    palette = _save(photo.convert("P", palette=Image.ADAPTIVE, colors=64), tmp_path / "palette.png")
    assert np.abs(load_image(palette).pixels - reference).mean() < 12

    rgba = photo.convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[:, :320, 3] = 0  # left half fully transparent -> composited on white
    path = _save(Image.fromarray(alpha), tmp_path / "alpha.png")
    pixels = load_image(path).pixels
    assert (pixels[:, :320] == 255).all()
    assert np.abs(pixels[:, 320:] - reference[:, 320:]).mean() < 1


def test_exif_rotation_applied(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(photo, tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.pixels.shape == (640, 480, 3)
    assert (loaded.width, loaded.height) == (480, 640)
    expected = np.asarray(photo.transpose(Image.ROTATE_270), dtype=np.float32)
    assert np.abs(loaded.pixels - expected).mean() < 3


def test_animated_gif_first_frame(photo, tmp_path):
    small = photo.resize((160, 120))
    frames = [small, small.transpose(Image.FLIP_LEFT_RIGHT), small.convert("L").convert("RGB")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = load_image(path).pixels.astype(np.float32)
    assert first.shape == (120, 160, 3)
    assert np.abs(first - np.asarray(small, np.float32)).mean() < \
        np.abs(first - np.asarray(frames[1], np.float32)).mean()


def test_reduced_size_decoding(photo, tmp_path):
    path = _save(photo, tmp_path / "big.jpg", quality=90)
    small = load_image(path, max_side=100)
    assert max(small.pixels.shape[:2]) == 100
    assert (small.width, small.height) == (640, 480)  # original size is still reported


def test_bad_inputs_name_file_and_reason(photo, tmp_path, ukbench_dir):
    corrupt = ukbench_dir / "mixed_images" / "ukbench09268_corrupt.jpg"
    with pytest.raises(ImageLoadError) as info:
        load_image(corrupt)
    assert info.value.path == str(corrupt) and info.value.reason

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(empty)

    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(text)

    full = io.BytesIO()
    photo.save(full, format="JPEG", quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.getvalue()[: len(full.getvalue()) // 3])
    with pytest.raises(ImageLoadError, match="truncated|decode"):
        load_image(truncated)

    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_decompression_bomb_refused(tmp_path):
    # A 1-bit PNG of 20000 x 10000 pixels is tiny on disk but over the pixel limit.
    side = (20_000, 10_000)
    assert side[0] * side[1] > MAX_PIXELS
    path = tmp_path / "bomb.png"
    Image.new("1", side).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)


def test_unicode_paths_and_bytes(photo, tmp_path):
    folder = tmp_path / "фото 写真"
    folder.mkdir()
    path = _save(photo, folder / "café ☕.jpg", quality=90)
    assert iter_image_files(tmp_path) == [path]
    assert load_image(path).pixels.shape == (480, 640, 3)
    assert load_image(path.read_bytes()).source == "<bytes>"


def test_batch_reports_each_failure_and_goes_on(photo, tmp_path, ukbench_dir):
    good = _save(photo, tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 garbage")
    loaded, failed = load_many([good, bad, good])
    assert len(loaded) == 2 and len(failed) == 1 and failed[0].path == str(bad)


def test_folder_listing_matches_rglob(tmp_path):
    """The scandir listing gives rglob's files in rglob's (Path) order: nested and
    unicode names, '-' beside '/', symlinked files followed, symlinked folders, broken
    links and non-images skipped."""
    from lookalike.images import IMAGE_EXTENSIONS, list_image_files

    pixels = np.zeros((4, 4, 3), np.uint8)
    for rel in ["a/b.png", "a-c.png", "a/z/é.JPG", "b.txt", "c/d.webp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            (tmp_path / rel).write_text("x")
        else:
            Image.fromarray(pixels).save(tmp_path / rel, format="PNG")
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    Image.fromarray(pixels).save(outside / "o.png")
    os.symlink(outside / "o.png", tmp_path / "link.png")
    os.symlink(outside, tmp_path / "linkdir")
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    want = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    assert iter_image_files(tmp_path) == want
    assert [Path(p) for p, _ in list_image_files(tmp_path)] == want
    assert dict(list_image_files(tmp_path))[str(tmp_path / "link.png")] is True
    flat = sorted(p for p in tmp_path.glob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    assert iter_image_files(tmp_path, recursive=False) == flat
