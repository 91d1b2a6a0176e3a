"""Backbones and the embedding head of trainable descriptors.

A trained descriptor is ``backbone -> head``:

* a **backbone** maps ``(N, 3, S, S) float32`` normalised images to ``(N, F)`` features:
  :class:`Lite0Backbone` (EfficientNet-Lite0 with its shipped ImageNet weights, GeM
  pooled and L2-normalised -- exactly the ``cnn`` descriptor's default vector, so a
  frozen backbone's features can be taken from that descriptor's cached ONNX graph) or
  :class:`SmallCNN` (four conv blocks trained from scratch, for tiny images such as
  32x32 CIFAR);
* the **head** (:class:`EmbeddingHead`) maps features to a ``dim``-wide embedding:
  optional hidden layers (linear, batch norm, ReLU), then linear + batch norm. Losses
  get this raw output (SphereFace and the plain softmax use the norm); search uses it
  L2-normalised (:meth:`EmbeddingModel.embed`), so the cosine distance ``1 - <a, b>``
  (smaller = closer) is the metric of the exported model.

Each backbone states its own input normalisation (``mean``/``std`` in 0..1 units, the
``preprocess.json`` convention of :mod:`lookalike.models.user_model`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.efficientnet import BUILTIN_MODELS, LITE_MEAN_255, LITE_STD_255

BACKBONES = ("efficientnet-lite0", "small-cnn")
#: GeM exponent of the Lite0 backbone (the ``cnn`` descriptor's default).
LITE0_GEM_P = 3.0


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone expects and gives.

    Attributes:
        name: ``efficientnet-lite0`` or ``small-cnn``.
        features: width ``F`` of its ``(N, F)`` output.
        default_size: usual input side in pixels.
        mean, std: per-channel input normalisation in 0..1 units
            (``x = (pixel / 255 - mean) / std``).
    """

    name: str
    features: int
    default_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def backbone_info(name: str) -> BackboneInfo:
    """Facts about a backbone by name (no weights loaded).

    Raises:
        ConfigError: unknown name.
    """
    if name == "efficientnet-lite0":
        return BackboneInfo(name, BUILTIN_MODELS[name][1], BUILTIN_MODELS[name][0],
                            tuple(m / 255.0 for m in LITE_MEAN_255),
                            tuple(s / 255.0 for s in LITE_STD_255))
    if name == "small-cnn":
        return BackboneInfo(name, SmallCNN.FEATURES, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    raise ConfigError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


class Lite0Backbone(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights) -> GeM pooling (p=3) -> L2 normalisation.

    ``(N, 3, side, side)`` float32 (``(pixel - 127) / 128``) -> ``(N, 1280)`` unit rows,
    equal (to float precision) to ``cnn:model=efficientnet-lite0,size=side``.

    The network is kept in eval mode even while training (:meth:`train` is overridden):
    batch-norm statistics stay the ImageNet ones and drop-connect stays off, which is
    what small CPU batches need and keeps training deterministic.

    Args:
        side: input side (the network's static "same" padding is built for it).
        trainable_blocks: how many of the 16 MBConv blocks, counted from the top, are
            fine-tuned (with the final 1x1 conv); ``0`` freezes the whole backbone,
            ``-1`` trains every block and the stem.
        pretrained: load the shipped ImageNet weights (tests may skip that).
    """

    def __init__(self, side: int, trainable_blocks: int = 0, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        from ..models.efficientnet import _lite0_state_dict, make_pooling_module

        self.side = int(side)
        net = EfficientNet.from_name("efficientnet-lite0", image_size=self.side)
        if pretrained:
            net.load_state_dict(_lite0_state_dict(), strict=True)
        # The ImageNet classifier is not part of the descriptor.
        del net._fc, net._dropout, net._avg_pooling
        self.net = net
        self.pooling = make_pooling_module("gem", LITE0_GEM_P)
        self.trainable_blocks = int(trainable_blocks)
        self._set_trainable(self.trainable_blocks)
        super().train(False)

    def _set_trainable(self, blocks: int) -> None:
        for p in self.parameters():
            p.requires_grad_(blocks < 0)
        if blocks > 0:
            for block in list(self.net._blocks)[-blocks:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        if blocks != 0:
            for module in (self.net._conv_head, self.net._bn1):
                for p in module.parameters():
                    p.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        return self.trainable_blocks == 0

    def train(self, mode: bool = True) -> "Lite0Backbone":
        # Always eval: see the class docstring.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        for block in net._blocks:
            x = block(x, drop_connect_rate=None)
        x = net._swish(net._bn1(net._conv_head(x)))
        return F.normalize(self.pooling(x), dim=1)


class SmallCNN(nn.Module):
    """A small CNN for tiny images, trained from scratch.

    Four blocks of (3x3 conv, batch norm, ReLU) x 2, the first three followed by 2x2 max
    pooling; channels 32-64-128-256; global average pooling. ``(N, 3, S, S)`` ->
    ``(N, 256)``; any ``S >= 8`` works (designed for 32).
    """

    FEATURES = 256

    def __init__(self, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.out_features = channels

    frozen = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


class EmbeddingHead(nn.Module):
    """Features ``(N, F)`` -> embeddings ``(N, dim)`` (not normalised).

    ``hidden`` layers of (linear, batch norm, ReLU), then linear + batch norm (the
    "BNNeck": it centres and scales each dimension so cosine geometry is well used).

    Args:
        in_features: ``F``.
        dim: embedding size.
        hidden: widths of the hidden layers (``()`` = a single linear layer).
    """

    def __init__(self, in_features: int, dim: int, hidden: tuple[int, ...] = ()):
        super().__init__()
        if int(dim) < 1 or int(in_features) < 1 or any(int(h) < 1 for h in hidden):
            raise ConfigError(f"head sizes must be >= 1: in={in_features}, dim={dim}, hidden={hidden}")
        layers: list[nn.Module] = []
        width = int(in_features)
        for h in hidden:
            layers += [nn.Linear(width, int(h), bias=False), nn.BatchNorm1d(int(h)), nn.ReLU(inplace=True)]
            width = int(h)
        layers += [nn.Linear(width, int(dim), bias=False), nn.BatchNorm1d(int(dim))]
        self.layers = nn.Sequential(*layers)
        self.dim = int(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class EmbeddingModel(nn.Module):
    """``backbone -> head``: images to embeddings.

    ``forward`` returns the raw ``(N, dim)`` embedding the losses train on;
    :meth:`embed` the L2-normalised one used for search.
    """

    def __init__(self, backbone: nn.Module, head: EmbeddingHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(images), dim=1)


class NormalizedEmbedder(nn.Module):
    """Eval wrapper exported to ONNX: ``(N, 3, S, S)`` -> unit ``(N, dim)`` embeddings."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


def build_backbone(name: str, image_size: int, frozen: bool = False,
                   trainable_blocks: int = -1, pretrained: bool = True) -> nn.Module:
    """A backbone module by name.

    Args:
        name: ``efficientnet-lite0`` or ``small-cnn``.
        image_size: input side.
        frozen: freeze every backbone weight (Lite0 only: a from-scratch small CNN
            cannot be frozen).
        trainable_blocks: Lite0 blocks to fine-tune when not frozen (``-1`` = all).
        pretrained: load the ImageNet weights (Lite0).

    Raises:
        ConfigError: unknown name, or a frozen small CNN.
    """
    backbone_info(name)  # validates the name
    if name == "efficientnet-lite0":
        if image_size < 32:
            raise ConfigError(f"efficientnet-lite0 needs image_size >= 32, got {image_size}")
        return Lite0Backbone(image_size, 0 if frozen else int(trainable_blocks), pretrained)
    if frozen:
        raise ConfigError("small-cnn is trained from scratch and cannot be frozen")
    return SmallCNN()


def build_model(backbone: str, image_size: int, dim: int, hidden: tuple[int, ...] = (),
                frozen: bool = False, trainable_blocks: int = -1,
                pretrained: bool = True) -> EmbeddingModel:
    """Backbone + embedding head (see :func:`build_backbone` and :class:`EmbeddingHead`)."""
    net = build_backbone(backbone, image_size, frozen, trainable_blocks, pretrained)
    return EmbeddingModel(net, EmbeddingHead(backbone_info(backbone).features, dim, tuple(hidden)))
