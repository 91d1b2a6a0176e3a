"""Imports every built-in descriptor family so each registers itself.

A family module must not import heavy libraries (torch, cv2, onnxruntime) at import
time, so listing it here costs nothing until it is used.
"""
import importlib

FAMILY_MODULES = (
    "color",
    "spectral",
    "texture",
    "basis",
    "hashing",
    "cnn",
    "local",
    "fusion",
)

for _module in FAMILY_MODULES:
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as exc:  # a family not written yet in this checkout
        if exc.name != f"{__package__}.{_module}":
            raise
