"""Perceptual hashes: bit-exact against imagehash on real images, and near-duplicate numbers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike.descriptors import make_descriptor
from lookalike.descriptors.hashing import (
    HASH_FAMILIES,
    VARIANTS,
    from_hex,
    hamming_distance,
    hash_variants,
    lanczos_resize,
    pil_luma,
    to_hex,
)
from lookalike.errors import ConfigError, ImageLoadError
from lookalike.images import load_pixels

imagehash = pytest.importorskip("imagehash")

REFERENCE = {
    "ahash": lambda im, size: imagehash.average_hash(im, hash_size=size),
    "dhash": lambda im, size: imagehash.dhash(im, hash_size=size),
    "phash": lambda im, size: imagehash.phash(im, hash_size=size),
    "whash": lambda im, size: imagehash.whash(im, hash_size=size),
}


@pytest.fixture(scope="module")
def real_files(coil_dir, ukbench_dir, lfw_dir) -> list[str]:
    """About 60 real files: COIL PNGs, the UKBench JPEGs (640x480, one with EXIF
    rotation, one gray), LFW gray JPEGs."""
    coil = sorted(coil_dir.glob("*.png"))[::60]
    ukbench = sorted(p for p in ukbench_dir.rglob("*.jpg") if "corrupt" not in p.name)
    lfw = sorted((lfw_dir / "images").glob("A*/*.jpg"))[:8]
    return [str(p) for p in coil + ukbench + lfw]


@pytest.fixture(scope="module")
def reference_images(real_files) -> list[Image.Image]:
    # imagehash sees the picture upright, as lookalike's loader delivers it (EXIF applied).
    out = []
    for path in real_files:
        with Image.open(path) as im:
            out.append(ImageOps.exif_transpose(im).copy())
    return out


@pytest.fixture(scope="module")
def decoded(real_files) -> dict[str, list[np.ndarray]]:
    return {mode: [load_pixels(p, mode=mode) for p in real_files] for mode in ("L", "RGB")}


def test_real_file_set_is_large_and_mixed(real_files, decoded):
    assert len(real_files) >= 55
    shapes = {p.shape for p in decoded["L"]}
    assert len(shapes) >= 3  # several sizes -> several batched groups


@pytest.mark.parametrize("bits", [64, 256])
@pytest.mark.parametrize("family", ["ahash", "dhash", "phash", "whash"])
def test_bits_equal_imagehash(family, bits, decoded, reference_images):
    descriptor = make_descriptor(f"{family}:bits={bits}")
    codes = descriptor.transform_pixels(decoded["L"])
    assert codes.shape == (len(reference_images), bits // 8) and codes.dtype == np.uint8
    hash_size = int(np.sqrt(bits))
    ours = [to_hex(row) for row in codes]
    theirs = [str(REFERENCE[family](im, hash_size)) for im in reference_images]
    assert ours == theirs


@pytest.mark.parametrize("binbits", [3, 4])
def test_colorhash_equals_imagehash(binbits, decoded, reference_images):
    descriptor = make_descriptor(f"colorhash:binbits={binbits}")
    codes = descriptor.transform_pixels(decoded["RGB"])
    assert descriptor.hash_bits == 14 * binbits and descriptor.dim % 8 == 0
    ours = [descriptor.to_hex(row) for row in codes]
    theirs = [str(imagehash.colorhash(im, binbits=binbits)) for im in reference_images]
    assert ours == theirs


def test_transform_from_paths_equals_imagehash(real_files, reference_images):
    # The whole road: decoding through lookalike.images, then the batched hash.
    files, images = real_files[::4], reference_images[::4]
    codes = make_descriptor("phash").transform(files)
    assert [to_hex(c) for c in codes] == [str(imagehash.phash(im)) for im in images]


def test_hamming_distance_equals_imagehash_difference(decoded, reference_images):
    codes = make_descriptor("dhash").transform_pixels(decoded["L"][:12])
    theirs = [imagehash.dhash(im) for im in reference_images[:12]]
    ours = hamming_distance(codes[:, None], codes[None])
    expected = np.array([[a - b for b in theirs] for a in theirs])
    np.testing.assert_array_equal(ours, expected)
    assert hamming_distance(codes[0], codes[1]).shape == ()


def test_hex_round_trip():
    row = np.array([0x00, 0x3F, 0xA5, 0x01, 0xFF, 0x80, 0x7E, 0x10], dtype=np.uint8)
    assert to_hex(row) == "003fa501ff807e10"
    np.testing.assert_array_equal(from_hex(to_hex(row), 64), row)
    # 42-bit colorhash: 11 hex digits like imagehash, leading zero bits in the packed row.
    short = from_hex("2a0000000ff", 42)
    assert short.shape == (6,) and to_hex(short, 42) == "2a0000000ff"


def test_lanczos_resize_equals_pillow_on_many_shapes():
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = rng.integers(1, 260, 2)
        out_h, out_w = rng.integers(1, 90, 2)
        batch = rng.integers(0, 256, (2, h, w), dtype=np.uint8)
        expected = np.stack([np.asarray(Image.fromarray(b).resize((int(out_w), int(out_h)), Image.LANCZOS))
                             for b in batch])
        np.testing.assert_array_equal(lanczos_resize(batch, int(out_w), int(out_h)), expected)


def test_pil_luma_equals_pillow_convert():
    rgb = np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pil_luma(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


@pytest.mark.parametrize("family", ["ahash", "dhash", "phash", "whash"])
@pytest.mark.parametrize("bits", [64, 256])
def test_near_duplicates_are_close_and_unrelated_photos_far(family, bits, ukbench_dir):
    descriptor = make_descriptor(f"{family}:bits={bits}")
    base = sorted(str(p) for p in (ukbench_dir / "base_images").glob("*.jpg"))
    original = str(ukbench_dir / "base_images" / "ukbench00120.jpg")
    variants = [str(ukbench_dir / "mixed_images" / "ukbench00120_resize.jpg"),
                str(ukbench_dir / "ukbench00120_gray.jpg")]
    codes = descriptor.transform(base)
    near = hamming_distance(descriptor.transform(variants), descriptor.transform([original])[0])
    unrelated = hamming_distance(codes[:, None], codes[None])[np.triu_indices(len(base), 1)]
    # Measured: resize/gray variants differ by 0 bits (64-bit) and 0-3 bits (256-bit);
    # the 45 pairs of different photos average 29-32 (64-bit) and 117-127 (256-bit) bits.
    assert near.max() <= 0.05 * bits
    assert unrelated.mean() >= 0.42 * bits
    assert unrelated.min() > near.max()


def test_hash_variants_catch_mirrored_copy(ukbench_dir):
    original = load_pixels(ukbench_dir / "base_images" / "ukbench00120.jpg", mode="L")
    mirrored = make_descriptor("phash").transform([ukbench_dir / "mixed_images" / "ukbench00120_hflip.jpg"])[0]
    variants = hash_variants(original, "phash", 64)
    assert variants.shape == (len(VARIANTS), 8)
    distances = hamming_distance(variants, mirrored)
    # Measured: 32 bits to the unflipped hash, 0 to the "hflip" variant (JPEG re-encoded).
    assert distances[VARIANTS.index("hflip")] <= 2
    assert distances[VARIANTS.index("identity")] >= 20


@pytest.mark.parametrize("family", HASH_FAMILIES)
def test_hash_variants_rows_are_hashes_of_rotated_images(family, ukbench_dir):
    rgb = load_pixels(ukbench_dir / "base_images" / "ukbench09012.jpg", mode="RGB")
    descriptor = make_descriptor(family)
    pixels = rgb if descriptor.image_mode == "RGB" else pil_luma(rgb)
    variants = hash_variants(rgb, family)
    for k, name in ((1, "rot90"), (2, "rot180"), (3, "rot270")):
        rotated = descriptor.transform_pixels([np.ascontiguousarray(np.rot90(pixels, k))])[0]
        np.testing.assert_array_equal(variants[VARIANTS.index(name)], rotated)


@pytest.mark.parametrize("spec", ["ahash", "dhash:bits=256", "phash:bits=256,highfreq_factor=2",
                                  "whash:bits=256", "whash:image_scale=64,remove_ll=false",
                                  "colorhash:binbits=4"])
def test_spec_round_trip_and_declared_shape(spec, decoded):
    descriptor = make_descriptor(spec)
    assert make_descriptor(descriptor.spec).spec == descriptor.spec == spec
    assert descriptor.metric == "hamming" and descriptor.dtype == np.uint8
    pixels = decoded[descriptor.image_mode][:5]
    codes = descriptor.transform_pixels(pixels)
    assert codes.shape == (5, descriptor.code_size) and descriptor.code_size == descriptor.dim // 8
    np.testing.assert_array_equal(descriptor.transform_pixels(pixels[2:3])[0], codes[2])


@pytest.mark.parametrize("spec", ["ahash:bits=63", "phash:bits=36", "whash:bits=144", "colorhash:binbits=0",
                                  "whash:image_scale=100", "whash:wavelet=db4"])
def test_bad_parameters_raise_config_error(spec):
    with pytest.raises(ConfigError):
        make_descriptor(spec)


def test_unreadable_file_raises_image_load_error(ukbench_dir, tmp_path):
    corrupt = ukbench_dir / "mixed_images" / "ukbench09268_corrupt.jpg"
    with pytest.raises(ImageLoadError, match="ukbench09268_corrupt"):
        make_descriptor("phash").transform([corrupt])
    with pytest.raises(ImageLoadError, match="missing.png"):
        make_descriptor("colorhash").transform([tmp_path / "missing.png"])
