"""Descriptor families: image -> vector. See :mod:`lookalike.descriptors.base`."""
from .base import (
    Descriptor,
    l2_normalize,
    make_descriptor,
    parse_spec,
    register_descriptor,
    registered_descriptors,
)

__all__ = [
    "Descriptor",
    "l2_normalize",
    "make_descriptor",
    "parse_spec",
    "register_descriptor",
    "registered_descriptors",
]
