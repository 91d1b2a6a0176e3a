"""User-supplied models: an ``.onnx`` file, a TorchScript ``.pt`` file, or a folder.

A folder (as the training command writes it) holds ``model.onnx`` and/or ``model.pt``
plus ``preprocess.json``::

    {"size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dim": 128}

``mean``/``std`` are in 0..1 pixel units (the ImageNet convention): the network input
is ``(pixel / 255 - mean) / std``, RGB, NCHW float32. The model takes
``(N, 3, size, size)`` and returns either embeddings ``(N, dim)`` or a feature map
``(N, C, H, W)`` that the descriptor pools.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript", ".ts")
PREPROCESS_FILE = "preprocess.json"


@dataclass(frozen=True)
class UserModelFiles:
    """What a user model path resolved to.

    Attributes:
        onnx: the ONNX file, if any.
        torchscript: the TorchScript file, if any.
        preprocess: parsed ``preprocess.json`` (empty when absent).
    """

    onnx: Path | None
    torchscript: Path | None
    preprocess: dict[str, Any] = field(default_factory=dict)


def looks_like_path(model: str) -> bool:
    """True when ``model`` names a file or folder rather than a built-in model."""
    return any(ch in model for ch in "/\\") or model.lower().endswith(
        ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES) or Path(model).expanduser().exists()


def _read_preprocess(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read preprocessing settings ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object with size/mean/std/dim")
    for key in ("mean", "std"):
        if key in data and (not isinstance(data[key], list) or len(data[key]) not in (1, 3)):
            raise ConfigError(f"{path}: {key!r} must be a list of 1 or 3 numbers")
    for key in ("size", "dim"):
        if key in data and (not isinstance(data[key], int) or data[key] <= 0):
            raise ConfigError(f"{path}: {key!r} must be a positive integer")
    return data


def resolve_user_model(model: str) -> UserModelFiles:
    """Find the model file(s) and preprocessing settings behind a user path.

    Raises:
        ConfigError: the path does not exist, has an unknown suffix, or the folder holds
            no ``model.onnx`` / ``model.pt``.
    """
    path = Path(model).expanduser()
    if not path.exists():
        raise ConfigError(f"model {model!r} is neither a built-in model nor an existing path")
    if path.is_dir():
        onnx = path / "model.onnx"
        script = next((path / f"model{s}" for s in TORCHSCRIPT_SUFFIXES
                       if (path / f"model{s}").is_file()), None)
        preprocess_file = path / PREPROCESS_FILE
        preprocess = _read_preprocess(preprocess_file) if preprocess_file.is_file() else {}
        if not onnx.is_file() and script is None:
            raise ConfigError(f"model folder {model!r} holds neither model.onnx nor model.pt")
        return UserModelFiles(onnx if onnx.is_file() else None, script, preprocess)
    suffix = path.suffix.lower()
    sidecar = path.parent / PREPROCESS_FILE
    preprocess = _read_preprocess(sidecar) if sidecar.is_file() else {}
    if suffix in ONNX_SUFFIXES:
        return UserModelFiles(path, None, preprocess)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return UserModelFiles(None, path, preprocess)
    raise ConfigError(
        f"model file {model!r}: unknown type; use .onnx or a TorchScript "
        f"{'/'.join(TORCHSCRIPT_SUFFIXES)} file, or a folder with model.onnx + preprocess.json"
    )
