"""Neural network backbones that run offline, their ONNX cache and inference runners.

* :mod:`.efficientnet` -- EfficientNet-Lite0 with shipped ImageNet weights + pooling heads;
* :mod:`.onnx_cache` -- one-time ONNX export cached on disk, onnxruntime sessions;
* :mod:`.runners` -- ``run(batch) -> outputs`` over onnxruntime / torch / TorchScript;
* :mod:`.user_model` -- resolving a user's ``.onnx`` / ``.pt`` file or model folder;
* :mod:`.imagenet_classes` -- the 1000 ImageNet class names for tags.

Nothing here imports torch or onnxruntime at module import time.
"""
from .efficientnet import BUILTIN_MODELS, POOLINGS
from .imagenet_classes import IMAGENET_CLASSES

__all__ = ["BUILTIN_MODELS", "IMAGENET_CLASSES", "POOLINGS"]
