"""Project-wide defaults, in one place."""
from __future__ import annotations


def default_descriptors() -> list[str]:
    """Descriptors a new collection gets when none are named.

    The CNN (EfficientNet-Lite0, GeM pooling, via onnxruntime) answers "what looks like
    this?"; a 64-bit pHash stored beside it costs 8 bytes per image and serves
    duplicate search. Collections record their own specs in the manifest, so changing
    this never affects existing collections.
    """
    return ["cnn:pool=gem", "phash"]
