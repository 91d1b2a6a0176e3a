"""The dedup verifier's pieces: orientation hashes from DCT sign rules, the rotation
estimate, the trimmed correlation, the parallel scan and versioned thresholds."""
from __future__ import annotations

import json

import numpy as np

from lookalike.dedup import scan as S
from lookalike.dedup.calibrate import load_thresholds
from lookalike.dedup.verify import (Thresholds, estimate_rotation, rotate_thumbs, thumbnail_features,
                                    trimmed_correlation)


def _smooth(rng, n=2, side=96):
    """Smooth random gray images (a random walk in both directions)."""
    out = []
    for _ in range(n):
        z = rng.normal(0, 1, (side, side)).cumsum(0).cumsum(1)
        z = (z - z.min()) / (np.ptp(z) + 1e-9) * 255
        out.append(z.astype(np.uint8))
    return out


def test_orientation_hashes_equal_hashes_of_turned_thumbnails():
    rng = np.random.default_rng(0)
    thumbs = np.stack([S.thumbnails(g) for g in _smooth(rng, 4)])
    v = S.variant_hashes(thumbs)
    base = thumbs[:, 0]
    turned = [base, base[:, :, ::-1], np.rot90(base, 1, axes=(1, 2)), np.rot90(base, 2, axes=(1, 2)),
              np.rot90(base, 3, axes=(1, 2)), thumbs[:, 1], thumbs[:, 2]]
    for k, img in enumerate(turned):
        assert (S.dct_hash(np.ascontiguousarray(img)) == v[:, k]).all(), S.DEDUP_VARIANTS[k]


def test_rotation_estimate_recovers_small_turns():
    rng = np.random.default_rng(1)
    x = np.stack([S.thumbnails(g)[0] for g in _smooth(rng, 6)]).astype(np.float32)
    angles = np.deg2rad(np.array([-6, -3, 0, 2, 5, 7], np.float32))
    y = rotate_thumbs(x, angles)
    est = estimate_rotation(x, y)
    assert np.abs(np.rad2deg(est - angles)).max() < 1.0


def test_trimmed_correlation_ignores_a_local_overlay():
    rng = np.random.default_rng(2)
    a, b = (S.thumbnails(g)[0].astype(np.float32) for g in _smooth(rng, 2))
    marked = a.copy()
    marked[48:56, 8:56] = 255.0          # a white caption band: 6 of the 64 blocks
    x, y = np.stack([a, a]), np.stack([marked, b])
    full = trimmed_correlation(x, y, keep=64)
    trimmed = trimmed_correlation(x, y)
    assert trimmed[0] > full[0] + 0.05 and trimmed[0] > 0.9
    assert trimmed[1] < trimmed[0] - 0.1
    plain = np.corrcoef(a.ravel(), marked.ravel())[0, 1]
    assert abs(full[0] - plain) < 1e-3


def test_rotated_copy_is_aligned_before_correlating(ukbench_dir):
    from PIL import Image

    with Image.open(ukbench_dir / "base_images" / "ukbench00120.jpg") as im:
        im = im.convert("L")
        turned = im.rotate(5, resample=Image.BICUBIC)
    gray, gray_t = np.asarray(im), np.asarray(turned)
    thumbs = np.stack([S.thumbnails(gray), S.thumbnails(gray_t)])
    _, ncc, grad = thumbnail_features(S.variant_hashes(thumbs), thumbs, np.array([0]), np.array([1]))
    plain = trimmed_correlation(thumbs[:1, 0].astype(np.float32), thumbs[1:, 0].astype(np.float32))
    # 0.68 unaligned; about 0.96 / 0.97 once the turn is estimated and undone.
    assert ncc[0] > 0.94 and ncc[0] > plain[0] + 0.2 and grad[0] > 0.94


def test_parallel_scan_equals_serial(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    paths = []
    # 17 paths: more than one chunk of 8, so the pool really runs.
    for i, g in enumerate(_smooth(rng, 16, side=150)):
        p = tmp_path / f"im{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(g).convert("RGB").save(p)
        paths.append(p)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.jpg")
    one = S.scan_files(paths, workers=1)
    two = S.scan_files(paths, workers=2, chunk=2)
    assert one.paths == two.paths and len(one) == 16
    assert (one.thumbs == two.thumbs).all() and (one.variants == two.variants).all()
    assert one.content_hashes == two.content_hashes
    assert [f[0] for f in one.failures] == [f[0] for f in two.failures] == [str((tmp_path / "broken.jpg").resolve())]


def test_thresholds_of_an_older_feature_recipe_are_not_used(tmp_path):
    (tmp_path / "dedup.json").write_text(json.dumps({"format_version": 1, "thresholds": {"bias": 9.0}}))
    assert load_thresholds(tmp_path) == Thresholds()
    (tmp_path / "dedup.json").write_text(json.dumps({"format_version": 2, "thresholds": {"bias": 9.0}}))
    assert load_thresholds(tmp_path).bias == 9.0
