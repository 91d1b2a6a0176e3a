"""HTTP API and web page: a thin FastAPI shell over :class:`lookalike.collection.Collection`.

Needs the ``server`` extra (``pip install 'lookalike[server]'``: fastapi, uvicorn,
python-multipart). Importing :mod:`lookalike` never imports this package.

Example:
    >>> from lookalike.server import create_app
    >>> app = create_app("photos.lk")          # then: uvicorn.run(app, port=8000)
"""
from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any):
    """Build the FastAPI app; see :func:`lookalike.server.app.create_app`."""
    try:
        from .app import create_app as _create_app
    except ModuleNotFoundError as exc:
        if exc.name in ("fastapi", "starlette", "multipart", "python_multipart"):
            from ..errors import MissingDependencyError

            raise MissingDependencyError(exc.name, "server") from None
        raise
    return _create_app(*args, **kwargs)
