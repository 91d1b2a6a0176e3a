"""Local features (SIFT, RootSIFT, ORB) and their aggregation into one vector per image.

* :class:`LocalFeatureExtractor`: keypoints + descriptors of one image (OpenCV,
  imported lazily), image shrunk to ``max_side`` first, keypoint coordinates reported in
  the pixel frame of the image as given (so a homography estimated from them is one of
  the original images).
* :class:`BoVWDescriptor` (``bovw``): bag of visual words, a k-means vocabulary (FAISS)
  over local descriptors, tf-idf weighted word histogram, L2-normalised.
* :class:`VLADDescriptor` (``vlad``): sum of residuals to k centres, intra-normalised,
  power-normalised, L2-normalised, optionally PCA-whitened to a smaller dimension
  (Jégou et al. 2010; Arandjelović & Zisserman "All about VLAD" 2013; Jégou & Chum 2012).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, InputError
from .base import Descriptor, l2_normalize, register_descriptor

LOCAL_METHODS = ("sift", "rootsift", "orb")
#: Methods with float descriptors, usable by the k-means based aggregations.
FLOAT_METHODS = ("sift", "rootsift")


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
        points: ``(n, 2) float32`` keypoint ``(x, y)`` in the pixel frame of the image
            passed to the extractor (before the internal ``max_side`` shrink).
        descriptors: ``(n, 128) float32`` for SIFT / RootSIFT (RootSIFT rows have unit L2
            norm), ``(n, 32) uint8`` for ORB (256 bits; compare by Hamming distance).
        sizes: ``(n,) float32`` keypoint diameters, in the same pixel frame.
        angles: ``(n,) float32`` keypoint orientations in degrees.
        image_size: ``(width, height)`` of the image as given.
        method: ``sift``, ``rootsift`` or ``orb``.
    """

    points: np.ndarray
    descriptors: np.ndarray
    sizes: np.ndarray
    angles: np.ndarray
    image_size: tuple[int, int]
    method: str

    def __len__(self) -> int:
        return len(self.points)

    @property
    def is_binary(self) -> bool:
        return self.method == "orb"


def root_sift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise, then square-root.

    Euclidean distance between RootSIFT vectors is the Hellinger distance between the
    original SIFT histograms. Rows come out with unit L2 norm.

    Args:
        descriptors: ``(n, 128)`` non-negative SIFT descriptors.

    Returns:
        ``(n, 128) float32``.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), eps)
    return np.sqrt(d)


class LocalFeatureExtractor:
    """Detect and describe keypoints of one image.

    Args:
        method: ``sift``, ``rootsift`` (SIFT then :func:`root_sift`) or ``orb``.
        max_keypoints: keep at most this many keypoints (the strongest responses).
        max_side: shrink the image so its longer side is at most this before detection
            (``None`` or ``0``: keep full size). Coordinates are mapped back.
    """

    def __init__(self, method: str = "rootsift", max_keypoints: int = 1000,
                 max_side: int | None = 640):
        if method not in LOCAL_METHODS:
            raise ConfigError(f"unknown local feature method {method!r}; valid: {', '.join(LOCAL_METHODS)}")
        if int(max_keypoints) < 1:
            raise ConfigError(f"max_keypoints must be >= 1, got {max_keypoints}")
        self.method = method
        self.max_keypoints = int(max_keypoints)
        self.max_side = int(max_side) if max_side else None
        self._detector = None  # cv2 objects are built lazily and are not picklable

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_detector"] = None
        return state

    @property
    def descriptor_dim(self) -> int:
        return 32 if self.method == "orb" else 128

    def _get_detector(self):
        if self._detector is None:
            import cv2

            if self.method == "orb":
                self._detector = cv2.ORB_create(nfeatures=self.max_keypoints)
            else:
                self._detector = cv2.SIFT_create(nfeatures=self.max_keypoints)
        return self._detector

    def extract(self, pixels: np.ndarray) -> LocalFeatures:
        """Keypoints and descriptors of one ``(H, W)`` or ``(H, W, 3)`` uint8 image.

        Returns:
            :class:`LocalFeatures` (possibly empty: a flat image has no keypoints).

        Raises:
            InputError: not a uint8 2-D or RGB array.
        """
        import cv2

        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
            raise InputError(
                f"local features need a uint8 (H, W) or (H, W, 3) array, got "
                f"{getattr(pixels, 'dtype', type(pixels).__name__)} {getattr(pixels, 'shape', '')}"
            )
        gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels
        height, width = gray.shape
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        keypoints, descriptors = self._get_detector().detectAndCompute(np.ascontiguousarray(gray), None)
        keypoints = list(keypoints)[: self.max_keypoints]
        n = len(keypoints)
        if descriptors is None or n == 0:
            dtype = np.uint8 if self.method == "orb" else np.float32
            descriptors = np.zeros((0, self.descriptor_dim), dtype=dtype)
        else:
            descriptors = descriptors[:n]
        if self.method == "rootsift":
            descriptors = root_sift(descriptors)
        elif self.method == "sift":
            descriptors = descriptors.astype(np.float32)
        # Map coordinates back: the shrunk image's pixel centres sit at (x + 0.5) / scale - 0.5.
        sx, sy = width / gray.shape[1], height / gray.shape[0]
        points = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(n, 2)
        points = (points + 0.5) * np.array([sx, sy], dtype=np.float32) - 0.5
        return LocalFeatures(
            points=points,
            descriptors=descriptors,
            sizes=np.array([kp.size for kp in keypoints], dtype=np.float32) * np.float32(sx),
            angles=np.array([kp.angle for kp in keypoints], dtype=np.float32),
            image_size=(int(width), int(height)),
            method=self.method,
        )


def faiss_kmeans(vectors: np.ndarray, k: int, niter: int = 20, seed: int = 1234) -> np.ndarray:
    """k-means centres with FAISS (deterministic for a fixed seed and thread count).

    Args:
        vectors: ``(n, dim)`` float training vectors, ``n >= k``.

    Returns:
        ``(k, dim) float32`` centres.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    # min_points_per_centroid=1: small fit sets are the caller's choice, no stderr warning.
    kmeans = faiss.Kmeans(x.shape[1], int(k), niter=int(niter), seed=int(seed), verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=100_000)
    kmeans.train(x)
    return np.asarray(kmeans.centroids, dtype=np.float32).reshape(k, x.shape[1])


def nearest_centers(vectors: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (L2) of every row: ``(n, dim), (k, dim) -> (n,) int64``.

    One matrix multiply (``|c|^2 - 2 x.c``; ``|x|^2`` does not change the argmin).
    """
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int64)
    scores = (centers * centers).sum(axis=1) - 2.0 * (vectors @ centers.T)
    return scores.argmin(axis=1).astype(np.int64)


class _LocalAggregate(Descriptor):
    """Shared plumbing of vocabulary-based descriptors: extraction, sampling, vocabulary."""

    requires_fit = True
    cost = "expensive"
    image_mode = "L"

    # Set by subclass constructors (so they appear in the spec).
    k: int
    method: str
    max_keypoints: int
    image_side: int
    fit_sample: int
    fit_descriptors: int
    niter: int

    def _init_local(self, k, method, max_keypoints, image_side, fit_sample, fit_descriptors, niter):
        if method not in FLOAT_METHODS:
            raise ConfigError(
                f"{self.name}: method must be one of {', '.join(FLOAT_METHODS)} (float descriptors), got {method!r}"
            )
        if int(k) < 2:
            raise ConfigError(f"k must be >= 2, got {k}")
        self.k = int(k)
        self.method = method
        self.max_keypoints = int(max_keypoints)
        self.image_side = int(image_side)
        self.fit_sample = int(fit_sample)
        self.fit_descriptors = int(fit_descriptors)
        self.niter = int(niter)
        self._extractor = LocalFeatureExtractor(method, self.max_keypoints, self.image_side)

    @property
    def max_side(self) -> int:
        return self.image_side

    def fit(self, images) -> "_LocalAggregate":
        from .basis import sample_rows

        # Sample the sources before decoding: fitting on a huge folder loads only fit_sample.
        images = list(images)
        return super().fit([images[i] for i in sample_rows(len(images), self.fit_sample)])

    def local_descriptors(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        """Per image ``(n_i, 128) float32`` local descriptors."""
        return [self._extractor.extract(p).descriptors for p in pixels]

    def _fit_vocabulary(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        """Learn ``centers_`` from a sample of descriptors; return the per-image descriptors."""
        from .basis import sample_rows

        pixels = [pixels[i] for i in sample_rows(len(pixels), self.fit_sample)]
        per_image = self.local_descriptors(pixels)
        pool = np.concatenate(per_image) if per_image else np.zeros((0, 128), np.float32)
        if len(pool) < self.k:
            raise InputError(
                f"{self.name}: k={self.k} needs at least {self.k} local descriptors from the fit "
                f"images, got {len(pool)} from {len(pixels)} images"
            )
        pool = pool[sample_rows(len(pool), self.fit_descriptors, seed=1)]
        self.centers_ = faiss_kmeans(pool, self.k, niter=self.niter)
        return per_image

    def _assign(self, per_image: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All descriptors of the batch, their image index and nearest word, concatenated."""
        counts = np.array([len(d) for d in per_image], dtype=np.int64)
        stacked = np.concatenate(per_image) if counts.sum() else np.zeros((0, 128), np.float32)
        image_index = np.repeat(np.arange(len(per_image)), counts)
        return stacked, image_index, nearest_centers(stacked, self.centers_)

    def _word_counts(self, per_image: list[np.ndarray]) -> np.ndarray:
        """``(n_images, k) float32`` number of descriptors assigned to each word."""
        _, image_index, words = self._assign(per_image)
        flat = np.bincount(image_index * self.k + words, minlength=len(per_image) * self.k)
        return flat.reshape(len(per_image), self.k).astype(np.float32)


@register_descriptor
class BoVWDescriptor(_LocalAggregate):
    """Bag of visual words with tf-idf weighting (Sivic & Zisserman 2003).

    ``fit`` clusters local descriptors sampled from the fit images into ``k`` visual words
    (FAISS k-means, fixed seed) and learns ``idf_[j] = log((1 + N) / (1 + df_j))`` from the
    ``N`` fit images (``df_j``: images containing word ``j``). ``transform`` assigns every
    descriptor to its nearest word, and returns ``tf * idf`` (``tf`` = word count / number
    of descriptors), L2-normalised. An image without keypoints gets the zero vector.

    Args:
        k: vocabulary size (= ``dim``).
        method: ``rootsift`` (default) or ``sift``.
        max_keypoints: keypoints per image.
        image_side: images are shrunk to this longer side before detection.
        fit_sample: at most this many images are used by ``fit``.
        fit_descriptors: at most this many descriptors (random subset) train k-means.
        niter: k-means iterations.

    Output: ``(n, k) float32``; metric ``l2`` on unit rows (ranking = cosine; smaller =
    more similar).
    """

    name = "bovw"

    def __init__(self, k: int = 256, method: str = "rootsift", max_keypoints: int = 500,
                 image_side: int = 640, fit_sample: int = 1000, fit_descriptors: int = 100_000,
                 niter: int = 20):
        self._init_local(k, method, max_keypoints, image_side, fit_sample, fit_descriptors, niter)

    @property
    def dim(self) -> int:
        return self.k

    @property
    def metric(self) -> str:
        return "l2"

    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        per_image = self._fit_vocabulary(pixels)
        document_frequency = (self._word_counts(per_image) > 0).sum(axis=0)
        n = len(per_image)
        self.idf_ = np.log((1.0 + n) / (1.0 + document_frequency)).astype(np.float32)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        counts = self._word_counts(self.local_descriptors(pixels))
        tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        return l2_normalize(tf * self.idf_)


@register_descriptor
class VLADDescriptor(_LocalAggregate):
    """VLAD: vector of locally aggregated descriptors.

    For each of ``k`` centres ``c_j`` (FAISS k-means on sampled local descriptors), sum the
    residuals ``x - c_j`` of the image's descriptors nearest to it; then

    1. intra-normalisation: L2-normalise each centre's 128-d block (stops bursty
       repeated structures from dominating);
    2. power normalisation: signed square root of every component;
    3. global L2 normalisation.

    With ``pca > 0``, ``fit`` also learns a PCA of the fit images' VLAD vectors and the
    output is the projection on the first ``pca`` components, whitened when ``whiten``
    (Jégou & Chum 2012), then L2-normalised again.

    Args:
        k: number of centres; raw dimension ``128 * k``.
        pca: output dimension after PCA (``0``: no PCA). Needs at least ``pca`` fit images.
        whiten: divide PCA coordinates by the square root of their variance.
        method, max_keypoints, image_side, fit_sample, fit_descriptors, niter: as in
            :class:`BoVWDescriptor`.

    Learned state: ``centers_`` ``(k, 128)``; with PCA also ``pca_mean_`` ``(128 k,)``,
    ``pca_components_`` ``(pca, 128 k)``, ``pca_scale_`` ``(pca,)``; float32.

    Output: ``(n, dim) float32`` unit rows; metric ``l2`` (smaller = more similar). An image
    without keypoints gets the zero vector (before PCA).
    """

    name = "vlad"

    def __init__(self, k: int = 64, pca: int = 0, whiten: bool = True, method: str = "rootsift",
                 max_keypoints: int = 500, image_side: int = 640, fit_sample: int = 1000,
                 fit_descriptors: int = 100_000, niter: int = 20):
        self._init_local(k, method, max_keypoints, image_side, fit_sample, fit_descriptors, niter)
        if int(pca) < 0 or int(pca) > 128 * self.k:
            raise ConfigError(f"pca must be in 0..{128 * self.k} (0 = off), got {pca}")
        self.pca = int(pca)
        self.whiten = bool(whiten)

    @property
    def dim(self) -> int:
        return self.pca or 128 * self.k

    @property
    def metric(self) -> str:
        return "l2"

    def raw_vlad(self, per_image: list[np.ndarray]) -> np.ndarray:
        """Normalised VLAD before PCA: per-image descriptors -> ``(n, 128 k) float32``."""
        from scipy import sparse

        stacked, image_index, words = self._assign(per_image)
        n, k = len(per_image), self.k
        rows = image_index * k + words
        # Summing each (image, word) group is one sparse-matrix product over the whole batch.
        membership = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, np.arange(len(rows)))),
            shape=(n * k, len(rows)),
        )
        sums = np.asarray(membership @ stacked, dtype=np.float32).reshape(n, k, -1)
        counts = np.bincount(rows, minlength=n * k).reshape(n, k, 1).astype(np.float32)
        residuals = sums - counts * self.centers_[None]
        norms = np.linalg.norm(residuals, axis=2, keepdims=True)
        residuals = residuals / np.maximum(norms, 1e-12)  # intra-normalisation
        flat = residuals.reshape(n, -1)
        flat = np.sign(flat) * np.sqrt(np.abs(flat))  # power normalisation
        return l2_normalize(flat)

    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        per_image = self._fit_vocabulary(pixels)
        if not self.pca:
            return
        if len(per_image) < self.pca:
            raise InputError(f"vlad: pca={self.pca} needs at least {self.pca} fit images, got {len(per_image)}")
        from sklearn.decomposition import PCA

        vlad = self.raw_vlad(per_image)
        model = PCA(n_components=self.pca, svd_solver="full").fit(vlad)
        self.pca_mean_ = model.mean_.astype(np.float32)
        self.pca_components_ = model.components_.astype(np.float32)
        variance = np.maximum(model.explained_variance_, 1e-12)
        self.pca_scale_ = (1.0 / np.sqrt(variance) if self.whiten else np.ones_like(variance)).astype(np.float32)

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        vlad = self.raw_vlad(self.local_descriptors(pixels))
        if not self.pca:
            return vlad
        return l2_normalize(((vlad - self.pca_mean_) @ self.pca_components_.T) * self.pca_scale_)
