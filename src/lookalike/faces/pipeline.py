"""The face pipeline: detect -> 5-point landmarks -> aligned chip -> 128-d descriptor.

One :class:`FacePipeline` holds the settings; dlib models load on first use and are
dropped when the object is pickled, so it can be sent to worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError, ImageLoadError
from ..images import ImageSource, _source_name, load_pixels
from .align import FaceAligner
from .detect import FaceDetector
from .embed import FaceEmbedder

SELECT_POLICIES = ("largest", "center", "best")
#: Fallback steps that place a box instead of detecting; only last in a chain.
BOX_STEPS = ("whole", "center")
FALLBACK_STEPS = ("u<N>", "cnn", "whole", "center")
#: The no-face chain measured best on LFW (HOG upsample 1 finds no face in 57 of the
#: 7,701 View 2 images): HOG again at upsample 2, then dlib's CNN detector, then the
#: centre box. Opt-in, for pre-cropped faces.
LFW_FALLBACK = "u2+cnn+center"
#: Same/different distance cut for unit-length descriptors (``normalize=True``): the
#: best-accuracy threshold on LFW View 1 pairsDevTest was 0.422 (mirror) / 0.426.
NORMALIZED_THRESHOLD = 0.42


def parse_fallback(fallback: str) -> tuple[str, ...]:
    """Split a fallback chain such as ``"u2+cnn+center"`` into validated steps.

    Steps, tried in order until one yields a face: ``u<N>`` (the HOG detector again at
    upsample ``N``), ``cnn`` (dlib's MMOD CNN detector, no upsampling; about 1 s per
    250x250 image on a CPU), ``whole`` (the whole image as the box) and ``center``
    (a centred square). ``"none"`` (or ``""``) is the empty chain. ``whole``/``center``
    always yield a face, so they can only come last.
    """
    text = (fallback or "none").strip().lower()
    if text == "none":
        return ()
    steps = tuple(t.strip() for t in text.split("+"))
    for i, step in enumerate(steps):
        ok = step == "cnn" or step in BOX_STEPS or (step.startswith("u") and step[1:].isdigit())
        if not ok:
            raise ConfigError(f"unknown no-face fallback step {step!r} in {fallback!r}; valid: none, "
                              f"or steps joined by '+': {', '.join(FALLBACK_STEPS)} (e.g. {LFW_FALLBACK!r})")
        if step in BOX_STEPS and i != len(steps) - 1:
            raise ConfigError(f"fallback {fallback!r}: {step!r} always yields a box, so it must be the last step")
    return steps


@dataclass
class Face:
    """One face in one image.

    Attributes:
        box: ``(left, top, right, bottom)`` pixels (dlib's inclusive rectangle).
        score: detector score (larger = surer); ``nan`` for a fallback box.
        landmarks: ``float32`` ``(5, 2)`` (or ``(68, 2)`` with ``landmarks=68``) ``(x, y)`` points.
        descriptor: ``float32`` ``(128,)``, or ``None`` before embedding. Euclidean
            distance between descriptors: smaller = more alike.
        chip: the aligned ``uint8`` ``(150, 150, 3)`` chip when asked for, else ``None``.
        origin: ``"detector"``, ``"fallback:whole"`` or ``"fallback:center"``.
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray
    descriptor: Optional[np.ndarray] = None
    chip: Optional[np.ndarray] = field(default=None, repr=False)
    origin: str = "detector"

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left + 1) * max(0, bottom - top + 1)

    @property
    def center(self) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return ((left + right) / 2.0, (top + bottom) / 2.0)


@dataclass(frozen=True)
class FaceNotFound:
    """The report for an image in which no face was found (never a silent skip).

    Attributes:
        source: printable name of the image.
        reason: why, e.g. ``"no face detected (hog, upsample=1)"``.
        image_size: ``(width, height)`` of the image searched.
    """

    source: str
    reason: str
    image_size: tuple[int, int] = (0, 0)


FaceResult = Union[Face, FaceNotFound, ImageLoadError]


def select_face(faces: Sequence[Face], image_size: tuple[int, int], policy: str) -> Face:
    """Pick one face for single-face tasks.

    Args:
        faces: non-empty list of faces.
        image_size: ``(width, height)``.
        policy: ``"largest"`` box area, ``"center"`` box centre nearest the image centre
            (right for pre-cropped sets such as LFW, where the labelled person is
            centred), ``"best"`` highest detector score.
    """
    if policy not in SELECT_POLICIES:
        raise ConfigError(f"unknown face selection {policy!r}; valid: {', '.join(SELECT_POLICIES)}")
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    if policy == "best":
        return max(faces, key=lambda f: f.score)
    cx, cy = (image_size[0] - 1) / 2.0, (image_size[1] - 1) / 2.0
    return min(faces, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2)


class FacePipeline:
    """Detect, align and embed faces.

    Args:
        upsample, min_score, model: passed to :class:`FaceDetector`.
        fallback: what to do when the detector finds nothing. ``"none"`` reports
            :class:`FaceNotFound`; ``"whole"`` treats the whole image as the face box,
            ``"center"`` a centred square of ``center_fraction`` of the shorter side;
            either way the landmark predictor then runs inside that box and the chip is
            aligned as usual. A chain such as ``"u2+cnn+center"`` (:data:`LFW_FALLBACK`,
            see :func:`parse_fallback`) first retries detection (HOG at upsample 2,
            then the CNN detector) and takes the centre box only when both fail. Opt in
            only for pre-cropped faces (LFW, ID photos).
        center_fraction: side of the ``"center"`` fallback box relative to the shorter
            image side (0.45 matches the detector's boxes on LFW's 250x250 crops).
        chip_size, padding, landmarks: passed to :class:`FaceAligner` (``landmarks`` 5, the
            default, or 68: align the chip on dlib's 68-point landmarks in the same box).
        num_jitters, mirror, batch_size, normalize: passed to :class:`FaceEmbedder`.
        select: default policy of :meth:`embed_one` (``"center"``, ``"largest"``, ``"best"``).
        keep_chips: keep the aligned chip in each :class:`Face`.
    """

    def __init__(
        self,
        upsample: int = 1,
        min_score: float = 0.0,
        model: str = "hog",
        fallback: str = "none",
        center_fraction: float = 0.45,
        chip_size: int = 150,
        padding: float = 0.25,
        num_jitters: int = 0,
        mirror: bool = False,
        batch_size: int = 16,
        select: str = "center",
        keep_chips: bool = False,
        normalize: bool = False,
        landmarks: int = 5,
    ):
        self._fallback_steps = parse_fallback(fallback)
        if select not in SELECT_POLICIES:
            raise ConfigError(f"unknown face selection {select!r}; valid: {', '.join(SELECT_POLICIES)}")
        if not 0.0 < center_fraction <= 1.0:
            raise ConfigError(f"center_fraction must be in (0, 1], not {center_fraction}")
        self.detector = FaceDetector(upsample=upsample, min_score=min_score, model=model)
        self.aligner = FaceAligner(chip_size=chip_size, padding=padding, landmarks=landmarks)
        self.embedder = FaceEmbedder(num_jitters=num_jitters, mirror=mirror, batch_size=batch_size,
                                     normalize=normalize)
        self.fallback = "+".join(self._fallback_steps) or "none"
        self._fallback_detectors: dict = {}
        self.center_fraction = float(center_fraction)
        self.select = select
        self.keep_chips = bool(keep_chips)

    def settings(self) -> dict:
        """The constructor arguments that define the descriptors (JSON-able);
        ``FacePipeline(**p.settings())`` rebuilds an equivalent pipeline."""
        d, a, e = self.detector, self.aligner, self.embedder
        return {"upsample": d.upsample, "min_score": d.min_score, "model": d.model, "fallback": self.fallback,
                "center_fraction": self.center_fraction, "chip_size": a.chip_size, "padding": a.padding,
                "num_jitters": e.num_jitters, "mirror": e.mirror, "select": self.select,
                "normalize": e.normalize,
                # only when not the default, so manifests written before the option stay equal
                **({"landmarks": a.num_landmarks} if a.num_landmarks != 5 else {})}

    @property
    def default_threshold(self) -> float:
        """The uncalibrated same/different distance cut for these descriptors: dlib's 0.6,
        or :data:`NORMALIZED_THRESHOLD` for unit-length ones (calibrate for real use)."""
        from .verify import DEFAULT_THRESHOLD

        return NORMALIZED_THRESHOLD if self.embedder.normalize else DEFAULT_THRESHOLD

    def __repr__(self) -> str:
        d, a, e = self.detector, self.aligner, self.embedder
        return (
            f"FacePipeline(model={d.model!r}, upsample={d.upsample}, min_score={d.min_score}, "
            f"fallback={self.fallback!r}, padding={a.padding}, num_jitters={e.num_jitters}, "
            f"mirror={e.mirror}, normalize={e.normalize}, select={self.select!r}, landmarks={a.num_landmarks})"
        )

    # -- stages -----------------------------------------------------------------------

    @staticmethod
    def load(image: ImageSource) -> np.ndarray:
        """RGB ``uint8`` ``(H, W, 3)`` pixels (gray is expanded, EXIF orientation applied)."""
        return load_pixels(image, mode="RGB")

    def fallback_box(self, width: int, height: int, kind: Optional[str] = None) -> tuple[int, int, int, int]:
        """The box assumed to hold the face when the detector finds none
        (``kind``: ``"whole"`` or ``"center"``; default: the chain's last step)."""
        kind = kind or (self._fallback_steps[-1] if self._fallback_steps else "center")
        if kind == "whole":
            return (0, 0, width - 1, height - 1)
        side = self.center_fraction * min(width, height)
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        half = side / 2.0
        return (int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))

    def locate(self, pixels: np.ndarray) -> list[Face]:
        """Detect and landmark every face (no descriptors yet); apply the fallback.

        Returns:
            Faces in descending detector score; when the detector found none, those of
            the first fallback step that yields any (``origin`` names the step); else
            an empty list.
        """
        # Always the RGB array: dlib's HOG on one gray channel is ~25% faster but finds
        # slightly different boxes even in gray images (R == G == B).
        faces = [Face(d.box, d.score, self.aligner.landmarks(pixels, d.box)) for d in self.detector.detect(pixels)]
        for step in self._fallback_steps:  # only while nothing has been found
            if faces:
                break
            if step in BOX_STEPS:
                height, width = pixels.shape[:2]
                box = self.fallback_box(width, height, kind=step)
                faces = [Face(box, float("nan"), self.aligner.landmarks(pixels, box), origin=f"fallback:{step}")]
            else:
                faces = [Face(d.box, d.score, self.aligner.landmarks(pixels, d.box), origin=f"fallback:{step}")
                         for d in self._fallback_detector(step).detect(pixels)]
        return faces

    def _no_face_reason(self) -> str:
        d = self.detector
        tried = f", fallback {self.fallback}" if self._fallback_steps else ""
        return f"no face detected ({d.model}, upsample={d.upsample}{tried})"

    def _fallback_detector(self, step: str) -> FaceDetector:
        if step not in self._fallback_detectors:
            if step == "cnn":
                self._fallback_detectors[step] = FaceDetector(model="cnn", upsample=0)
            else:
                self._fallback_detectors[step] = FaceDetector(upsample=int(step[1:]), min_score=self.detector.min_score)
        return self._fallback_detectors[step]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fallback_detectors"] = {}  # dlib objects do not pickle; rebuilt lazily
        return state

    def describe(self, pixels: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """Fill ``descriptor`` (and ``chip`` if kept) of located faces, in one batch."""
        chips = [self.aligner.chip(pixels, f.box, f.landmarks) for f in faces]
        vectors = self.embedder.embed(chips)
        for face, chip, vector in zip(faces, chips, vectors):
            face.descriptor = vector
            face.chip = chip if self.keep_chips else None
        return list(faces)

    # -- single images ----------------------------------------------------------------

    def faces(self, image: ImageSource) -> list[Face]:
        """Every face in one image, embedded.

        Args:
            image: path, bytes, PIL image or ``uint8`` array.

        Returns:
            Faces in descending detector score (empty when none was found and
            ``fallback="none"``; :meth:`embed_one` turns that into a
            :class:`FaceNotFound` report).

        Raises:
            ImageLoadError: the image cannot be read.
        """
        pixels = self.load(image)
        return self.describe(pixels, self.locate(pixels))

    def embed_one(self, image: ImageSource, select: Optional[str] = None) -> Union[Face, FaceNotFound]:
        """The one face a single-face task needs (only that face is embedded).

        Args:
            image: path, bytes, PIL image or ``uint8`` array.
            select: ``"center"``, ``"largest"`` or ``"best"``; default: the pipeline's.

        Returns:
            The selected :class:`Face`, or :class:`FaceNotFound` naming the image.

        Raises:
            ImageLoadError: the image cannot be read.
        """
        pixels = self.load(image)
        height, width = pixels.shape[:2]
        faces = self.locate(pixels)
        if not faces:
            return FaceNotFound(
                _source_name(image), self._no_face_reason(), (width, height)
            )
        chosen = select_face(faces, (width, height), select or self.select)
        return self.describe(pixels, [chosen])[0]

    # -- batches ----------------------------------------------------------------------

    def faces_many(self, images: Iterable[ImageSource]) -> list[Union[list[Face], ImageLoadError]]:
        """:meth:`faces` for each image; an unreadable image yields its error, in place."""
        out: list[Union[list[Face], ImageLoadError]] = []
        for image in images:
            try:
                out.append(self.faces(image))
            except ImageLoadError as exc:
                out.append(exc)
        return out

    def embed_many(self, images: Iterable[ImageSource], select: Optional[str] = None,
                   workers: int = 1, chunk_size: int = 8) -> list[FaceResult]:
        """:meth:`embed_one` for each image, in order; failures are reported in place.

        Chips of several images are embedded in shared batches (cheaper per chip).

        Args:
            images: paths, bytes, PIL images or arrays.
            select: face selection policy (default: the pipeline's).
            workers: processes; above 1, chunks of ``chunk_size`` images go to a pool of
                forked workers, each with its own copy of the models (about 2x the
                images/s on 2 free cores). Results keep the input order.

        Returns:
            Per image a :class:`Face`, a :class:`FaceNotFound`, or the
            :class:`~lookalike.errors.ImageLoadError` that stopped it.
        """
        images = list(images)
        if workers > 1 and len(images) > chunk_size:
            return self._embed_parallel(images, select, int(workers), max(1, int(chunk_size)))
        return self._embed_serial(images, select)

    def _embed_parallel(self, images: list, select: Optional[str], workers: int, chunk_size: int) -> list[FaceResult]:
        import multiprocessing as mp

        chunks = [images[i : i + chunk_size] for i in range(0, len(images), chunk_size)]
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(min(workers, len(chunks)), initializer=_pool_init, initargs=(self, select))
        try:
            parts = pool.map(_pool_embed, chunks, chunksize=1)
            pool.close()  # workers exit on their own (no SIGTERM to their inherited handlers)
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
        return [result for part in parts for result in part]

    def _embed_serial(self, images: Iterable[ImageSource], select: Optional[str]) -> list[FaceResult]:
        results: list[FaceResult] = []
        pending: list[tuple[int, np.ndarray]] = []  # (result slot, chip)
        for image in images:
            try:
                pixels = self.load(image)
            except ImageLoadError as exc:
                results.append(exc)
                continue
            height, width = pixels.shape[:2]
            faces = self.locate(pixels)
            if not faces:
                results.append(FaceNotFound(
                    _source_name(image), self._no_face_reason(), (width, height)
                ))
                continue
            chosen = select_face(faces, (width, height), select or self.select)
            pending.append((len(results), self.aligner.chip(pixels, chosen.box, chosen.landmarks)))
            results.append(chosen)
        vectors = self.embedder.embed([chip for _, chip in pending])
        for (slot, chip), vector in zip(pending, vectors):
            results[slot].descriptor = vector
            results[slot].chip = chip if self.keep_chips else None
        return results

    def descriptors(self, images: Sequence[ImageSource], select: Optional[str] = None) -> tuple[np.ndarray, list[FaceResult]]:
        """One descriptor row per image, for verification and indexing.

        Returns:
            ``(vectors, results)``: ``float32`` ``(n, 128)`` with ``nan`` rows where
            ``results[i]`` is not a :class:`Face`; and the per-image results.
        """
        results = self.embed_many(images, select=select)
        vectors = np.full((len(results), 128), np.nan, dtype=np.float32)
        for i, result in enumerate(results):
            if isinstance(result, Face):
                vectors[i] = result.descriptor
        return vectors, results


# -- worker processes of FacePipeline.embed_many(workers=N) ------------------------------

_POOL: dict = {}


def _pool_init(pipeline: FacePipeline, select: Optional[str]) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, if it set one
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _POOL["pipe"], _POOL["select"] = pipeline, select


def _pool_embed(chunk: list) -> list[FaceResult]:
    return _POOL["pipe"]._embed_serial(chunk, _POOL["select"])
