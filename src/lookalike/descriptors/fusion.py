"""Fusion as a descriptor of its own: weighted concatenation of several descriptors.

(Late fusion of several stored descriptors at search time lives in
:mod:`lookalike.fusion`, because it needs a collection.)
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..images import adapt_pixels
from .base import Descriptor, make_descriptor, register_descriptor

#: Inside ``parts``, specs are separated by ``|`` and an inner spec's own commas are
#: written as ``&`` (the outer spec string already uses commas).
PART_SEPARATOR = "|"


@register_descriptor
class ConcatDescriptor(Descriptor):
    """Concatenation of float descriptors, each block L2-normalised then weighted.

    Spec: ``concat:parts=color:space=lab&bins=8|lbp,weights=1|0.5``. With unit blocks,
    the squared L2 distance of the concatenation is the weighted sum of the blocks'
    squared distances, so ``weights`` set how much each descriptor counts.
    Metric ``l2``; smaller = closer. Hash (hamming) parts are not allowed.
    """

    name = "concat"
    cost = "moderate"

    def __init__(self, parts: str = "color|colormoments", weights: str = ""):
        self.parts = parts
        self.weights = weights
        self._parts = [make_descriptor(p.replace("&", ",")) for p in parts.split(PART_SEPARATOR) if p]
        if len(self._parts) < 2:
            raise ConfigError("concat needs at least two parts, e.g. parts=color|lbp")
        for part in self._parts:
            if part.metric == "hamming":
                raise ConfigError(f"concat cannot mix in the binary descriptor {part.spec!r}")
        try:
            self._weights = ([float(w) for w in weights.split(PART_SEPARATOR)] if weights
                             else [1.0] * len(self._parts))
        except ValueError:
            raise ConfigError(f"concat weights must be numbers separated by '|', got {weights!r}") from None
        if len(self._weights) != len(self._parts):
            raise ConfigError(f"concat has {len(self._parts)} parts but {len(self._weights)} weights")

    @property
    def requires_fit(self) -> bool:  # type: ignore[override]
        return any(p.requires_fit for p in self._parts)

    @property
    def is_fitted(self) -> bool:
        return all(p.is_fitted for p in self._parts)

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self._parts)

    @property
    def metric(self) -> str:
        return "l2"

    @property
    def max_side(self):
        sides = [p.max_side for p in self._parts]
        return None if any(s is None for s in sides) else max(sides)

    @property
    def draft_side(self):
        sides = [p.draft_side for p in self._parts]
        return None if any(s is None for s in sides) else max(sides)

    def _fit_pixels(self, pixels):
        for part in self._parts:
            if part.requires_fit:
                part._fit_pixels([_as_mode(p, part) for p in pixels])

    def learned_state(self):
        state = {}
        for i, part in enumerate(self._parts):
            for key, value in part.learned_state().items():
                state[f"part{i}__{key}"] = value
        return state

    def load_state(self, blob: bytes):
        super().load_state(blob)
        for key in [k for k in vars(self) if k.startswith("part") and "__" in k]:
            index, attribute = key[4:].split("__", 1)
            setattr(self._parts[int(index)], attribute, getattr(self, key))
            delattr(self, key)
        for part in self._parts:
            part._after_load_state()
        return self

    def _transform_pixels(self, pixels):
        blocks = []
        for part, weight in zip(self._parts, self._weights):
            x = part.transform_pixels([_as_mode(p, part) for p in pixels]).astype(np.float32)
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            blocks.append(np.sqrt(weight) * x)
        return np.concatenate(blocks, axis=1)

    def tags(self, pixels):
        for part in self._parts:
            tags = part.tags([_as_mode(p, part) for p in pixels])
            if tags:
                return tags
        return None


def _as_mode(pixels: np.ndarray, part: Descriptor) -> np.ndarray:
    return adapt_pixels(pixels, part.image_mode, part.max_side)
