"""Template matching: where does this patch appear in that image?

Slides the template over the image and scores every position with normalised
cross-correlation (OpenCV ``matchTemplate``). Optionally repeats the search over a range
of template scales, for a patch whose size in the image is not known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..images import ImageSource, load_pixels

#: name -> (OpenCV constant name, larger_is_better)
TEMPLATE_METHODS = {
    "ccoeff_normed": ("TM_CCOEFF_NORMED", True),   # zero-mean NCC: robust to brightness offset
    "ccorr_normed": ("TM_CCORR_NORMED", True),     # NCC without mean removal
    "sqdiff_normed": ("TM_SQDIFF_NORMED", False),  # normalised squared difference
}


@dataclass(frozen=True)
class TemplateMatch:
    """Best placement of a template in an image.

    Attributes:
        x, y: top-left corner of the box in image pixels.
        width, height: box size in image pixels (the template size times ``scale``).
        score: similarity, larger = better: the NCC value in ``[-1, 1]`` for the
            ``*_normed`` correlation methods, ``1 - normalised squared difference`` for
            ``sqdiff_normed``.
        scale: template scale that gave the best score.
    """

    x: int
    y: int
    width: int
    height: int
    score: float
    scale: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)``."""
        return (self.x, self.y, self.width, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.width / 2.0, self.y + self.height / 2.0)


def scale_range(min_scale: float = 0.5, max_scale: float = 2.0, steps: int = 16) -> np.ndarray:
    """``steps`` template scales evenly spaced in log-scale between the two bounds."""
    if not 0 < min_scale <= max_scale or steps < 1:
        raise ConfigError(f"need 0 < min_scale <= max_scale and steps >= 1, got {min_scale}, {max_scale}, {steps}")
    return np.geomspace(min_scale, max_scale, int(steps))


def match_template(image: ImageSource, template: ImageSource, method: str = "ccoeff_normed",
                   scales: Sequence[float] | None = None, color: bool = False) -> TemplateMatch:
    """Find the best location of ``template`` inside ``image``.

    Args:
        image: the image searched (path, bytes, array, PIL image).
        template: the patch looked for.
        method: ``ccoeff_normed`` (default), ``ccorr_normed`` or ``sqdiff_normed``.
        scales: template scale factors to try (e.g. :func:`scale_range`); ``None`` = only
            ``1.0``. Scales at which the template would not fit the image (or would shrink
            below 4 pixels) are skipped.
        color: match on RGB instead of gray.

    Returns:
        The best :class:`TemplateMatch` over all positions and scales.

    Raises:
        ConfigError: unknown method.
        InputError: the template is larger than the image at every scale tried.
        ImageLoadError: an input cannot be decoded.
    """
    import cv2

    if method not in TEMPLATE_METHODS:
        raise ConfigError(f"unknown template method {method!r}; valid: {', '.join(TEMPLATE_METHODS)}")
    constant, larger_is_better = TEMPLATE_METHODS[method]
    mode = "RGB" if color else "L"
    haystack = load_pixels(image, mode=mode)
    needle = load_pixels(template, mode=mode)
    height, width = haystack.shape[:2]
    best: TemplateMatch | None = None
    for scale in (1.0,) if scales is None else scales:
        scale = float(scale)
        th, tw = round(needle.shape[0] * scale), round(needle.shape[1] * scale)
        if th < 4 or tw < 4 or th > height or tw > width:
            continue
        resized = needle if (th, tw) == needle.shape[:2] else cv2.resize(
            needle, (tw, th), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        response = cv2.matchTemplate(haystack, resized, getattr(cv2, constant))
        # A flat (constant) window makes NCC 0/0; OpenCV may return inf/nan there.
        response = np.nan_to_num(response, nan=-1.0 if larger_is_better else 1.0,
                                 posinf=-1.0 if larger_is_better else 1.0, neginf=-1.0)
        lo, hi, lo_at, hi_at = cv2.minMaxLoc(response)
        score, (x, y) = (hi, hi_at) if larger_is_better else (1.0 - lo, lo_at)
        if best is None or score > best.score:
            best = TemplateMatch(int(x), int(y), int(tw), int(th), float(score), scale)
    if best is None:
        raise InputError(
            f"template {needle.shape[1]}x{needle.shape[0]} does not fit the image {width}x{height} "
            "at any scale tried"
        )
    return best
