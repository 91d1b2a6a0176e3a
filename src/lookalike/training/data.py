"""Training data: labelled images, the split by class, augmentation, batches.

* :func:`load_labelled` reads a labelled folder (class = sub-folder) or a CSV manifest
  (``path,label``) through :mod:`lookalike.evaluation.protocols`;
* :func:`split_by_class` holds out whole classes for validation, so validation
  measures retrieval of classes never seen in training (the honest test of a
  descriptor);
* :func:`decode_images` decodes every image once into memory (``uint8``), reporting
  files that fail instead of stopping;
* :class:`Augmenter`: retrieval-friendly augmentation with PIL/numpy only (random
  resized crop with a mild scale range, horizontal flip, colour jitter);
* :func:`eval_batch` is the evaluation preprocessing, *the same function the* ``cnn``
  *descriptor runs* (centre square crop, OpenCV resize, ``(pixel/255 - mean) / std``),
  so validation scores and the exported descriptor see identical inputs;
* :class:`ImageBatches` / :class:`FeatureBatches` turn index lists into tensors (images
  augmented on the fly, or cached frozen-backbone features).

All randomness comes from ``numpy.random.Generator`` objects the caller derives from
``(seed, epoch, step)``, so a resumed run draws exactly what an uninterrupted one does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ImageLoadError, InputError


# ----------------------------------------------------------------------------- labelled data
@dataclass
class LabelledImages:
    """Image files with class labels.

    Attributes:
        paths: image files, each once.
        labels: ``(N,) int64``, index into ``class_names``.
        class_names: readable name of each label.
    """

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        """The images at ``indices`` (labels keep their meaning)."""
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledImages([self.paths[i] for i in idx], self.labels[idx], self.class_names)


def load_labelled(data: str | Path) -> LabelledImages:
    """Read a labelled folder (class = first-level sub-folder) or a CSV manifest.

    Args:
        data: a folder, or a ``.csv`` with a ``path,label`` header (paths relative to
            the CSV's folder).

    Raises:
        InputError: missing folder/file, images outside a class folder, bad CSV line.
    """
    from ..evaluation.protocols import load_csv_manifest, load_folder

    data = Path(data)
    if data.suffix.lower() == ".csv":
        protocol = load_csv_manifest(data)
    elif data.is_dir():
        protocol = load_folder(data)
    else:
        raise InputError(f"{data}: expected a labelled folder (class = sub-folder) or a CSV manifest")
    return LabelledImages(list(protocol.paths), np.asarray(protocol.labels, dtype=np.int64),
                          list(protocol.label_names))


def split_by_class(labels: np.ndarray, val_fraction: float, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hold out a random fraction of the *classes* for validation.

    Args:
        labels: ``(N,)`` class of each item.
        val_fraction: share of classes held out, in ``[0, 1)``; ``0`` = no validation.
            When positive, at least 2 classes are held out (retrieval needs two) and at
            least 2 stay for training.
        seed: picks the classes.

    Returns:
        ``(train_indices, val_indices, val_classes)``, int64 arrays; the two index
        sets share no class.

    Raises:
        InputError: bad fraction or too few classes.
    """
    labels = np.asarray(labels)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(f"val fraction must be in [0, 1), got {val_fraction}")
    classes = np.unique(labels)
    if float(val_fraction) == 0.0:
        return np.arange(len(labels), dtype=np.int64), np.zeros(0, np.int64), np.zeros(0, classes.dtype)
    n_val = max(2, int(round(val_fraction * len(classes))))
    if len(classes) - n_val < 2:
        raise InputError(f"{len(classes)} classes: too few to hold out {n_val} for validation "
                         "and keep 2 for training (use --val-classes 0)")
    val_classes = np.sort(np.random.default_rng(seed).choice(classes, n_val, replace=False))
    is_val = np.isin(labels, val_classes)
    return (np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64),
            val_classes)


def decode_images(paths: Sequence[Path], max_side: int | None,
                  progress: Callable[[int], None] | None = None
                  ) -> tuple[list[np.ndarray], list[int], list[tuple[str, str]]]:
    """Decode RGB images once.

    Args:
        paths: image files.
        max_side: longer side cap (the ``cnn`` descriptor loads with ``2 * size``).
        progress: called with 1 after each file.

    Returns:
        ``(pixels, kept, failed)``: ``uint8 (H, W, 3)`` arrays of the images that loaded,
        their positions in ``paths``, and ``(path, reason)`` of the others.
    """
    from ..images import load_image

    pixels, kept, failed = [], [], []
    for i, path in enumerate(paths):
        try:
            pixels.append(load_image(path, mode="RGB", max_side=max_side).pixels)
            kept.append(i)
        except ImageLoadError as exc:
            failed.append((str(path), exc.reason if hasattr(exc, "reason") else str(exc)))
        if progress is not None:
            progress(1)
    return pixels, kept, failed


# ----------------------------------------------------------------------------- preprocessing
def eval_batch(pixels: Sequence[np.ndarray], size: int, mean: Sequence[float],
               std: Sequence[float]) -> np.ndarray:
    """The descriptor's preprocessing: centre square, resize, normalise.

    Args:
        pixels: ``uint8 (H, W, 3)`` images.
        size: output side.
        mean, std: per channel, 0..1 units.

    Returns:
        ``(N, 3, size, size) float32``.
    """
    from ..descriptors.cnn import preprocess_batch

    return preprocess_batch(list(pixels), int(size), "crop",
                            tuple(255.0 * float(m) for m in mean),
                            tuple(255.0 * float(s) for s in std))


def normalize_stack(stack: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``uint8 (N, S, S, 3)`` -> ``(N, 3, S, S) float32`` as ``(pixel/255 - mean) / std``."""
    mean255 = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
    std255 = np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0
    x = stack.transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray((x - mean255) / std255)


@dataclass(frozen=True)
class Augmenter:
    """Random resized crop (mild scale), horizontal flip and colour jitter.

    Crop: an area of ``scale`` times the image's centre square and an aspect ratio in
    ``ratio`` (log-uniform), placed uniformly inside the image (clipped to it), resized
    to ``size x size`` with PIL bilinear filtering. Retrieval wants the object kept, so
    the scale range is milder than classification's usual ``(0.08, 1)``.
    Colour: brightness, contrast and saturation factors each uniform in
    ``[1 - jitter, 1 + jitter]``, applied in a random order.

    Args:
        size: output side.
        scale: crop area range, relative to the centre square.
        ratio: crop aspect range (width / height).
        flip: flip left-right with probability 0.5.
        jitter: colour jitter strength (``0`` = off).
    """

    size: int
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.2

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a random crop of an ``height x width`` image."""
        side = min(height, width)
        area = side * side * rng.uniform(*self.scale)
        aspect = float(np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]))))
        w = int(round(min(width, np.sqrt(area * aspect))))
        h = int(round(min(height, np.sqrt(area / aspect))))
        w, h = max(1, w), max(1, h)
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        return left, top, left + w, top + h

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``uint8 (H, W, 3)`` -> augmented ``uint8 (size, size, 3)``."""
        from PIL import Image

        box = self.crop_box(image.shape[0], image.shape[1], rng)
        out = Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR, box=box)
        x = np.asarray(out)
        if self.flip and rng.random() < 0.5:
            x = x[:, ::-1]
        if self.jitter > 0:
            x = color_jitter(x, rng, self.jitter)
        return np.ascontiguousarray(x)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast, saturation jitter (random order) on ``uint8 (H, W, 3)``."""
    x = image.astype(np.float32)
    weights = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as PIL's "L"
    factors = rng.uniform(1 - strength, 1 + strength, size=3)
    for op in rng.permutation(3):
        f = np.float32(factors[op])
        if op == 0:    # brightness
            x = x * f
        elif op == 1:  # contrast: towards the mean gray level
            gray_mean = float((x @ weights).mean())
            x = gray_mean + f * (x - gray_mean)
        else:          # saturation: towards each pixel's gray
            gray = (x @ weights)[..., None]
            x = gray + f * (x - gray)
        x = np.clip(x, 0, 255)
    return np.rint(x).astype(np.uint8)


# ----------------------------------------------------------------------------- batches
class ImageBatches:
    """In-memory images -> training batches (augmented unless ``augment`` is None).

    Args:
        pixels: ``uint8 (H, W, 3)`` images.
        labels: ``(N,) int64`` training labels in ``0..C-1``.
        size: network input side.
        mean, std: normalisation, 0..1 units.
        augment: an :class:`Augmenter`, or ``None`` for the evaluation preprocessing.
    """

    def __init__(self, pixels: list[np.ndarray], labels: np.ndarray, size: int,
                 mean: Sequence[float], std: Sequence[float], augment: Augmenter | None):
        self.pixels, self.labels = pixels, np.asarray(labels, np.int64)
        self.size, self.mean, self.std, self.augment = int(size), tuple(mean), tuple(std), augment

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, indices: Sequence[int], rng: np.random.Generator):
        """``(x (B, 3, S, S) float32 tensor, y (B,) int64 tensor)``."""
        import torch

        chosen = [self.pixels[i] for i in indices]
        if self.augment is None:
            x = eval_batch(chosen, self.size, self.mean, self.std)
        else:
            x = normalize_stack(np.stack([self.augment(p, rng) for p in chosen]), self.mean, self.std)
        return torch.from_numpy(x), torch.from_numpy(self.labels[np.asarray(indices)])


class FeatureBatches:
    """Cached backbone features -> training batches; one random view per item.

    Args:
        features: ``(V, N, F) float32``: ``V`` views (e.g. original and flipped) of
            each of ``N`` items.
        labels: ``(N,) int64`` in ``0..C-1``.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        features = np.asarray(features, np.float32)
        if features.ndim == 2:
            features = features[None]
        if features.ndim != 3 or features.shape[1] != len(labels):
            raise InputError(f"features must be (V, N, F) with N = {len(labels)}, got {features.shape}")
        self.features, self.labels = features, np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return self.features.shape[1]

    def batch(self, indices: Sequence[int], rng: np.random.Generator):
        import torch

        idx = np.asarray(indices, np.int64)
        views = rng.integers(0, self.features.shape[0], len(idx))
        return torch.from_numpy(self.features[views, idx]), torch.from_numpy(self.labels[idx])


def lite0_frozen_features(pixels: Sequence[np.ndarray], size: int, flip_view: bool = True,
                          progress: Callable[[int], None] | None = None, batch: int = 64
                          ) -> np.ndarray:
    """Frozen EfficientNet-Lite0 features, computed once (onnxruntime when installed).

    The features are the ``cnn:model=efficientnet-lite0,size=SIZE`` descriptor's vectors
    (GeM, p=3, L2-normalised), which :class:`~.backbones.Lite0Backbone` reproduces in
    torch; the descriptor's cached ONNX graph makes this several times faster than
    torch eager.

    Args:
        pixels: ``uint8 (H, W, 3)`` images.
        size: network input side.
        flip_view: also describe each image flipped left-right (a second view, the
            cheapest augmentation that survives feature caching).
        progress: called with the number of images done after each chunk.

    Returns:
        ``(V, N, 1280) float32``, ``V = 2`` with ``flip_view`` (original first), else 1.
    """
    from ..descriptors.cnn import CNNDescriptor

    descriptor = CNNDescriptor(model="efficientnet-lite0", size=int(size), pool="gem", p=3.0,
                               resize="crop", batch=batch)
    views = [lambda p: p] + ([lambda p: np.ascontiguousarray(p[:, ::-1])] if flip_view else [])
    out = np.empty((len(views), len(pixels), 1280), np.float32)
    for v, view in enumerate(views):
        for start in range(0, len(pixels), batch):
            chunk = [view(p) for p in pixels[start:start + batch]]
            out[v, start:start + len(chunk)] = descriptor.transform_pixels(chunk)
            if progress is not None:
                progress(len(chunk))
    return out
