"""The Descriptor contract, spec strings and the registry every family plugs into.

A descriptor maps images to vectors, scikit-learn style:

* the constructor only stores parameters (all keyword, all with defaults);
* learned descriptors implement ``fit(images) -> self`` and keep learned state in
  attributes whose names end in ``_``;
* ``transform(images) -> ndarray (n, dim)``: ``float32``, or ``uint8`` packed bits when
  ``metric == "hamming"``;
* ``dim`` and ``metric`` (``l2``, ``cosine``, ``ip``, ``hamming``) are declared so an
  index built from a descriptor never disagrees with it;
* ``spec`` is a short string that round-trips: ``make_descriptor(d.spec).spec == d.spec``.

Subclasses implement ``_transform_pixels(list of uint8 arrays) -> ndarray`` and declare
``image_mode`` (``"RGB"`` or ``"L"``) and ``max_side`` (how large an image they need, so
loading can decode JPEGs at reduced size; ``draft_side`` when they take any size up to
``max_side`` and only need the decoder to keep this much).

``version`` counts changes of a family's default behaviour that change its vectors; a
collection records the version it was built with and :func:`make_descriptor` rebuilds
that behaviour from :meth:`Descriptor.legacy_params`, so stored vectors and new query
vectors never come from two different recipes.
"""
from __future__ import annotations

import inspect
import io
import json
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from ..errors import ConfigError, ImageLoadError, InputError, NotFittedError
from ..images import ImageSource, load_pixels

METRICS = ("l2", "cosine", "ip", "hamming")
COST_CLASSES = ("cheap", "moderate", "expensive")

_REGISTRY: dict[str, type["Descriptor"]] = {}


def register_descriptor(cls: type["Descriptor"]) -> type["Descriptor"]:
    """Class decorator: make ``cls`` reachable by its ``name`` in spec strings."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_families() -> None:
    # Importing the package registers every built-in family (each module registers itself).
    from . import _families  # noqa: F401


def registered_descriptors() -> dict[str, type["Descriptor"]]:
    """Name -> class of every registered descriptor family."""
    _load_builtin_families()
    return dict(sorted(_REGISTRY.items()))


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:key=value,key=value"`` into the name and raw string parameters.

    Values may not contain commas; a value may contain ``=`` or ``:`` (paths).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty descriptor spec")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(","):
            if not part.strip():
                continue
            key, eq, value = part.partition("=")
            if not eq:
                raise ConfigError(f"spec {spec!r}: parameter {part!r} is not key=value")
            params[key.strip()] = value.strip()
    return name.strip(), params


def _coerce(value: str, default: Any, key: str, spec: str) -> Any:
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if default is None:
            for cast in (int, float):
                try:
                    return cast(value)
                except ValueError:
                    pass
            return None if value.lower() == "none" else value
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) if default else v for v in value.split("x"))
    except ValueError:
        raise ConfigError(
            f"spec {spec!r}: {key}={value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).rstrip("0").rstrip(".") if "." in repr(value) else repr(value)
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def make_descriptor(spec: "str | Descriptor", version: int | None = None) -> "Descriptor":
    """Build a descriptor from its spec string (a descriptor passes through).

    Args:
        version: the family version the vectors were made with (a collection's record);
            an older one gets the parameters that reproduce it (``legacy_params``).

    Raises:
        ConfigError: unknown family (the message lists the valid names), bad parameter,
            or a version newer than this lookalike knows.
    """
    if isinstance(spec, Descriptor):
        return spec
    name, raw = parse_spec(spec)
    families = registered_descriptors()
    if name not in families:
        raise ConfigError(
            f"unknown descriptor {name!r}; valid names: {', '.join(families)}"
        )
    cls = families[name]
    defaults = cls.parameter_defaults()
    params = {}
    for key, value in raw.items():
        if key not in defaults:
            raise ConfigError(
                f"descriptor {name!r} has no parameter {key!r}; valid: {', '.join(defaults) or 'none'}"
            )
        params[key] = _coerce(value, defaults[key], key, spec)
    if version is not None and version != cls.version:
        if version > cls.version:
            raise ConfigError(f"descriptor {name!r} version {version} was made by a newer lookalike "
                              f"(this one has version {cls.version}); upgrade lookalike")
        params = {**cls.legacy_params(version), **params}
    return cls(**params)


class Descriptor:
    """Base class of every descriptor family. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    requires_fit: ClassVar[bool] = False
    cost: ClassVar[str] = "cheap"
    #: Pixel format the family wants: "RGB" -> (H, W, 3), "L" -> (H, W); uint8.
    image_mode: ClassVar[str] = "RGB"
    #: Bumped when the family's default behaviour changes its vectors (see legacy_params).
    version: ClassVar[int] = 1

    @classmethod
    def legacy_params(cls, version: int) -> dict[str, Any]:
        """Parameters that reproduce the vectors of an older ``version`` of the family."""
        return {}

    # -- parameters -------------------------------------------------------------------
    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        """Constructor parameters and their defaults (every parameter has one)."""
        sig = inspect.signature(cls.__init__)
        return {p.name: p.default for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def get_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.parameter_defaults()}

    @property
    def spec(self) -> str:
        """Canonical spec string: the name plus every parameter that differs from its default."""
        defaults = self.parameter_defaults()
        parts = [
            f"{key}={_format_value(value)}"
            for key, value in self.get_params().items()
            if value != defaults[key]
        ]
        return self.name + (":" + ",".join(parts) if parts else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- declared shape ---------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Output dimension (for hashes: number of bits)."""
        raise NotImplementedError

    @property
    def metric(self) -> str:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.metric == "hamming" else np.dtype(np.float32)

    @property
    def code_size(self) -> int:
        """Width of one stored row: ``dim`` floats, or ``dim / 8`` bytes for hashes."""
        return self.dim // 8 if self.metric == "hamming" else self.dim

    @property
    def max_side(self) -> int | None:
        """Longest image side the family needs (lets JPEG decode at reduced size)."""
        return None

    @property
    def draft_side(self) -> int | None:
        """Side the JPEG decoder must keep (defaults to ``max_side``). A family that
        describes any image up to ``max_side`` as well asks for less: JPEGs then decode
        at a smaller scale and most need no resizing at all."""
        return self.max_side

    # -- fitting ----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return not self.requires_fit or bool(self.learned_state())

    def fit(self, images: Iterable[ImageSource]) -> "Descriptor":
        if not self.requires_fit:
            return self
        pixels = self.load_batch(images)
        if not pixels:
            raise InputError(f"{self.name}: fit needs at least one readable image")
        self._fit_pixels(pixels)
        return self

    def _fit_pixels(self, pixels: list[np.ndarray]) -> None:
        raise NotImplementedError

    def learned_state(self) -> dict[str, Any]:
        """Attributes ending in ``_`` (numpy arrays or JSON-able values)."""
        return {
            k: v for k, v in vars(self).items()
            if k.endswith("_") and not k.startswith("_") and v is not None
        }

    def save_state(self) -> bytes:
        """Serialise the learned state (``.npz`` bytes); empty for unfitted/stateless."""
        arrays, extras = {}, {}
        for key, value in self.learned_state().items():
            if isinstance(value, np.ndarray):
                arrays[key] = value
            else:
                extras[key] = value
        buffer = io.BytesIO()
        np.savez(buffer, __json__=np.frombuffer(json.dumps(extras).encode(), dtype=np.uint8), **arrays)
        return buffer.getvalue()

    def load_state(self, blob: bytes) -> "Descriptor":
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            for key in data.files:
                if key == "__json__":
                    for k, v in json.loads(bytes(data[key]).decode() or "{}").items():
                        setattr(self, k, v)
                else:
                    setattr(self, key, data[key])
        self._after_load_state()
        return self

    def _after_load_state(self) -> None:
        """Hook for families that derive caches from their learned state."""

    # -- transform --------------------------------------------------------------------
    def load(self, image: ImageSource) -> np.ndarray:
        """One source (path, bytes, array, PIL image) in this family's pixel format and
        size: the one place that says how a descriptor reads an image.

        Raises:
            ImageLoadError: the source cannot be read or decoded.
        """
        return load_pixels(image, mode=self.image_mode, max_side=self.max_side, draft_side=self.draft_side)

    def load_batch(self, images: Iterable[ImageSource]) -> list[np.ndarray]:
        """Load sources (paths, bytes, arrays, PIL images) in this family's pixel format."""
        return [self.load(image) for image in images]

    def transform(self, images: "Sequence[ImageSource] | ImageSource") -> np.ndarray:
        """Describe images.

        Args:
            images: a sequence of paths / bytes / arrays / PIL images (a single source is
                accepted too).

        Returns:
            ``(n, code_size)`` array: ``float32`` (``uint8`` packed bits for hashes).

        Raises:
            ImageLoadError: a source cannot be read (names the file).
            NotFittedError: a learned descriptor was not fitted.
        """
        if isinstance(images, (str, bytes, np.ndarray)) or hasattr(images, "__fspath__") or hasattr(images, "getpixel"):
            if not (isinstance(images, np.ndarray) and images.ndim == 4):
                images = [images]
        pixels = self.load_batch(images)
        return self.transform_pixels(pixels)

    def transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Describe already-decoded images (uint8, in ``image_mode``)."""
        if self.requires_fit and not self.is_fitted:
            raise NotFittedError(f"descriptor {self.spec!r} must be fitted before transform")
        if len(pixels) == 0:
            return np.zeros((0, self.code_size), dtype=self.dtype)
        for i, p in enumerate(pixels):
            if not isinstance(p, np.ndarray) or p.dtype != np.uint8:
                raise InputError(f"image {i}: expected a uint8 array, got {type(p).__name__}")
        out = np.ascontiguousarray(self._transform_pixels(pixels), dtype=self.dtype)
        if out.shape != (len(pixels), self.code_size):
            raise AssertionError(f"{self.spec}: produced {out.shape}, expected {(len(pixels), self.code_size)}")
        return out

    def _transform_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def tags(self, pixels: list[np.ndarray]) -> list[dict[str, Any]] | None:
        """Optional per-image metadata the family can add (e.g. ImageNet class tags)."""
        return None


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of ``(n, dim)`` float arrays."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)
