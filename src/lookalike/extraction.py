"""The extraction pipeline: files -> (file facts, vectors per descriptor), in batches,
optionally across worker processes. It knows nothing about storage; the collection
consumes what it yields and commits each batch.
"""
from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .descriptors.base import Descriptor, make_descriptor
from .errors import ImageLoadError, LookalikeError
from .images import adapt_pixels, draft_scale, jpeg_frame_size, load_image

HASH_CHUNK = 1 << 20
#: Tasks queued per worker process (covers a commit stall of ~0.1 s on small images).
IN_FLIGHT_PER_WORKER = 4
#: Images per worker task when every descriptor is cheap (several batches per task).
CHEAP_TASK_IMAGES = 256


def read_file(path: str) -> tuple[os.stat_result, bytes]:
    """``(stat, bytes)`` of a file through plain OS calls (a third of what ``open()``'s
    buffered file object costs per small file); read to the end like ``fh.read()``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        stat = os.fstat(fd)
        parts = [os.read(fd, stat.st_size + 1)]
        while parts[-1]:
            parts.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    return stat, parts[0] if len(parts) == 2 else b"".join(parts)


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


@dataclass
class BatchResult:
    """What extraction learned about one batch of files, in columns (row ``i`` is the
    batch's ``i``-th file).

    Columns instead of an object per file: a batch crosses the process boundary as a
    few lists and one vectors matrix per descriptor, which is what keeps the parent
    (which also commits to SQLite) from becoming the bottleneck on small images.

    Attributes:
        paths, sizes, mtimes, hashes, widths, heights: per row (``""``/0 where unknown).
        errors: row -> reason, for files that could not be read or described.
        unchanged: rows whose content hash equals the known one (nothing described).
        vectors: descriptor key -> ``(rows (m,) int64, matrix (m, code_size))``; rows
            with an error never appear.
        metadata: row -> metadata the descriptors add (e.g. tags); sparse.
        cpu_seconds: CPU time the batch took where it ran (for throughput breakdowns).
    """

    paths: list[str]
    sizes: list[int]
    mtimes: list[float]
    hashes: list[str]
    widths: list[int]
    heights: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    unchanged: list[int] = field(default_factory=list)
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    metadata: dict[int, dict[str, Any]] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    def results(self) -> list[FileResult]:
        """The same facts as one :class:`FileResult` per file."""
        unchanged = set(self.unchanged)
        out = [FileResult(path=p, size=sz, mtime=mt, content_hash=h, width=w, height=ht,
                          error=self.errors.get(i), unchanged=i in unchanged,
                          metadata=dict(self.metadata.get(i, {})))
               for i, (p, sz, mt, h, w, ht) in enumerate(zip(self.paths, self.sizes, self.mtimes,
                                                              self.hashes, self.widths, self.heights))]
        for key, (rows, matrix) in self.vectors.items():
            for row, vec in zip(rows.tolist(), matrix):
                out[row].vectors[key] = vec
        return out


#: A batch as sent to a worker: paths, known hashes (or None), descriptor keys (or None).
PackedJobs = tuple[list[str], list[Any], list[Any]]


def pack_jobs(jobs: Sequence[Job]) -> PackedJobs:
    """Jobs -> three plain lists (pickles far smaller and faster than dataclasses)."""
    return [j.path for j in jobs], [j.known_hash for j in jobs], [j.keys for j in jobs]


class Extractor:
    """Describes files with a fixed set of descriptors (keys -> Descriptor)."""

    def __init__(self, descriptors: dict[str, Descriptor]):
        self.descriptors = descriptors
        self._all_keys = tuple(descriptors)
        # Gray files stay one channel when every descriptor can take that (cheaper
        # resizing, no colour conversion); adapt_pixels expands them for the others.
        self._keep_gray = all(getattr(d, "accepts_gray", False) or d.image_mode == "L"
                              for d in descriptors.values())
        self._drafts: dict[tuple[str, ...], list[tuple[int | None, tuple[str, ...]]]] = {}

    def _draft_groups(self, keys: Sequence[str]) -> list[tuple[int | None, tuple[str, ...]]]:
        """The descriptors of ``keys`` grouped by the JPEG draft side they ask for."""
        keys = tuple(keys)
        if keys not in self._drafts:
            groups: dict[int | None, list[str]] = {}
            for k in keys:
                groups.setdefault(self.descriptors[k].draft_side, []).append(k)
            self._drafts[keys] = [(draft, tuple(ks)) for draft, ks in groups.items()]
        return self._drafts[keys]

    def _decodes(self, data: bytes, keys: Sequence[str]) -> list[tuple[int | None, tuple[str, ...]]]:
        """One ``(draft_side, keys)`` per decode this file needs. A query image is
        decoded at its descriptor's draft scale, converted to its mode, then resized
        (:func:`load_image`); the stored vector must come from the same pixels, so
        descriptors share a decode only when the file decodes at the same scale for
        them (e.g. every descriptor shares one for a PNG, or for a JPEG too small to be
        reduced), and each then converts and resizes on its own (adapt_pixels)."""
        groups = self._draft_groups(keys)
        if len(groups) == 1:
            return groups
        size = jpeg_frame_size(data)  # None (no reduced decode) for other formats
        by_scale: dict[int, tuple[int | None, list[str]]] = {}
        for draft, group in groups:
            entry = by_scale.setdefault(draft_scale(size, draft), (draft, []))
            entry[1].extend(group)
        return [(draft, tuple(group)) for draft, group in by_scale.values()]

    def run_packed(self, packed: PackedJobs) -> BatchResult:
        """Read, hash, decode and describe one batch of files."""
        started = time.process_time()
        paths, known_hashes, job_keys = packed
        n = len(paths)
        out = BatchResult(paths=list(paths), sizes=[0] * n, mtimes=[0.0] * n, hashes=[""] * n,
                          widths=[0] * n, heights=[0] * n)
        errors = out.errors
        ready: list[tuple[int, np.ndarray, tuple[str, ...]]] = []
        for row, path in enumerate(paths):
            keys = job_keys[row] or self._all_keys
            try:
                # Stat before reading: a file changed after the stat gets a newer mtime on
                # the next run and is re-read, never the other way round.
                stat, data = read_file(path)
                out.sizes[row], out.mtimes[row] = stat.st_size, stat.st_mtime
                digest = content_hash(data)
                out.hashes[row] = digest
                if known_hashes[row] is not None and known_hashes[row] == digest and job_keys[row] is None:
                    out.unchanged.append(row)
                    continue
                for draft_side, group in self._decodes(data, keys):
                    # Full pixels at the draft scale: each descriptor converts and resizes.
                    loaded = load_image(data if data else path, mode="RGB", max_side=None,
                                        keep_gray=self._keep_gray, draft_side=draft_side)
                    ready.append((row, loaded.pixels, group))
                out.widths[row], out.heights[row] = loaded.width, loaded.height
            except ImageLoadError as exc:
                errors[row] = exc.reason
            except OSError as exc:
                errors[row] = f"cannot read: {exc.strerror or exc}"
        # Describe per descriptor over the whole batch: families vectorise across images.
        described: dict[str, tuple[list[int], np.ndarray | list]] = {}
        for key, descriptor in self.descriptors.items():
            batch = [(row, p) for row, p, keys in ready if key in keys]
            if not batch:
                continue
            rows = [row for row, _ in batch]
            mode = descriptor.image_mode
            gray_ok = mode == "L" or getattr(descriptor, "accepts_gray", False)
            pixels = [adapt_pixels(p, "L" if gray_ok and p.ndim == 2 else mode, descriptor.max_side)
                      for _, p in batch]
            try:
                vectors = descriptor.transform_pixels(pixels)
                tags = descriptor.tags(pixels)
            except LookalikeError:
                # A batch-level failure: retry one by one so one bad image cannot sink the rest.
                tags, kept, vecs = None, [], []
                for row, px in zip(rows, pixels):
                    try:
                        vecs.append(descriptor.transform_pixels([px])[0])
                        kept.append(row)
                    except LookalikeError as one:
                        errors[row] = f"{key}: {one}"
                rows = kept
                vectors = np.stack(vecs) if vecs else np.zeros((0, descriptor.code_size), descriptor.dtype)
            if tags:
                for row, tag in zip(rows, tags):
                    if tag:
                        out.metadata.setdefault(row, {}).update(tag)
            described[key] = (rows, vectors)
        # A file that failed any descriptor keeps no vector at all.
        for key, (rows, vectors) in described.items():
            if errors:
                keep = [i for i, row in enumerate(rows) if row not in errors]
                rows, vectors = [rows[i] for i in keep], vectors[keep]
            out.vectors[key] = (np.asarray(rows, dtype=np.int64), np.ascontiguousarray(vectors))
        for row in errors:
            out.metadata.pop(row, None)
        out.cpu_seconds = time.process_time() - started
        return out


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


def _run_in_worker(task: list[PackedJobs]) -> list[BatchResult]:
    assert _WORKER is not None, "worker not initialised"
    return [_WORKER.run_packed(packed) for packed in task]


def _worker_context():
    """A forkserver: a clean, single-threaded process (safe beside FAISS/OpenMP/torch in
    this one, like spawn) that imports the heavy modules once, so every later pool in this
    process starts its workers by a cheap fork instead of a fresh interpreter (~1 s)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    # cv2 too (JPEG decoding, colour conversions): importing it costs each new worker
    # ~0.2 s otherwise. The forkserver imports what it can and skips what is missing.
    ctx.set_forkserver_preload(["numpy", "PIL.Image", "cv2", "lookalike.extraction",
                                "lookalike.descriptors._families"])
    return ctx


def extract(
    jobs: Sequence[Job],
    descriptors: dict[str, Descriptor],
    workers: int = 1,
    batch_size: int = 64,
) -> Iterator[list[FileResult]]:
    """Yield one :class:`FileResult` per file, batch by batch (in completion order when
    ``workers > 1``). See :func:`extract_batches` for the cheaper column form."""
    for batch in extract_batches(jobs, descriptors, workers=workers, batch_size=batch_size):
        yield batch.results()


def extract_batches(
    jobs: Sequence[Job],
    descriptors: dict[str, Descriptor],
    workers: int = 1,
    batch_size: int = 64,
) -> Iterator[BatchResult]:
    """Yield a :class:`BatchResult` per batch (in completion order when ``workers > 1``).

    Workers are separate processes forked from a clean forkserver (safe beside
    FAISS/OpenMP/torch in the parent), each building its own descriptors from spec +
    learned state once.
    Closing the generator early cancels pending batches.
    """
    batches = [pack_jobs(jobs[i:i + batch_size]) for i in range(0, len(jobs), batch_size)]
    if workers <= 1 or len(batches) <= 1:
        extractor = Extractor(descriptors)
        for batch in batches:
            yield extractor.run_packed(batch)
        return
    # Cheap descriptors take ~0.1 ms an image: send several batches per task so the
    # per-task cost of the pool (pickling, pipes, futures, thread wake-ups, all in the
    # parent, which also commits) stays small against the work.
    per_task = 1
    if all(d.cost == "cheap" for d in descriptors.values()):
        per_task = max(1, CHEAP_TASK_IMAGES // batch_size)
    tasks = [batches[i:i + per_task] for i in range(0, len(batches), per_task)]
    specs = {k: d.spec for k, d in descriptors.items()}
    states = {k: d.save_state() for k, d in descriptors.items() if d.learned_state()}
    ctx = _worker_context()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(specs, states, 1))
    pending: set[Future] = set()
    queue = iter(tasks)
    try:
        for task in queue:
            pending.add(pool.submit(_run_in_worker, task))
            # Several batches per worker queued: the pool's own thread keeps feeding the
            # workers while this thread is busy in a SQLite commit (which releases the GIL).
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                nxt = next(queue, None)
                if nxt is not None:  # keep the workers fed before handing a result on
                    pending.add(pool.submit(_run_in_worker, nxt))
                yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
