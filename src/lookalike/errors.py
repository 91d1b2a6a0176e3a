"""One exception tree for everything lookalike raises on purpose."""
from __future__ import annotations


class LookalikeError(Exception):
    """Root of every error lookalike raises deliberately."""


class InputError(LookalikeError, ValueError):
    """Bad user data: the message names the file or field and the reason."""


class ImageLoadError(InputError):
    """An image could not be decoded or is not acceptable.

    Attributes:
        path: the file (or "<bytes>", "<array>") that failed.
        reason: a short human explanation.
    """

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep picklable across worker processes
        return (type(self), (self.path, self.reason))


class ConfigError(LookalikeError, ValueError):
    """A bad spec string or option; the message lists the valid names."""


class NotFittedError(LookalikeError, RuntimeError):
    """A learned descriptor or index was used before fit/train."""


class CollectionError(LookalikeError, RuntimeError):
    """A collection is corrupt, locked by another writer, or of an unknown version."""


class MissingDependencyError(LookalikeError, ImportError):
    """An optional dependency is absent; the message says which extra to install."""

    def __init__(self, package: str, extra: str):
        self.package = package
        self.extra = extra
        super().__init__(
            f"this feature needs the '{package}' package: pip install 'lookalike[{extra}]'"
        )

    def __reduce__(self):
        return (type(self), (self.package, self.extra))
