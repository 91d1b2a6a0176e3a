"""The main job's default data: real photos that ship inside installed packages.

scikit-image's and scikit-learn's sample photos plus transformed copies of some of
them (resized, flipped, rotated, recompressed, brightened, grayscale), so a search
has real near-duplicates to find without any data folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

#: scikit-image sample photos bundled inside its wheel (others would need a download,
#: which this machine cannot do: skimage even raises pytest's Skipped under pytest).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                  "hubble_deep_field", "camera", "moon", "page", "text", "coins", "horse",
                  "retina", "grass", "gravel", "brick", "cell")


def _sample_photos() -> dict[str, np.ndarray]:
    photos: dict[str, np.ndarray] = {}
    try:
        import skimage.data as data

        for name in SKIMAGE_PHOTOS:
            loader = getattr(data, name, None)
            if loader is None:
                continue
            try:
                image = np.asarray(loader())
            except Exception:  # some samples need a download (pooch): skip those
                continue
            if image.dtype == bool:
                image = image.astype(np.uint8) * 255
            if image.dtype != np.uint8:
                image = (255 * (image - image.min()) / max(1e-9, float(np.ptp(image)))).astype(np.uint8)
            photos[name] = image
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for name, image in zip(("china", "flower"), load_sample_images().images):
            photos[name] = image
    except ImportError:
        pass
    return photos


def write_demo_images(folder: str | Path) -> list[Path]:
    """Write the sample photos and transformed copies into ``folder``; returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    photos = _sample_photos()
    if not photos:
        raise RuntimeError("no sample photos found: install scikit-image or scikit-learn")
    for name, array in photos.items():
        image = Image.fromarray(array)
        path = folder / f"{name}.png"
        image.save(path)
        written.append(path)
    rgb = {n: Image.fromarray(a).convert("RGB") for n, a in photos.items() if n in
           ("astronaut", "chelsea", "coffee", "china", "flower", "rocket")}
    transforms = {
        "half": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
        "flip": ImageOps.mirror,
        "rot5": lambda im: im.rotate(5, resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0)),
        "bright": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
        "gray": lambda im: ImageOps.grayscale(im).convert("RGB"),
    }
    for name, image in rgb.items():
        for tname, transform in transforms.items():
            path = folder / f"{name}_{tname}.jpg"
            transform(image).save(path, quality=60)
            written.append(path)
    return sorted(written)


DEMO_QUERIES = ("chelsea_half.jpg", "astronaut_flip.jpg", "coffee_gray.jpg", "china_rot5.jpg")
