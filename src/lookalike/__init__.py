"""lookalike: find images that look like a given one, and prove how well.

Public names only, imported on first use (PEP 562): ``import lookalike.errors`` (the
CLI's start, a worker process's) does not pay for the collection, SQLite, numpy or
Pillow. Importing this must not import torch or faiss.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "AddReport": "collection", "Collection": "collection", "Hit": "collection",
    "QueryResult": "collection", "open_collection": "collection",
    "Descriptor": "descriptors", "make_descriptor": "descriptors", "registered_descriptors": "descriptors",
    "CollectionError": "errors", "ConfigError": "errors", "ImageLoadError": "errors", "InputError": "errors",
    "LookalikeError": "errors", "MissingDependencyError": "errors", "NotFittedError": "errors",
    "load_image": "images",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the names as plain imports
    from .collection import AddReport, Collection, Hit, QueryResult, open_collection  # noqa: F401
    from .descriptors import Descriptor, make_descriptor, registered_descriptors  # noqa: F401
    from .errors import (  # noqa: F401
        CollectionError,
        ConfigError,
        ImageLoadError,
        InputError,
        LookalikeError,
        MissingDependencyError,
        NotFittedError,
    )
    from .images import load_image  # noqa: F401
