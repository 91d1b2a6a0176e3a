"""Pictures of learned bases: mean image + eigen-images, NMF parts, k-means centres.

Like the classic scikit-learn "Faces dataset decompositions" figure (Olivetti faces):
each fitted basis descriptor (:mod:`lookalike.descriptors.basis`) is drawn as a grid
of small images, one panel per descriptor.

Regenerate the documentation figure::

    python -m lookalike.evaluation.components_figure \\
        ../shared/data/orl_faces/full_92x112 docs/img/orl_components.png
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, NotFittedError

PANEL_TITLES = {
    "pca": "PCA: mean and eigen-images (eigenfaces)",
    "nmf": "NMF: non-negative parts",
    "kmeans": "k-means: cluster centres",
}


def _display(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """Image plus imshow keywords: signed bases centred on grey, the rest min-max scaled."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:  # colour: imshow needs [0, 1]
        lo, hi = float(image.min()), float(image.max())
        return (image - lo) / max(hi - lo, 1e-12), {}
    if image.min() < 0:
        # Eigen-images have a sign: grey = 0, as in the scikit-learn figure.
        vmax = float(np.abs(image).max()) or 1.0
        return image, {"cmap": "gray", "vmin": -vmax, "vmax": vmax}
    return image, {"cmap": "gray", "vmin": float(image.min()), "vmax": float(image.max())}


def draw_components(descriptor, path: "str | os.PathLike", n: int = 12, columns: int = 6,
                    dpi: int = 110) -> Path:
    """Draw the learned components of one or several fitted basis descriptors.

    Args:
        descriptor: a fitted :class:`~lookalike.descriptors.basis.PCABasis`,
            ``NMFBasis`` or ``KMeansBasis`` (anything with ``components_as_images(n)``),
            or a sequence of them (one panel each, stacked vertically).
        path: PNG file to write (parent folders are created).
        n: images per panel (PCA: the mean plus ``n - 1`` eigen-images).
        columns: images per row.
        dpi: resolution of the saved figure.

    Returns:
        The path written.

    Raises:
        NotFittedError: a descriptor has not been fitted.
        InputError: an object cannot show its components.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    descriptors: Sequence = descriptor if isinstance(descriptor, (list, tuple)) else [descriptor]
    panels = []
    for d in descriptors:
        if not hasattr(d, "components_as_images"):
            raise InputError(f"{d!r} has no learned components to draw")
        if not d.is_fitted:
            raise NotFittedError(f"descriptor {d.spec!r} must be fitted before drawing")
        panels.append((PANEL_TITLES.get(d.name, d.spec) + f"  [{d.spec}]", d.components_as_images(n)))

    rows_per_panel = [math.ceil(len(images) / columns) for _, images in panels]
    height, width = panels[0][1][0][1].shape[:2]
    cell = 1.5  # inches per small image
    fig = plt.figure(figsize=(columns * cell, sum(r * cell * height / width + 0.5 for r in rows_per_panel)))
    subfigs = fig.subfigures(len(panels), 1, height_ratios=rows_per_panel, squeeze=False)[:, 0]
    for subfig, (title, images), rows in zip(subfigs, panels, rows_per_panel):
        subfig.suptitle(title, fontsize=10)
        axes = subfig.subplots(rows, columns, squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        for ax, (label, image) in zip(axes.ravel(), images):
            shown, kwargs = _display(image)
            ax.imshow(shown, interpolation="nearest", **kwargs)
            ax.set_title(label, fontsize=7)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def draw_orl_components(orl_dir: "str | os.PathLike", path: "str | os.PathLike",
                        n: int = 12) -> Path:
    """Fit PCA, NMF and k-means bases on ORL faces and draw them in three panels.

    Args:
        orl_dir: ``orl_faces/full_92x112`` (``sN/K.pgm``).
        path: PNG to write.
        n: images per panel.
    """
    from ..descriptors.basis import KMeansBasis, NMFBasis, PCABasis
    from ..images import iter_image_files

    files = iter_image_files(orl_dir)
    if not files:
        raise InputError(f"{orl_dir}: no images found")
    size = (46, 56)  # half of 92x112: keeps the faces' aspect ratio
    bases = [PCABasis(size=size, components=40), NMFBasis(size=size, components=40),
             KMeansBasis(size=size, k=40)]
    for basis in bases:
        basis.fit(files)
    return draw_components(bases, path, n=n)


if __name__ == "__main__":  # pragma: no cover - documentation figure
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m lookalike.evaluation.components_figure ORL_DIR OUT.png")
    print(draw_orl_components(sys.argv[1], sys.argv[2]))
