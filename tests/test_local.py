"""Local features (SIFT / RootSIFT / ORB) and their aggregations (BoVW, VLAD) on real images.

Retrieval: 20 COIL-100 objects x 6 neighbouring views (0..75 degrees), leave-one-out
top-1, with vocabularies learned on 20 *other* objects. Oracles: slow per-descriptor
loops for the histograms / residual sums, scikit-learn PCA for the VLAD projection.
"""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.descriptors import make_descriptor
from lookalike.descriptors.local import (
    BoVWDescriptor,
    LocalFeatureExtractor,
    VLADDescriptor,
    nearest_centers,
    root_sift,
)
from lookalike.errors import ConfigError, InputError, NotFittedError
from lookalike.images import load_pixels

ANGLES = (0, 15, 30, 45, 60, 75)


def _coil(coil_dir, objects):
    files = [coil_dir / f"obj{o}__{a}.png" for o in objects for a in ANGLES]
    return [f for f in files if f.exists()]  # a few COIL views are missing in the source


@pytest.fixture(scope="module")
def coil_sets(coil_dir):
    queries = _coil(coil_dir, range(2, 22))
    fit = _coil(coil_dir, range(60, 80))
    assert len(queries) >= 115 and len(fit) >= 115
    labels = np.array([int(f.name.split("__")[0][3:]) for f in queries])
    return queries, labels, fit


def leave_one_out_top1(x: np.ndarray, labels: np.ndarray) -> float:
    distances = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(axis=1)] == labels).mean())


@pytest.fixture(scope="module")
def bovw(coil_sets):
    return BoVWDescriptor(k=256).fit(coil_sets[2])


@pytest.fixture(scope="module")
def vlad(coil_sets):
    return VLADDescriptor(k=16).fit(coil_sets[2])


def test_bovw_coil_leave_one_out(coil_sets, bovw):
    queries, labels, _ = coil_sets
    x = bovw.transform(queries)
    assert x.shape == (len(queries), 256) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert leave_one_out_top1(x, labels) >= 0.8  # measured 0.873 (chance: 5/117)


def test_vlad_coil_leave_one_out(coil_sets, vlad):
    queries, labels, _ = coil_sets
    x = vlad.transform(queries)
    assert x.shape == (len(queries), 16 * 128)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert leave_one_out_top1(x, labels) >= 0.9  # measured 0.975


def test_bovw_matches_slow_loop(coil_sets, bovw):
    queries = coil_sets[0][:4]
    pixels = bovw.load_batch(queries)
    per_image = bovw.local_descriptors(pixels)
    centers = bovw.centers_.astype(np.float64)
    for vector, descriptors in zip(bovw.transform_pixels(pixels), per_image):
        counts = np.zeros(bovw.k)
        for d in descriptors.astype(np.float64):
            counts[np.argmin(((centers - d) ** 2).sum(axis=1))] += 1
        expected = counts / counts.sum() * bovw.idf_
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
    # idf is log((1 + N) / (1 + df)): never negative, largest for words seen in no image.
    assert (bovw.idf_ >= 0).all() and bovw.idf_.max() <= np.log(1 + 120) + 1e-6


def test_vlad_matches_slow_loop(coil_sets, vlad):
    pixels = vlad.load_batch(coil_sets[0][:3])
    per_image = vlad.local_descriptors(pixels)
    centers = vlad.centers_.astype(np.float64)
    for vector, descriptors in zip(vlad.transform_pixels(pixels), per_image):
        residuals = np.zeros((vlad.k, 128))
        for d in descriptors.astype(np.float64):
            j = np.argmin(((centers - d) ** 2).sum(axis=1))
            residuals[j] += d - centers[j]
        for j in range(vlad.k):  # intra-normalisation
            norm = np.linalg.norm(residuals[j])
            if norm > 0:
                residuals[j] /= norm
        flat = residuals.ravel()
        flat = np.sign(flat) * np.sqrt(np.abs(flat))
        np.testing.assert_allclose(vector, flat / np.linalg.norm(flat), atol=1e-5)


def test_vlad_pca_whitening_against_sklearn(coil_sets):
    from sklearn.decomposition import PCA

    fit = coil_sets[2][:36]
    vlad = VLADDescriptor(k=8, pca=16).fit(fit)
    assert vlad.dim == 16 and vlad.pca_components_.shape == (16, 8 * 128)
    pixels = vlad.load_batch(fit)
    raw = vlad.raw_vlad(vlad.local_descriptors(pixels))
    reference = PCA(n_components=16, whiten=True, svd_solver="full").fit_transform(raw)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = vlad.transform_pixels(pixels)
    signs = np.sign((ours * reference).sum(axis=0))
    np.testing.assert_allclose(ours * signs, reference, atol=2e-3)


def test_root_sift_and_extractor(shared_data):
    path = shared_data / "fixtures" / "opencv_samples" / "graf1.png"
    gray = load_pixels(path, mode="L")
    sift = LocalFeatureExtractor("sift", max_keypoints=300, max_side=None).extract(gray)
    root = LocalFeatureExtractor("rootsift", max_keypoints=300, max_side=None).extract(gray)
    assert len(sift) == len(root) == 300
    np.testing.assert_array_equal(sift.points, root.points)
    expected = np.sqrt(sift.descriptors / sift.descriptors.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(root.descriptors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(root.descriptors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(root_sift(sift.descriptors), root.descriptors)

    orb = LocalFeatureExtractor("orb", max_keypoints=200).extract(gray)
    assert orb.descriptors.dtype == np.uint8 and orb.descriptors.shape[1] == 32 and len(orb) <= 200


def test_keypoints_are_reported_in_the_original_frame(shared_data):
    from scipy.spatial import cKDTree

    gray = load_pixels(shared_data / "fixtures" / "opencv_samples" / "graf1.png", mode="L")  # 800x640
    full = LocalFeatureExtractor("sift", 500, max_side=None).extract(gray)
    shrunk = LocalFeatureExtractor("sift", 500, max_side=400).extract(gray)
    assert shrunk.image_size == (800, 640)
    assert shrunk.points[:, 0].max() > 600  # not left in the 400-pixel frame
    distance, _ = cKDTree(full.points).query(shrunk.points)
    assert np.median(distance) < 1.0  # measured 0.61 px


def test_blank_image_gives_zero_vector(bovw):
    blank = np.full((128, 128), 127, dtype=np.uint8)
    assert len(LocalFeatureExtractor().extract(blank)) == 0
    x = bovw.transform_pixels([blank])
    assert x.shape == (1, 256) and not x.any()


def test_state_spec_round_trip(coil_sets, vlad, bovw):
    queries = coil_sets[0][:3]
    for descriptor in (vlad, bovw):
        clone = make_descriptor(descriptor.spec)
        assert clone.spec == descriptor.spec
        with pytest.raises(NotFittedError):
            clone.transform(queries)
        clone.load_state(descriptor.save_state())
        np.testing.assert_array_equal(clone.transform(queries), descriptor.transform(queries))
    assert make_descriptor("vlad:k=32,pca=128").dim == 128
    assert make_descriptor("bovw:k=100,method=sift").spec == "bovw:k=100,method=sift"


def test_nearest_centers_oracle():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    slow = [int(np.argmin([np.linalg.norm(row - centre) for centre in c])) for row in x]
    assert nearest_centers(x, c).tolist() == slow


def test_bad_parameters_and_inputs():
    with pytest.raises(ConfigError):
        make_descriptor("bovw:method=orb")
    with pytest.raises(ConfigError):
        make_descriptor("vlad:k=4,pca=1000")
    with pytest.raises(ConfigError):
        LocalFeatureExtractor("surf")
    with pytest.raises(InputError):
        LocalFeatureExtractor().extract(np.zeros((10, 10), dtype=np.float32))
    blank = np.full((64, 64), 200, dtype=np.uint8)
    with pytest.raises(InputError, match="local descriptors"):
        BoVWDescriptor(k=8).fit([blank, blank])
