"""lookalike: find images that look like a given one, and prove how well.

Public names only; importing this must not import torch or faiss.
"""
from .collection import AddReport, Collection, Hit, QueryResult, open_collection
from .descriptors import Descriptor, make_descriptor, registered_descriptors
from .errors import (
    CollectionError,
    ConfigError,
    ImageLoadError,
    InputError,
    LookalikeError,
    MissingDependencyError,
    NotFittedError,
)
from .images import load_image

__version__ = "0.1.0"

__all__ = [
    "AddReport", "Collection", "CollectionError", "ConfigError", "Descriptor", "Hit",
    "ImageLoadError", "InputError", "LookalikeError", "MissingDependencyError",
    "NotFittedError", "QueryResult", "load_image", "make_descriptor", "open_collection",
    "registered_descriptors", "__version__",
]
