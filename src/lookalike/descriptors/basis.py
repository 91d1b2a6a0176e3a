"""Learned-basis descriptors on small resized images: PCA (eigen-images), NMF parts and
k-means centres.

Every family here shrinks an image to a fixed ``size`` (``width x height``), optionally
keeps colour, flattens it to a vector of floats in ``[0, 1]`` and describes it against a
basis learned at ``fit`` time (scikit-learn underneath):

* :class:`PCABasis` (``pca``): projection on the first principal components ("eigenfaces"
  on faces), optionally whitened. Metric ``l2``.
* :class:`NMFBasis` (``nmf``): non-negative coefficients on learned non-negative parts,
  L2-normalised. Metric ``cosine``.
* :class:`KMeansBasis` (``kmeans``): distances to (or soft assignment over) k-means
  centres, normalised. Metric ``l2``.

Learned state lives in attributes ending in ``_`` (numpy arrays), so
:meth:`~lookalike.descriptors.base.Descriptor.save_state` round-trips it. Transforms are
vectorised over the batch: one matrix multiply against the basis (NMF: a few
multiplicative/coordinate-descent sweeps, all rows at once).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConfigError, InputError
from .base import Descriptor, l2_normalize, register_descriptor

KMEANS_ENCODINGS = ("distance", "soft")


def _check_size(size: tuple) -> tuple[int, int]:
    size = tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    if len(size) != 2 or not all(4 <= s <= 512 for s in size):
        raise ConfigError(f"size must be WIDTHxHEIGHT with each side in 4..512, got {size}")
    return size  # type: ignore[return-value]


def resize_to_vectors(pixels: list[np.ndarray], size: tuple[int, int], color: bool) -> np.ndarray:
    """Resize images to ``size`` and flatten them.

    Args:
        pixels: uint8 images, ``(H, W)`` gray or ``(H, W, 3)`` RGB (any mix of sizes).
        size: ``(width, height)`` of the resized images.
        color: keep RGB (``3 * width * height`` values per image) or convert to gray.

    Returns:
        ``(n, height * width [* 3]) float32`` in ``[0, 1]``, row-major (H, W[, C]) order.
    """
    import cv2

    width, height = size
    rows = []
    for p in pixels:
        if color and p.ndim == 2:
            p = np.repeat(p[:, :, None], 3, axis=2)
        elif not color and p.ndim == 3:
            p = cv2.cvtColor(p, cv2.COLOR_RGB2GRAY)
        # INTER_AREA averages the source pixels under each output pixel: no aliasing.
        small = cv2.resize(p, (width, height), interpolation=cv2.INTER_AREA)
        rows.append(small.reshape(-1))
    return np.stack(rows).astype(np.float32) / 255.0


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` items, drawn without replacement."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


class _ResizedImageBasis(Descriptor):
    """Shared plumbing: image size/colour parameters, pixel format and fit sampling."""

    requires_fit = True
    cost = "cheap"

    # Subclasses set these in their constructors (so they appear in the spec).
    size: tuple[int, int]
    color: bool
    fit_sample: int

    @property
    def image_mode(self) -> str:  # type: ignore[override]
        return "RGB" if self.color else "L"

    @property
    def max_side(self) -> int:
        # Decode a little larger than the target so INTER_AREA still has pixels to average.
        return 4 * max(self.size)

    @property
    def input_dim(self) -> int:
        """Length of one flattened resized image."""
        return self.size[0] * self.size[1] * (3 if self.color else 1)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one resized image: ``(height, width)`` or ``(height, width, 3)``."""
        width, height = self.size
        return (height, width, 3) if self.color else (height, width)

    def fit(self, images) -> "_ResizedImageBasis":
        # Sample the sources before decoding: fitting on a huge folder loads only fit_sample.
        images = list(images)
        return super().fit([images[i] for i in sample_rows(len(images), self.fit_sample)])

    def _vectors(self, pixels: list[np.ndarray]) -> np.ndarray:
        return resize_to_vectors(pixels, self.size, self.color)

    def _fit_vectors(self, pixels: list[np.ndarray], needed: int, what: str) -> np.ndarray:
        pixels = [pixels[i] for i in sample_rows(len(pixels), self.fit_sample)]
        if len(pixels) < needed:
            raise InputError(
                f"{self.name}: {what}={needed} needs at least {needed} fit images, got {len(pixels)}"
            )
        return self._vectors(pixels)

    def components_as_images(self, n: int) -> list[tuple[str, np.ndarray]]:
        """The first ``n`` learned basis images, each ``(title, image_shape float array)``."""
        raise NotImplementedError


@register_descriptor
class PCABasis(_ResizedImageBasis):
    """Projection on principal components of resized images ("eigenfaces").

    Args:
        size: ``(width, height)`` the images are resized to (spec: ``size=32x32``).
        color: keep RGB instead of gray.
        components: number of principal components kept (= ``dim``).
        whiten: divide each coordinate by the square root of its explained variance, so
            every component weighs the same in the L2 distance.
        fit_sample: at most this many images (a fixed random subset) are used by ``fit``.

    Learned state: ``mean_`` ``(input_dim,)``, ``components_`` ``(components, input_dim)``,
    ``explained_variance_`` ``(components,)``, all float32.

    Output: ``(n, components) float32``; metric ``l2`` (smaller = more similar).
    """

    name = "pca"

    def __init__(self, size: tuple = (32, 32), color: bool = False, components: int = 64,
                 whiten: bool = False, fit_sample: int = 5000):
        self.size = _check_size(size)
        self.color = bool(color)
        if int(components) < 1:
            raise ConfigError(f"components must be >= 1, got {components}")
        self.components = int(components)
        self.whiten = bool(whiten)
        self.fit_sample = int(fit_sample)

    @property
    def dim(self) -> int:
        return self.components

    @property
    def metric(self) -> str:
        return "l2"

    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        from sklearn.decomposition import PCA

        x = self._fit_vectors(pixels, self.components, "components")
        if self.components > x.shape[1]:
            raise ConfigError(
                f"pca: components={self.components} exceeds the input dimension {x.shape[1]}"
            )
        pca = PCA(n_components=self.components, svd_solver="full").fit(x)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.explained_variance_ = pca.explained_variance_.astype(np.float32)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        projected = (self._vectors(pixels) - self.mean_) @ self.components_.T
        if self.whiten:
            # Same convention as sklearn's PCA(whiten=True).transform.
            projected /= np.sqrt(np.maximum(self.explained_variance_, 1e-12))
        return projected

    def components_as_images(self, n: int = 8) -> list[tuple[str, np.ndarray]]:
        out = [("mean", self.mean_.reshape(self.image_shape))]
        for i in range(min(n - 1, len(self.components_))):
            out.append((f"eigen {i + 1}", self.components_[i].reshape(self.image_shape)))
        return out


@register_descriptor
class NMFBasis(_ResizedImageBasis):
    """Non-negative matrix factorisation parts of resized images.

    ``fit`` learns ``components`` non-negative parts ``H`` with ``X ~ W H`` (sklearn
    ``NMF``, ``init="nndsvda"``, fixed ``random_state``). ``transform`` solves for the
    non-negative coefficients ``W`` of new images against the stored parts (exactly what
    ``NMF.transform`` does, via ``non_negative_factorization`` with ``update_H=False``),
    then L2-normalises each row.

    Why the multiplicative-update solver (Lee & Seung) rather than sklearn's default
    coordinate descent: measured on ORL faces (46x56 and 23x28, 40 parts, 5 train / 5 test
    images per person, 1-NN), coordinate-descent codes of new images identified 0.50 of
    the test faces, multiplicative-update codes 0.85: coordinate descent drives many
    coefficients to exactly 0 in an unstable way, MU gives smooth codes and is faster.

    Why ``cosine``: the coefficients scale with image brightness and contrast, while what
    identifies an image is which parts it uses in which proportions, i.e. the direction of
    ``W``. Rows are unit length and non-negative, so the index distance ``1 - cos`` lies
    in ``[0, 1]`` (0 = same mixture of parts; smaller = more similar). The ranking equals
    L2 on these unit rows.

    Args:
        size, color, fit_sample: as in :class:`PCABasis`.
        components: number of parts (= ``dim``).
        max_iter: solver iterations for both fit and transform.

    Learned state: ``components_`` ``(components, input_dim) float32``, non-negative.
    """

    name = "nmf"
    cost = "moderate"

    def __init__(self, size: tuple = (32, 32), color: bool = False, components: int = 32,
                 max_iter: int = 200, fit_sample: int = 2000):
        self.size = _check_size(size)
        self.color = bool(color)
        if int(components) < 1:
            raise ConfigError(f"components must be >= 1, got {components}")
        self.components = int(components)
        self.max_iter = int(max_iter)
        self.fit_sample = int(fit_sample)

    @property
    def dim(self) -> int:
        return self.components

    @property
    def metric(self) -> str:
        return "cosine"

    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        from sklearn.decomposition import NMF
        from sklearn.exceptions import ConvergenceWarning

        x = self._fit_vectors(pixels, 1, "images")
        model = NMF(n_components=self.components, init="nndsvda", solver="mu",
                    max_iter=self.max_iter, random_state=0)
        with warnings.catch_warnings():
            # A capped iteration count is a deliberate speed/quality trade-off here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x.astype(np.float64))
        self.components_ = model.components_.astype(np.float32)

    def coefficients(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Raw non-negative coefficients ``W`` ``(n, components) float32`` (not normalised)."""
        x = self._vectors(pixels).astype(np.float64)
        h = self.components_.astype(np.float64)
        # Lee & Seung multiplicative updates for W with H fixed (what sklearn's "mu"
        # solver does for the Frobenius loss), written out so that every row starts from
        # its own mean and runs a fixed number of updates: an image's code never depends
        # on the other images in its batch (sklearn starts all rows from the batch mean).
        w = np.repeat(np.sqrt(np.maximum(x.mean(axis=1, keepdims=True), 1e-12) / self.components),
                      self.components, axis=1)
        xht, hht = x @ h.T, h @ h.T
        for _ in range(self.max_iter):
            w *= xht / np.maximum(w @ hht, 1e-12)
        return w.astype(np.float32)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        return l2_normalize(self.coefficients(pixels))

    def components_as_images(self, n: int = 8) -> list[tuple[str, np.ndarray]]:
        return [(f"part {i + 1}", self.components_[i].reshape(self.image_shape))
                for i in range(min(n, len(self.components_)))]


@register_descriptor
class KMeansBasis(_ResizedImageBasis):
    """Encoding of resized images against k-means centres.

    Args:
        size, color, fit_sample: as in :class:`PCABasis`.
        k: number of centres (= ``dim``).
        encoding: ``distance``: the Euclidean distances to the ``k`` centres, L2-normalised
            (images near each other have similar distance profiles); ``soft``: soft
            assignment ``softmax(-d_j^2 / (temperature * scale_))`` over the centres,
            L2-normalised, where ``scale_`` is the median squared distance of the fit images
            to their nearest centre (so ``temperature`` is unit-free).
        temperature: softness of ``soft`` (larger = flatter; ignored for ``distance``).

    Learned state: ``centers_`` ``(k, input_dim) float32``, ``scale_`` ``(1,) float32``.

    Output: ``(n, k) float32``; metric ``l2`` (smaller = more similar).
    """

    name = "kmeans"

    def __init__(self, size: tuple = (32, 32), color: bool = False, k: int = 64,
                 encoding: str = "distance", temperature: float = 1.0, fit_sample: int = 5000):
        self.size = _check_size(size)
        self.color = bool(color)
        if int(k) < 2:
            raise ConfigError(f"k must be >= 2, got {k}")
        if encoding not in KMEANS_ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; valid: {', '.join(KMEANS_ENCODINGS)}")
        if float(temperature) <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.k = int(k)
        self.encoding = encoding
        self.temperature = float(temperature)
        self.fit_sample = int(fit_sample)

    @property
    def dim(self) -> int:
        return self.k

    @property
    def metric(self) -> str:
        return "l2"

    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        from sklearn.cluster import KMeans

        x = self._fit_vectors(pixels, self.k, "k")
        model = KMeans(n_clusters=self.k, n_init=3, random_state=0).fit(x)
        self.centers_ = model.cluster_centers_.astype(np.float32)
        nearest = self.squared_distances(x).min(axis=1)
        self.scale_ = np.array([max(float(np.median(nearest)), 1e-12)], dtype=np.float32)

    def squared_distances(self, x: np.ndarray) -> np.ndarray:
        """``(n, input_dim)`` vectors -> ``(n, k)`` squared Euclidean distances to the centres.

        Uses ``|x|^2 - 2 x.c + |c|^2`` (one matrix multiply), clipped at 0 against rounding.
        """
        # float64: in float32 the expansion cancels badly for points near a centre.
        x = x.astype(np.float64)
        c = self.centers_.astype(np.float64)
        sq = (x * x).sum(axis=1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(axis=1)
        return np.maximum(sq, 0.0)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        sq = self.squared_distances(self._vectors(pixels))
        if self.encoding == "distance":
            return l2_normalize(np.sqrt(sq))
        logits = -sq / (self.temperature * float(self.scale_[0]))
        logits -= logits.max(axis=1, keepdims=True)  # stable softmax
        weights = np.exp(logits)
        return l2_normalize(weights / weights.sum(axis=1, keepdims=True))

    def components_as_images(self, n: int = 8) -> list[tuple[str, np.ndarray]]:
        return [(f"centre {i + 1}", self.centers_[i].reshape(self.image_shape))
                for i in range(min(n, len(self.centers_)))]
