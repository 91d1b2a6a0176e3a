"""The extraction pipeline: files -> (file facts, vectors per descriptor), in batches,
optionally across worker processes. It knows nothing about storage; the collection
consumes what it yields and commits each batch.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .descriptors.base import Descriptor, make_descriptor
from .errors import ImageLoadError, LookalikeError
from .images import adapt_pixels, load_image

HASH_CHUNK = 1 << 20


def content_hash(data: bytes) -> str:
    """Hex BLAKE2b-128 of file bytes: identifies exact byte duplicates."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class FileResult:
    """What extraction learned about one file.

    ``vectors`` maps descriptor key -> 1-D row (float32, or uint8 packed bits); it is
    empty when ``error`` is set or when ``unchanged`` (same content hash as before).
    """

    path: str
    size: int = 0
    mtime: float = 0.0
    content_hash: str = ""
    width: int = 0
    height: int = 0
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    unchanged: bool = False


@dataclass
class Job:
    """One file to process; ``known_hash`` lets a touched-but-identical file skip decoding."""

    path: str
    known_hash: str | None = None
    keys: tuple[str, ...] | None = None  # descriptors to compute (None: all)


class Extractor:
    """Describes files with a fixed set of descriptors (keys -> Descriptor)."""

    def __init__(self, descriptors: dict[str, Descriptor]):
        self.descriptors = descriptors

    def _decode_side(self, keys: Sequence[str]) -> int | None:
        sides = [self.descriptors[k].max_side for k in keys]
        return None if any(s is None for s in sides) else max(sides)

    def run_batch(self, jobs: Sequence[Job]) -> list[FileResult]:
        results: list[FileResult] = []
        ready: list[tuple[FileResult, np.ndarray, tuple[str, ...]]] = []
        for job in jobs:
            result = FileResult(path=job.path)
            results.append(result)
            try:
                stat = os.stat(job.path)
                result.size, result.mtime = stat.st_size, stat.st_mtime
                with open(job.path, "rb") as fh:
                    data = fh.read()
                result.content_hash = content_hash(data)
                keys = job.keys or tuple(self.descriptors)
                if job.known_hash is not None and job.known_hash == result.content_hash and job.keys is None:
                    result.unchanged = True
                    continue
                loaded = load_image(data if data else job.path, mode="RGB",
                                    max_side=self._decode_side(keys))
                result.width, result.height = loaded.width, loaded.height
                ready.append((result, loaded.pixels, keys))
            except ImageLoadError as exc:
                result.error = exc.reason
            except OSError as exc:
                result.error = f"cannot read: {exc.strerror or exc}"
        # Describe per descriptor over the whole batch: families vectorise across images.
        for key, descriptor in self.descriptors.items():
            batch = [(r, p) for r, p, keys in ready if key in keys and r.error is None]
            if not batch:
                continue
            pixels = [adapt_pixels(p, descriptor.image_mode, descriptor.max_side) for _, p in batch]
            try:
                vectors = descriptor.transform_pixels(pixels)
                tags = descriptor.tags(pixels)
            except LookalikeError as exc:
                # A batch-level failure: retry one by one so one bad image cannot sink the rest.
                vectors, tags = None, None
                for (r, _), px in zip(batch, pixels):
                    try:
                        r.vectors[key] = descriptor.transform_pixels([px])[0]
                    except LookalikeError as one:
                        r.error = f"{key}: {one}"
                del exc
            if vectors is not None:
                for i, (r, _) in enumerate(batch):
                    r.vectors[key] = vectors[i]
                    if tags:
                        r.metadata.update(tags[i])
        for r, _, keys in ready:
            if r.error is not None:
                r.vectors.clear()
        return results


# -- worker processes -----------------------------------------------------------------
_WORKER: Extractor | None = None


def _init_worker(specs: dict[str, str], states: dict[str, bytes], threads: int) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:
        pass
    descriptors = {}
    for key, spec in specs.items():
        d = make_descriptor(spec)
        if states.get(key):
            d.load_state(states[key])
        descriptors[key] = d
    _WORKER = Extractor(descriptors)


def _run_in_worker(jobs: Sequence[Job]) -> list[FileResult]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run_batch(jobs)


def _worker_context():
    """A forkserver: a clean, single-threaded process (safe beside FAISS/OpenMP/torch in
    this one, like spawn) that imports the heavy modules once, so every later pool in this
    process starts its workers by a cheap fork instead of a fresh interpreter (~1 s)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "PIL.Image", "lookalike.extraction", "lookalike.descriptors._families"])
    return ctx


def extract(
    jobs: Sequence[Job],
    descriptors: dict[str, Descriptor],
    workers: int = 1,
    batch_size: int = 64,
) -> Iterator[list[FileResult]]:
    """Yield results batch by batch (in completion order when ``workers > 1``).

    Workers are separate processes forked from a clean forkserver (safe beside
    FAISS/OpenMP/torch in the parent), each building its own descriptors from spec +
    learned state once.
    Closing the generator early cancels pending batches.
    """
    batches = [list(jobs[i:i + batch_size]) for i in range(0, len(jobs), batch_size)]
    if workers <= 1 or len(batches) <= 1:
        extractor = Extractor(descriptors)
        for batch in batches:
            yield extractor.run_batch(batch)
        return
    specs = {k: d.spec for k, d in descriptors.items()}
    states = {k: d.save_state() for k, d in descriptors.items() if d.learned_state()}
    ctx = _worker_context()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(specs, states, 1))
    pending: set[Future] = set()
    queue = iter(batches)
    try:
        for batch in queue:
            pending.add(pool.submit(_run_in_worker, batch))
            if len(pending) >= workers * 2:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_run_in_worker, nxt))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
