"""Learned-basis descriptors (PCA / NMF / k-means) on real ORL faces.

Oracles: scikit-learn's PCA, exact non-negative least squares (scipy ``nnls``), slow
per-centre loops, and identification accuracy on an image-disjoint split (5 training /
5 test images of each of the 38 people, 1-nearest-neighbour).
"""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.descriptors import make_descriptor
from lookalike.descriptors.basis import KMeansBasis, NMFBasis, PCABasis, resize_to_vectors
from lookalike.errors import ConfigError, InputError, NotFittedError
from lookalike.images import load_pixels

SIZE = (23, 28)  # ORL's 92x112 divided by 4: keeps the aspect ratio and the tests fast


@pytest.fixture(scope="module")
def orl(shared_data):
    """(pixels, person labels, train mask) for ORL: images 1-5 train, 6-10 test."""
    files = sorted((shared_data / "orl_faces" / "full_92x112").glob("s*/*.pgm"))
    assert len(files) == 380
    pixels = [load_pixels(f, mode="L") for f in files]
    labels = np.array([f.parent.name for f in files])
    train = np.array([int(f.stem) <= 5 for f in files])
    return pixels, labels, train


def _subset(pixels, mask):
    return [p for p, keep in zip(pixels, mask) if keep]


def identification_accuracy(x: np.ndarray, labels: np.ndarray, train: np.ndarray, metric: str) -> float:
    """1-NN accuracy of the test rows against the training rows (brute force)."""
    gallery, probes = x[train], x[~train]
    if metric == "cosine":
        distances = -(probes @ gallery.T)  # rows are unit length
    else:
        distances = ((probes[:, None, :] - gallery[None, :, :]) ** 2).sum(axis=2)
    predicted = labels[train][distances.argmin(axis=1)]
    return float((predicted == labels[~train]).mean())


@pytest.fixture(scope="module")
def fitted(orl):
    pixels, _, train = orl
    gallery = _subset(pixels, train)
    return {
        "pca": PCABasis(size=SIZE, components=40).fit(gallery),
        "nmf": NMFBasis(size=SIZE, components=40).fit(gallery),
        "kmeans": KMeansBasis(size=SIZE, k=40).fit(gallery),
    }


def test_pca_equals_sklearn_and_identifies_faces(orl, fitted):
    from sklearn.decomposition import PCA

    pixels, labels, train = orl
    x = resize_to_vectors(pixels, SIZE, color=False)
    oracle = PCA(n_components=40, svd_solver="full").fit(x[train])
    ours = fitted["pca"].transform(pixels)
    assert ours.shape == (380, 40) and ours.dtype == np.float32
    # Components are defined up to sign: compare per-column absolute agreement.
    reference = oracle.transform(x)
    signs = np.sign((ours * reference).sum(axis=0))
    np.testing.assert_allclose(ours * signs, reference, atol=2e-3)
    accuracy = identification_accuracy(ours, labels, train, fitted["pca"].metric)
    assert accuracy >= 0.85  # measured 0.879


def test_pca_whitening_matches_sklearn(orl):
    from sklearn.decomposition import PCA

    pixels, _, train = orl
    gallery = _subset(pixels, train)
    ours = PCABasis(size=SIZE, components=10, whiten=True).fit(gallery).transform(gallery)
    reference = PCA(n_components=10, whiten=True, svd_solver="full").fit_transform(
        resize_to_vectors(gallery, SIZE, color=False))
    signs = np.sign((ours * reference).sum(axis=0))
    np.testing.assert_allclose(ours * signs, reference, atol=1e-3)
    # Whitened training codes have unit variance per component.
    np.testing.assert_allclose(ours.var(axis=0, ddof=1), 1.0, rtol=1e-3)


def test_nmf_codes_are_near_exact_nonnegative_least_squares(orl, fitted):
    from scipy.optimize import nnls

    pixels, labels, train = orl
    nmf = fitted["nmf"]
    assert (nmf.components_ >= 0).all()
    probes = _subset(pixels, ~train)[:12]
    w = nmf.coefficients(probes)
    assert (w >= 0).all()
    x = resize_to_vectors(probes, SIZE, color=False).astype(np.float64)
    basis = nmf.components_.astype(np.float64)
    ours = np.linalg.norm(x - w @ basis, axis=1)
    exact = np.array([nnls(basis.T, row)[1] for row in x])  # slow, exact optimum per image
    assert (ours >= exact - 1e-6).all()
    assert np.median(ours / exact) < 1.03  # MU codes within a few % of the optimum

    codes = nmf.transform(pixels)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)
    assert nmf.metric == "cosine"
    assert identification_accuracy(codes, labels, train, "cosine") >= 0.78  # measured 0.85


def test_nmf_reconstruction_is_bounded_by_pca(orl, fitted):
    # Eckart-Young: no rank-40 factorisation beats PCA's (with the mean: rank 41);
    # a good NMF should not be far behind it.
    pixels, _, train = orl
    gallery = _subset(pixels, train)
    x = resize_to_vectors(gallery, SIZE, color=False)
    nmf, pca = fitted["nmf"], fitted["pca"]
    nmf_error = np.linalg.norm(x - nmf.coefficients(gallery) @ nmf.components_)
    projected = (x - pca.mean_) @ pca.components_.T
    pca_error = np.linalg.norm(x - (projected @ pca.components_ + pca.mean_))
    assert pca_error < nmf_error < 1.6 * pca_error


def test_kmeans_encodings_against_slow_loop(orl, fitted):
    pixels, labels, train = orl
    km = fitted["kmeans"]
    probes = _subset(pixels, ~train)[:10]
    x = resize_to_vectors(probes, SIZE, color=False).astype(np.float64)
    slow = np.array([[np.sqrt(((row - c) ** 2).sum()) for c in km.centers_.astype(np.float64)] for row in x])
    expected = slow / np.linalg.norm(slow, axis=1, keepdims=True)
    np.testing.assert_allclose(km.transform(probes), expected, atol=1e-4)

    soft = KMeansBasis(size=SIZE, k=40, encoding="soft", temperature=0.5)
    soft.load_state(km.save_state())  # same centres, other encoding
    codes = soft.transform(probes)
    weights = np.exp(-(slow ** 2) / (0.5 * soft.scale_[0]))
    weights /= weights.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(codes, weights / np.linalg.norm(weights, axis=1, keepdims=True), atol=1e-4)
    assert (codes.argmax(axis=1) == slow.argmin(axis=1)).all()

    accuracy = identification_accuracy(km.transform(pixels), labels, train, "l2")
    assert accuracy >= 0.75  # measured 0.8+ (k=40, 23x28)


@pytest.mark.parametrize("name", ["pca", "nmf", "kmeans"])
def test_state_and_spec_round_trip(orl, fitted, name):
    pixels, _, _ = orl
    descriptor = fitted[name]
    assert descriptor.requires_fit and descriptor.is_fitted
    clone = make_descriptor(descriptor.spec)
    assert clone.spec == descriptor.spec and "size=23x28" in clone.spec
    with pytest.raises(NotFittedError):
        clone.transform(pixels[:1])
    clone.load_state(descriptor.save_state())
    for key, value in descriptor.learned_state().items():
        assert isinstance(value, np.ndarray) and key.endswith("_")
    np.testing.assert_array_equal(clone.transform(pixels[:5]), descriptor.transform(pixels[:5]))
    assert clone.dim == 40


def test_color_input_from_files(coil_dir):
    files = sorted(coil_dir.glob("obj2__*.png"))[:6] + sorted(coil_dir.glob("obj3__*.png"))[:6]
    pca = make_descriptor("pca:size=16x16,color=true,components=8").fit(files)
    assert pca.image_mode == "RGB" and pca.input_dim == 16 * 16 * 3
    assert pca.components_.shape == (8, 768)
    x = pca.transform(files)
    assert x.shape == (12, 8) and np.isfinite(x).all()


def test_bad_parameters_and_inputs(orl):
    pixels, _, _ = orl
    with pytest.raises(ConfigError):
        make_descriptor("kmeans:encoding=hard")
    with pytest.raises(ConfigError):
        make_descriptor("pca:size=2x2")
    with pytest.raises(ConfigError):
        make_descriptor("pca:size=axb")
    with pytest.raises(InputError, match="at least 50"):
        PCABasis(size=SIZE, components=50).fit(pixels[:10])
    with pytest.raises(InputError):
        KMeansBasis(size=SIZE, k=20).fit(pixels[:5])


def test_draw_components(fitted, tmp_path):
    from PIL import Image

    from lookalike.evaluation.components_figure import draw_components

    titles = [t for t, _ in fitted["pca"].components_as_images(6)]
    assert titles[0] == "mean" and len(titles) == 6
    assert all(img.shape == (28, 23) for _, img in fitted["nmf"].components_as_images(6))
    out = draw_components([fitted["pca"], fitted["nmf"], fitted["kmeans"]], tmp_path / "c.png", n=6)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    with pytest.raises(NotFittedError):
        draw_components(PCABasis(), tmp_path / "x.png")
