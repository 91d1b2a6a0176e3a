"""Metric learning: losses, miners and P x K samplers (the building blocks of a trainer).

Importing this package does not import torch: the names below are loaded on first
access (``from lookalike.training import ArcFaceLoss`` imports ``losses`` then).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "losses": (
        "ContrastiveLoss", "NTXentLoss", "TripletMarginLoss", "QuadrupletLoss",
        "MultiSimilarityLoss", "SupConLoss", "ProxyNCALoss", "SoftmaxLoss", "CenterLoss",
        "NormalizedSoftmaxLoss", "SphereFaceLoss", "CosFaceLoss", "ArcFaceLoss",
        "CombinedMarginLoss", "LOSSES", "make_loss", "loss_needs_num_classes",
        "loss_parameters",
    ),
    "miners": (
        "RandomMiner", "SemiHardMiner", "HardMiner", "BatchHardMiner", "PairMarginMiner",
        "pairwise_distances",
    ),
    "samplers": ("PKSampler",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
