"""The on-disk collection: the only stateful object in lookalike.

A collection is one directory::

    manifest.json     format version, descriptor specs, index specs (written atomically)
    items.sqlite      items (id, path, content hash, size, mtime, width, height,
                      metadata JSON, status, error), vectors per descriptor, learned
                      descriptor state, and a generation counter
    indexes/KEY.lkidx one FAISS index per descriptor, derived from the stored vectors
    .lock             advisory lock held by the one writer

SQLite is the source of truth and every batch commits in one transaction, so a crash
(even ``kill -9``) loses at most the batch in flight. Index files are caches tagged with
the generation they reflect; a stale one is brought up to date from the vectors.
"""
from __future__ import annotations

import fcntl
import gc
import json
import os
import random
import re
import sqlite3
import stat as stat_module
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .atomic import atomic_write_text
from .descriptors.base import Descriptor, make_descriptor
from .errors import CollectionError, ConfigError, ImageLoadError, InputError, LookalikeError
from .extraction import BatchResult, Job, extract_batches
from .images import ImageSource, is_image_path, list_image_files

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "items.sqlite"
INDEX_DIR = "indexes"
LOCK_FILE = ".lock"
#: Rebuild an index when this fraction of its entries are tombstones.
REBUILD_TOMBSTONE_FRACTION = 0.25
#: A transaction is committed every COMMIT_ITEMS results or COMMIT_SECONDS, whichever first.
COMMIT_ITEMS = 256
COMMIT_SECONDS = 1.0
#: Committed vectors queued for the in-memory index before they are added in one go.
BACKLOG_ROWS = 50_000
#: SQLite page size of new collections (existing files keep theirs).
PAGE_SIZE = 16384
#: Shard i's item ids start at i << SHARD_ID_BITS (room for 10^12 items per shard).
SHARD_ID_BITS = 40
#: Item rows (path, metadata) kept in memory for search results, at most.
ROW_CACHE_LIMIT = 200_000
ITEM_COLUMNS = ("id", "path", "content_hash", "size", "mtime", "width", "height", "status",
                "error", "added_at")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    content_hash TEXT,
    size INTEGER,
    mtime REAL,
    width INTEGER,
    height INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    error TEXT,
    added_at REAL
);
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash);
CREATE TABLE IF NOT EXISTS vectors (
    descriptor TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (descriptor, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_generation ON vectors(descriptor, generation);
CREATE TABLE IF NOT EXISTS descriptor_state (descriptor TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(slots=True)
class Hit:
    """One search result: item id, path, distance (smaller = closer), metadata."""

    id: int
    path: str
    distance: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "distance": self.distance, "metadata": self.metadata}


@dataclass(slots=True)
class QueryResult:
    """The hits of one query, nearest first."""

    query: str
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "results": [h.to_dict() for h in self.hits]}


@dataclass
class AddReport:
    """What ``Collection.add`` did. ``failed`` lists (path, reason)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    #: CPU seconds spent reading, decoding and describing (summed over worker processes).
    describe_cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "seconds": round(self.seconds, 3), "interrupted": self.interrupted}


# -- metadata filters -------------------------------------------------------------------
_FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|=|>|<|~)\s*([^<>=!~\s].*?)\s*$")
_KEY_ALIASES = {"tag": "tags"}


def _filter_value(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def compile_filter(where: str | Sequence[str] | None) -> tuple[str, list[Any]]:
    """Metadata filter -> SQL ``WHERE`` clause over ``items``.

    Conditions are ``key OP value`` with OP in ``= != > < >= <= ~`` (``~`` is a glob,
    e.g. ``path~*.png``), joined by ``and`` / ``&`` or given as a list. Keys are item
    columns (``width``, ``height``, ``size``, ``path``...) or metadata keys; ``=`` on a
    metadata list (e.g. ``tag=cat`` against ``{"tags": [...]}``) means membership.
    """
    if where is None:
        return "1", []
    parts = [where] if isinstance(where, str) else list(where)
    conditions: list[str] = []
    for part in parts:
        conditions += [c for c in re.split(r"\s+and\s+|\s*&\s*", part, flags=re.I) if c.strip()]
    clauses, args = [], []
    for cond in conditions:
        match = _FILTER_RE.match(cond)
        if not match:
            raise InputError(f"filter {cond!r}: expected key OP value, OP one of = != > < >= <= ~")
        key, op, raw = match.groups()
        value = _filter_value(raw)
        key = _KEY_ALIASES.get(key, key)
        if key in ITEM_COLUMNS:
            column = key
        else:
            if not re.fullmatch(r"[\w.\-]+", key):
                raise InputError(f"filter {cond!r}: bad metadata key")
            if op in ("=", "!="):
                exists = f"EXISTS (SELECT 1 FROM json_each(items.metadata, '$.\"{key}\"') WHERE value = ?)"
                clauses.append(exists if op == "=" else f"NOT {exists}")
                args.append(value)
                continue
            column = f"json_extract(items.metadata, '$.\"{key}\"')"
        if op == "~":
            clauses.append(f"{column} GLOB ?")
            args.append(str(value))
        else:
            clauses.append(f"{column} {op} ?")
            args.append(value)
    return " AND ".join(clauses) or "1", args


# -- locking ----------------------------------------------------------------------------
@contextmanager
def writer_lock(directory: Path, timeout: float):
    """Exclusive advisory lock on the collection; waits up to ``timeout`` seconds."""
    path = directory / LOCK_FILE
    fh = open(path, "a+")
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise CollectionError(
                    f"collection {directory} is locked by another writer ({holder}); "
                    "wait for it to finish or pass a longer lock timeout") from None
            time.sleep(0.1)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.seek(0)
        fh.truncate()
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _real_folder(folder: str, cache: dict[str, str]) -> str:
    """``os.path.realpath(folder)`` through a cache of its parents: one lstat per new
    folder instead of one per component of its path (LFW has 5,749 folders)."""
    got = cache.get(folder)
    if got is None:
        parent, name = os.path.split(folder)
        if not parent or parent == folder or name in ("", ".", "..") or os.path.islink(folder):
            got = os.path.realpath(folder or ".")
        else:
            got = os.path.join(_real_folder(parent, cache), name)
        cache[folder] = got
    return got


def resolve_paths(paths: Iterable[str | os.PathLike], folders: dict[str, str] | None = None) -> list[str]:
    """``Path.resolve()`` of many files as strings, resolving each folder once: the same
    answer (a symlinked file still resolves to its target) at one lstat per file."""
    folders = {} if folders is None else folders
    return [resolve_file(path, folders, os.path.islink(path)) for path in map(os.fspath, paths)]


def resolve_file(path: str, folders: dict[str, str], is_link: bool) -> str:
    """One file's resolved path: its folder through the cache, its name kept (a link,
    or a name that is not a plain entry, goes through ``realpath``)."""
    folder, name = os.path.split(path)
    if is_link or name in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(_real_folder(folder, folders), name)


def path_shard(path: str | os.PathLike, n_shards: int) -> int:
    """Stable shard number of a path (BLAKE2b of its text, not Python's salted hash)."""
    import hashlib

    if n_shards < 1:
        raise InputError(f"number of shards must be >= 1, got {n_shards}")
    digest = hashlib.blake2b(str(path).encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


class Collection:
    """A searchable collection of images on disk. Use :meth:`create` or :meth:`open`.

    Example:
        >>> coll = Collection.create("photos.lookalike", descriptors=["color:space=hsv"])
        >>> coll.add("photos/")
        >>> coll.search("query.jpg", k=5)[0].hits
    """

    def __init__(self, directory: Path, manifest: dict, lock_timeout: float = 60.0):
        self.directory = directory
        self.manifest = manifest
        self.lock_timeout = lock_timeout
        self._generation_seen: tuple[int, int] | None = None  # (data_version, generation)
        self._db = self._connect()
        self._descriptors: dict[str, Descriptor] = {}
        self._indexes: dict[str, Any] = {}  # key -> (index, generation it reflects)
        self._saved_generation: dict[str, int] = {}  # key -> generation of its index file
        # key -> committed changes not yet applied to the cached index (removed ids,
        # ids, matrices, row count): the cached index plus its backlog is current.
        self._backlog: dict[str, tuple[list, list, list]] = {}  # key -> (removed, ids, matrices)
        self._row_cache: dict[int, tuple[str, str]] = {}
        self._row_cache_generation: int | None = None
        self._scales: dict[str, tuple[float, int]] = {}  # fusion scale per descriptor, with its generation

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str | os.PathLike, descriptors: Sequence[str] = ("color",),
               index: str = "auto", exist_ok: bool = False, lock_timeout: float = 60.0) -> "Collection":
        """Create a new collection directory.

        Args:
            descriptors: spec strings; each gets a key (its family name, numbered on repeats).
            index: index spec used for every descriptor (``auto`` picks by size).
        """
        directory = Path(directory)
        if (directory / MANIFEST).exists():
            if not exist_ok:
                raise CollectionError(f"{directory} already holds a collection")
            return cls.open(directory, lock_timeout=lock_timeout)
        if directory.exists() and any(directory.iterdir()):
            raise CollectionError(f"{directory} exists and is not an empty directory or a collection")
        if not descriptors:
            raise ConfigError("a collection needs at least one descriptor")
        from .index.base import parse_index_spec

        parse_index_spec(index)
        entries: dict[str, dict] = {}
        for spec in descriptors:
            d = make_descriptor(spec)
            key = d.name
            n = 2
            while key in entries:
                key, n = f"{d.name}{n}", n + 1
            entries[key] = {"spec": d.spec, "version": d.version, "dim": d.dim, "metric": d.metric,
                            "requires_fit": d.requires_fit, "index": index}
        manifest = {"format_version": FORMAT_VERSION, "created": time.time(),
                    "default_descriptor": next(iter(entries)), "descriptors": entries}
        directory.mkdir(parents=True, exist_ok=True)
        (directory / INDEX_DIR).mkdir(exist_ok=True)
        atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2))
        return cls(directory, manifest, lock_timeout)

    @classmethod
    def open(cls, directory: str | os.PathLike, lock_timeout: float = 60.0) -> "Collection":
        """Open an existing collection (readers never need the lock)."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.exists():
            raise CollectionError(f"{directory} is not a lookalike collection (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as exc:
            raise CollectionError(f"{path}: manifest is corrupt ({exc})") from None
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise CollectionError(f"{path}: collection format {version} is not supported "
                                  f"(this lookalike reads {FORMAT_VERSION})")
        return cls(directory, manifest, lock_timeout)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.directory / DATABASE, timeout=60.0, isolation_level=None)
        # 16 KiB pages (only takes effect on a new, empty file): a vector row of a few KB
        # then fits inside its b-tree page instead of spilling to an overflow page, which
        # made 4 KiB-page databases 3x larger and commits ~3x slower.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA wal_autocheckpoint={(32 << 20) // page}")  # ~32 MB between checkpoints
        db.executescript(SCHEMA)
        try:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        except sqlite3.DatabaseError as exc:
            raise CollectionError(f"{self.directory / DATABASE}: {exc}") from None
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- descriptors ------------------------------------------------------------------
    @property
    def descriptor_keys(self) -> list[str]:
        return list(self.manifest["descriptors"])

    def descriptor(self, key: str | None = None) -> Descriptor:
        """The (fitted, when it learns) descriptor stored under ``key``."""
        key = self._key(key)
        if key not in self._descriptors:
            d = self._build_descriptor(key)
            row = self._db.execute("SELECT state FROM descriptor_state WHERE descriptor=?", (key,)).fetchone()
            if row:
                d.load_state(row[0])
            self._descriptors[key] = d
        return self._descriptors[key]

    def _build_descriptor(self, key: str) -> Descriptor:
        """A fresh (unfitted) descriptor as this collection's vectors were made: entries
        written before descriptor versions existed are version 1."""
        entry = self.manifest["descriptors"][key]
        return make_descriptor(entry["spec"], version=entry.get("version", 1))

    def _key(self, key: str | None) -> str:
        key = key or self.manifest["default_descriptor"]
        if key not in self.manifest["descriptors"]:
            raise ConfigError(f"no descriptor {key!r} in this collection; have: {', '.join(self.descriptor_keys)}")
        return key

    @property
    def generation(self) -> int:
        """The database's write counter (bumped by every transaction of any writer).

        Re-read only when SQLite's ``data_version`` says another connection committed
        since the last read (our own commits clear the cached value in
        :meth:`_transaction`): searches check staleness without reading a table."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if self._generation_seen is None or version != self._generation_seen[0]:
            value = int(self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            self._generation_seen = (version, value)
        return self._generation_seen[1]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM items WHERE status='ok'").fetchone()[0]

    # -- adding -----------------------------------------------------------------------
    def _plan(self, paths: list[str], force: bool) -> tuple[list[Job], int, set[str]]:
        """Jobs for the files that need work, how many are unchanged, and which of the
        job paths already have an item row (the others are new: no lookup at commit)."""
        known = {row[0]: row[1:] for row in self._db.execute(
            "SELECT path, size, mtime, content_hash, status, id FROM items")}
        complete: dict[int, int] = {}
        if known:
            for item_id, count in self._db.execute("SELECT item_id, COUNT(*) FROM vectors GROUP BY item_id"):
                complete[item_id] = count
        n_keys = len(self.descriptor_keys)
        jobs, unchanged, seen = [], 0, set()
        for path in paths:
            key = str(path)
            if key in seen:
                continue  # the same file named twice (a folder and a file in it)
            seen.add(key)
            if key not in known or force:
                jobs.append(Job(key))  # new: extraction stats and reads it anyway
                continue
            try:
                stat = os.stat(key)
            except OSError:
                jobs.append(Job(key))
                continue
            if True:
                size, mtime, chash, status, item_id = known[key]
                same_stat = size == stat.st_size and mtime == stat.st_mtime
                if status == "ok" and complete.get(item_id, 0) < n_keys:
                    have = {r[0] for r in self._db.execute(
                        "SELECT descriptor FROM vectors WHERE item_id=?", (item_id,))}
                    jobs.append(Job(key, keys=tuple(k for k in self.descriptor_keys if k not in have)))
                    continue
                if same_stat:
                    unchanged += 1
                    continue
                jobs.append(Job(key, known_hash=chash if status == "ok" else None))
        return jobs, unchanged, {job.path for job in jobs if job.path in known}

    def fit(self, sources: Sequence[ImageSource], sample: int = 1000, seed: int = 0,
            keys: Iterable[str] | None = None, refit: bool = False) -> list[str]:
        """Fit learned descriptors on a random sample of ``sources``; stores their state.

        Returns the keys that were fitted. Already fitted ones are left alone unless
        ``refit`` (which also drops their vectors, since they change meaning).
        """
        fitted = []
        with writer_lock(self.directory, self.lock_timeout):
            for key in list(keys or self.descriptor_keys):
                d = self._build_descriptor(key)
                if not d.requires_fit:
                    continue
                if self.descriptor(key).is_fitted and not refit:
                    continue
                chosen = list(sources)
                random.Random(seed).shuffle(chosen)
                pixels = []
                for source in chosen:
                    if len(pixels) >= sample:
                        break
                    try:
                        pixels.append(d.load(source))
                    except ImageLoadError:
                        continue
                if not pixels:
                    raise InputError(f"cannot fit {key!r}: none of the sample images could be read")
                d._fit_pixels(pixels)
                with self._transaction() as db:
                    db.execute("INSERT OR REPLACE INTO descriptor_state VALUES (?, ?)", (key, d.save_state()))
                    db.execute("DELETE FROM vectors WHERE descriptor=?", (key,))
                self._descriptors[key] = d
                self._drop_index(key)
                fitted.append(key)
        return fitted

    def add(self, sources: str | os.PathLike | Iterable[str | os.PathLike], workers: int = 1,
            batch_size: int = 64, progress: bool = False, fit_sample: int = 1000,
            metadata: dict[str, dict] | None = None, force: bool = False,
            recursive: bool = True, shard: tuple[int, int] | None = None) -> AddReport:
        """Add image files (a folder, a file, or a list of paths); incremental and resumable.

        Unchanged files (same size and mtime, or same content hash) are skipped; changed
        ones are re-described; each batch commits on its own, so an interrupted run
        loses nothing already committed and a re-run resumes. Unreadable files are
        recorded with their reason (``status='error'``) and reported, never fatal.

        Args:
            workers: extraction processes (1 = in this process).
            fit_sample: images sampled to fit learned descriptors that are not fitted yet.
            metadata: optional ``{path: {key: value}}`` merged into item metadata.
            shard: ``(i, n)``: take only the files whose path hashes to shard ``i`` of
                ``n``, so ``n`` machines can split one folder without coordinating.
        """
        started = time.monotonic()
        paths = self._expand(sources, recursive)
        if shard is not None:
            paths = [p for p in paths if path_shard(p, shard[1]) == shard[0]]
        report = AddReport()
        with writer_lock(self.directory, self.lock_timeout):
            unfitted = [k for k in self.descriptor_keys if not self.descriptor(k).is_fitted]
        if unfitted:
            self.fit(paths, sample=fit_sample, keys=unfitted)
        with writer_lock(self.directory, self.lock_timeout):
            if shard is not None:
                self._reserve_shard_ids(shard[0])
            jobs, report.unchanged, known = self._plan(paths, force)
            extra = {str(p): m for p, m in zip(resolve_paths(metadata or {}), (metadata or {}).values())}
            descriptors = {k: self.descriptor(k) for k in self.descriptor_keys}
            if jobs:
                # Bring the in-memory indexes up to date now: each commit then extends
                # them with the vectors it wrote, so the end needs no re-read of them all.
                for key in self.descriptor_keys:
                    self._refresh_index(key, save=False)
            bar = _progress(progress, len(jobs), "describing")
            # Worker batches are grouped into fewer, larger transactions (a commit costs
            # ~1 ms); a time cap keeps what a crash can lose to about a second of work.
            pending: list[BatchResult] = []
            n_pending = 0
            last_commit = time.monotonic()
            try:
                for batch in extract_batches(jobs, descriptors, workers=workers, batch_size=batch_size):
                    pending.append(batch)
                    n_pending += len(batch)
                    report.describe_cpu_seconds += batch.cpu_seconds
                    if n_pending >= COMMIT_ITEMS or time.monotonic() - last_commit > COMMIT_SECONDS:
                        self._commit(pending, report, extra, known)
                        bar.advance(n_pending)
                        pending, n_pending, last_commit = [], 0, time.monotonic()
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                if pending:
                    self._commit(pending, report, extra, known)
                    bar.advance(n_pending)
                bar.close()
                for key in self.descriptor_keys:
                    self._refresh_index(key, save=True)
        report.seconds = time.monotonic() - started
        if report.interrupted:
            raise KeyboardInterrupt(f"interrupted; {report.added + report.updated} items committed")
        return report

    def _reserve_shard_ids(self, shard_index: int) -> None:
        """Shard ``i`` numbers its items from ``i * 2**40``, so shards writing into one
        shared index (Milvus) never reuse each other's ids."""
        floor = shard_index << SHARD_ID_BITS
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='items'").fetchone()
        if row is None or row[0] < floor:
            with self._transaction() as db:
                db.execute("DELETE FROM sqlite_sequence WHERE name='items'")
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('items', ?)",
                           (max(floor, row[0] if row else 0),))

    def _expand(self, sources, recursive: bool) -> list[str]:
        """Sources (folders, files) -> resolved file paths as strings (plain strings:
        pathlib costs more than the decoding of a tiny image). One ``lstat`` per source
        tells folder, symlink and file apart; each folder is resolved once."""
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        folders: dict[str, str] = {}
        paths: list[str] = []
        for source in sources:
            source = os.fspath(source)
            link = False
            try:
                mode = os.lstat(source).st_mode
                if stat_module.S_ISLNK(mode):
                    link = True
                    mode = os.stat(source).st_mode
            except OSError:
                if not is_image_path(source):
                    raise InputError(f"{source}: no such file or directory") from None
                mode = 0  # a missing image file: reported per file by extraction
            if stat_module.S_ISDIR(mode):
                paths.extend(resolve_file(path, folders, link)
                             for path, link in list_image_files(source, recursive=recursive))
                continue
            paths.append(resolve_file(source, folders, link))
        return paths

    @contextmanager
    def _transaction(self):
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._generation_seen = None  # our own commits leave data_version unchanged

    def _commit(self, batches: list[BatchResult], report: AddReport, extra: dict[str, dict],
                known: set[str]) -> None:
        """One transaction for several extraction batches; statements batched (one
        lookup of the known paths, executemany writes). ``known`` holds the paths that
        had an item row when the run was planned (we hold the writer lock, so no one
        else adds rows meanwhile); the rest are inserted without a lookup."""
        keys = self.descriptor_keys
        with self._transaction() as db:
            generation = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]) + 1
            now = time.time()
            existing: dict[str, tuple[int, str]] = {}
            paths = [p for b in batches for p in b.paths if p in known] if known else []
            for chunk in range(0, len(paths), 900):
                part = paths[chunk:chunk + 900]
                for item_id, path, meta in db.execute(
                        f"SELECT id, path, metadata FROM items WHERE path IN ({','.join('?' * len(part))})", part):
                    existing[path] = (item_id, meta)
            # We hold the writer lock, so new ids can be assigned here (AUTOINCREMENT keeps
            # sqlite_sequence at the largest id written, so ids are never reused).
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='items'").fetchone()
            next_id = first_new = (row[0] if row else 0) + 1
            new_items, new_errors, updates, dropped, unchanged = [], [], [], [], []
            vectors: list[tuple] = []
            index_updates = {key: ([], [], []) for key in keys}  # removed ids, ids, matrices
            for b in batches:
                item_ids = [0] * len(b)
                skip = set(b.errors)
                for i, reason in b.errors.items():
                    path = b.paths[i]
                    report.failed.append((path, reason))
                    found = existing.get(path)
                    if found:
                        dropped.append(found[0])
                        db.execute("UPDATE items SET status='error', error=?, size=?, mtime=? WHERE id=?",
                                   (reason, b.sizes[i], b.mtimes[i], found[0]))
                    else:
                        new_errors.append((next_id, path, b.sizes[i], b.mtimes[i], reason, now))
                        next_id += 1
                for i in b.unchanged:
                    skip.add(i)
                    report.unchanged += 1
                    unchanged.append((b.sizes[i], b.mtimes[i], existing[b.paths[i]][0]))
                for i, path in enumerate(b.paths):
                    if i in skip:
                        continue
                    found = existing.get(path) if known else None
                    tags, more = b.metadata.get(i), extra.get(path) if extra else None
                    if found:
                        meta = json.loads(found[1])
                        meta.update(tags or {})
                        meta.update(more or {})
                        item_id = item_ids[i] = found[0]
                        updates.append((b.hashes[i], b.sizes[i], b.mtimes[i], b.widths[i], b.heights[i],
                                        json.dumps(meta), item_id))
                        report.updated += 1
                    else:
                        meta_text = json.dumps({**(tags or {}), **(more or {})}) if tags or more else "{}"
                        item_id = item_ids[i] = next_id
                        next_id += 1
                        new_items.append((item_id, path, b.hashes[i], b.sizes[i], b.mtimes[i], b.widths[i],
                                          b.heights[i], meta_text, now))
                        report.added += 1
                for key, (rows, matrix) in b.vectors.items():
                    if not len(rows):
                        continue
                    ids = [item_ids[r] for r in rows.tolist()]
                    # One buffer, sliced per row: no per-row array objects.
                    flat = memoryview(matrix).cast("B")
                    width = matrix.shape[1] * matrix.itemsize
                    vectors.extend((key, item_id, generation, flat[j * width:(j + 1) * width])
                                   for j, item_id in enumerate(ids))
                    removed, add_ids, add_vecs = index_updates[key]
                    removed.extend(i for i in ids if i < first_new)  # re-described: old vector out
                    add_ids.extend(ids)
                    add_vecs.append(matrix)
            if dropped:
                db.executemany("DELETE FROM vectors WHERE item_id=?", [(i,) for i in dropped])
            if unchanged:
                db.executemany("UPDATE items SET size=?, mtime=? WHERE id=?", unchanged)
            if new_errors:
                db.executemany("INSERT INTO items (id, path, size, mtime, status, error, added_at) "
                               "VALUES (?, ?, ?, ?, 'error', ?, ?)", new_errors)
            if new_items:
                db.executemany("INSERT INTO items (id, path, content_hash, size, mtime, width, height, "
                               "metadata, status, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ok', ?)", new_items)
            if updates:
                db.executemany("UPDATE items SET content_hash=?, size=?, mtime=?, width=?, height=?, "
                               "metadata=?, status='ok', error=NULL WHERE id=?", updates)
            if vectors:
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", vectors)
        for key, (removed, add_ids, add_vecs) in index_updates.items():
            self._follow_commit(key, generation, dropped + removed, add_ids, add_vecs)

    def _follow_commit(self, key: str, generation: int, removed: list[int], ids: list[int],
                       matrices: list[np.ndarray]) -> None:
        """Let the cached in-memory index follow a just-committed change without
        re-reading vectors from SQLite. The change is queued (a backlog flushed by
        :meth:`_refresh_index`, or once it is as large as the index: FAISS copies its
        storage on every add, so many small adds cost quadratic time). Only a trained
        FAISS index that was current before the commit follows; any other is left
        stale and brought up to date from SQLite, the source of truth."""
        from .index.faiss import FaissIndex

        cached = self._indexes.get(key)
        if cached is None or cached[1] != generation - 1:
            return
        if not isinstance(cached[0], FaissIndex) or not cached[0].is_trained:
            return
        backlog = self._backlog.setdefault(key, ([], [], []))
        backlog[0].extend(removed)
        backlog[1].extend(ids)
        backlog[2].extend(matrices)
        self._indexes[key] = (cached[0], generation)
        if len(backlog[1]) >= max(BACKLOG_ROWS, cached[0].ntotal):
            self._flush_backlog(key)

    def _flush_backlog(self, key: str) -> None:
        """Apply queued committed changes to the cached index (see :meth:`_follow_commit`)."""
        backlog = self._backlog.pop(key, None)
        cached = self._indexes.get(key)
        if backlog is None or cached is None:
            return
        index = cached[0]
        removed, ids, matrices = backlog
        try:
            if removed:
                index.remove(np.asarray(removed, dtype=np.int64))
            if ids:
                index.add(matrices[0] if len(matrices) == 1 else np.concatenate(matrices),
                          np.asarray(ids, dtype=np.int64))
        except LookalikeError:
            self._indexes.pop(key, None)  # rebuilt from SQLite on next use
            return
        if index.n_removed > REBUILD_TOMBSTONE_FRACTION * max(1, index.ntotal + index.n_removed):
            self._indexes.pop(key, None)  # too many tombstones: rebuild

    # -- removing ---------------------------------------------------------------------
    def remove(self, items: Iterable[int | str | os.PathLike]) -> int:
        """Remove items by id or path; returns how many were removed."""
        ids = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                ids.append(int(item))
            else:
                row = self._db.execute("SELECT id FROM items WHERE path=?",
                                       (str(Path(item).resolve()),)).fetchone()
                if row is None:
                    raise InputError(f"{item}: not in this collection")
                ids.append(row[0])
        with writer_lock(self.directory, self.lock_timeout):
            with self._transaction() as db:
                db.executemany("DELETE FROM vectors WHERE item_id=?", [(i,) for i in ids])
                removed = sum(db.execute("DELETE FROM items WHERE id=?", (i,)).rowcount for i in ids)
            for key in self.descriptor_keys:
                self._refresh_index(key, save=True)
        return removed

    def sync(self) -> int:
        """Drop items whose files no longer exist; returns how many were dropped."""
        gone = [row[0] for row in self._db.execute("SELECT id, path FROM items") if not Path(row[1]).exists()]
        return self.remove(gone) if gone else 0

    def update_metadata(self, item: int | str, values: dict[str, Any], replace: bool = False) -> None:
        """Merge (or replace) an item's metadata."""
        row = self.get(item)
        meta = values if replace else {**row["metadata"], **values}
        with writer_lock(self.directory, self.lock_timeout):
            with self._transaction() as db:
                db.execute("UPDATE items SET metadata=? WHERE id=?", (json.dumps(meta), row["id"]))

    # -- reading ----------------------------------------------------------------------
    def get(self, item: int | str | os.PathLike) -> dict[str, Any]:
        """One item's row as a dict (metadata decoded)."""
        if isinstance(item, (int, np.integer)):
            row = self._db.execute("SELECT * FROM items WHERE id=?", (int(item),)).fetchone()
        else:
            row = self._db.execute("SELECT * FROM items WHERE path=?", (str(Path(item).resolve()),)).fetchone()
        if row is None:
            raise InputError(f"{item}: not in this collection")
        return self._row_dict(row)

    def _row_dict(self, row) -> dict[str, Any]:
        names = ("id", "path", "content_hash", "size", "mtime", "width", "height", "metadata",
                 "status", "error", "added_at")
        out = dict(zip(names, row))
        out["metadata"] = json.loads(out["metadata"] or "{}")
        return out

    def items(self, where: str | Sequence[str] | None = None, status: str | None = "ok",
              limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Item rows matching a metadata filter, in id order (``status=None``: any status)."""
        clause, args = self._item_clause(where, status)
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        return [self._row_dict(r) for r in
                self._db.execute(f"SELECT * FROM items WHERE {clause} ORDER BY id{page}", args)]

    def count(self, where: str | Sequence[str] | None = None, status: str | None = "ok") -> int:
        """How many items match a filter."""
        clause, args = self._item_clause(where, status)
        return self._db.execute(f"SELECT COUNT(*) FROM items WHERE {clause}", args).fetchone()[0]

    @staticmethod
    def _item_clause(where, status):
        clause, args = compile_filter(where)
        if status:
            clause, args = f"({clause}) AND status=?", args + [status]
        return clause, args

    def failures(self) -> list[tuple[str, str]]:
        return list(self._db.execute("SELECT path, error FROM items WHERE status='error' ORDER BY path"))

    def vectors(self, key: str | None = None, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored ``(ids (n,) int64, vectors (n, code_size))`` for one descriptor."""
        key = self._key(key)
        d = self.descriptor(key)
        if ids is None:
            rows = self._db.execute("SELECT item_id, vector FROM vectors WHERE descriptor=? ORDER BY item_id", (key,))
        else:
            wanted = ",".join(str(int(i)) for i in ids) or "NULL"
            rows = self._db.execute(f"SELECT item_id, vector FROM vectors WHERE descriptor=? AND item_id IN ({wanted}) "
                                    "ORDER BY item_id", (key,))
        rows = rows.fetchall()
        out_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        data = np.frombuffer(b"".join(r[1] for r in rows), dtype=d.dtype).reshape(len(rows), d.code_size)
        return out_ids, data

    # -- indexes ----------------------------------------------------------------------
    def _index_path(self, key: str) -> Path:
        return self.directory / INDEX_DIR / f"{key}.lkidx"

    def _drop_index(self, key: str) -> None:
        from .index.milvus import MilvusIndex, is_milvus_pointer

        self._indexes.pop(key, None)
        self._backlog.pop(key, None)
        self._saved_generation.pop(key, None)
        path = self._index_path(key)
        if is_milvus_pointer(path):
            # The vectors live in Milvus: drop that collection too (a new spec or a refit
            # descriptor would not match it). Note: every shard writing there loses its rows.
            try:
                MilvusIndex.load(path).drop()
            except CollectionError:
                pass  # already gone or unreachable: the rebuild recreates or reports it
        path.unlink(missing_ok=True)

    def index(self, key: str | None = None):
        """The up-to-date FAISS index of a descriptor (refreshed from stored vectors)."""
        key = self._key(key)
        return self._refresh_index(key, save=False)

    def _refresh_index(self, key: str, save: bool):
        generation = self.generation
        if self._backlog:
            self._flush_backlog(key)
        cached = self._indexes.get(key)
        if cached is not None and cached[1] == generation:
            if save and self._saved_generation.get(key) != generation:
                cached[0].save(self._index_path(key), extra={"generation": generation})
                self._saved_generation[key] = generation
            return cached[0]
        from .index import load_index_with_extra, make_index
        from .index.base import resolve_auto_spec
        from .index.faiss import FaissIndex

        entry = self.manifest["descriptors"][key]
        index, index_gen = None, -1
        if cached is not None:
            index, index_gen = cached
        elif self._index_path(key).exists():
            try:
                index, extra = load_index_with_extra(self._index_path(key))
                index_gen = int(extra.get("generation", -1))
                self._saved_generation[key] = index_gen
            except CollectionError:
                index = None  # a damaged cache: rebuild from the vectors
        n_vectors = self._db.execute("SELECT COUNT(*) FROM vectors WHERE descriptor=?", (key,)).fetchone()[0]
        requested = entry.get("index", "auto")
        if index is not None and requested.startswith("auto"):
            wanted, _ = resolve_auto_spec(n_vectors, entry["dim"], entry["metric"])
            if wanted.split(":")[0] != index.spec.split(":")[0]:
                index = None  # the collection outgrew (or shrank below) the chosen kind
        if index is not None and index_gen >= 0:
            live_db = np.fromiter((r[0] for r in self._db.execute(
                "SELECT item_id FROM vectors WHERE descriptor=?", (key,))), dtype=np.int64)
            stale_rows = self._db.execute(
                "SELECT item_id FROM vectors WHERE descriptor=? AND generation>?", (key, index_gen)).fetchall()
            changed = np.array([r[0] for r in stale_rows], dtype=np.int64)
            gone = np.setdiff1d(index.ids, live_db)
            index.remove(np.concatenate([gone, changed]))
            if len(changed):
                ids, vecs = self.vectors(key, ids=changed.tolist())
                index.add(vecs, ids)
            if index.n_removed > REBUILD_TOMBSTONE_FRACTION * max(1, index.ntotal + index.n_removed):
                index = None
        else:
            index = None
        if index is None:
            ids, vecs = self.vectors(key)
            index = make_index(requested, entry["dim"], entry["metric"], n_hint=len(ids),
                               name=key, base_dir=self.directory)
            stale = np.setdiff1d(index.ids, ids)  # a Milvus collection may outlive this cache
            if len(stale):
                index.remove(stale)
            if len(ids):
                train = vecs
                if len(vecs) > 200_000:
                    train = vecs[np.random.default_rng(0).choice(len(vecs), 200_000, replace=False)]
                if not index.is_trained:
                    try:
                        index.train(train)
                    except InputError:
                        # Too few vectors for the requested quantiser: exact search until they grow.
                        index = FaissIndex("flat", entry["dim"], entry["metric"], n_hint=len(ids))
                        index.auto_reason = f"too few vectors ({len(ids)}) to train {requested!r}; exact for now"
                index.add(vecs, ids)
        if save:
            index.save(self._index_path(key), extra={"generation": generation})
            self._saved_generation[key] = generation
        self._indexes[key] = (index, generation)
        return index

    def set_index(self, spec: str, key: str | None = None) -> None:
        """Switch a descriptor's index spec and rebuild it."""
        from .index.base import parse_index_spec

        parse_index_spec(spec)
        key = self._key(key)
        with writer_lock(self.directory, self.lock_timeout):
            self.manifest["descriptors"][key]["index"] = spec
            atomic_write_text(self.directory / MANIFEST, json.dumps(self.manifest, indent=2))
            self._drop_index(key)
            self._refresh_index(key, save=True)

    # -- searching --------------------------------------------------------------------
    def describe_query(self, query: ImageSource, key: str | None = None) -> np.ndarray:
        """Descriptor vector ``(1, code_size)`` of a query image (path, bytes, array, PIL)."""
        return self.descriptor(key).transform([query])

    def search(self, queries: ImageSource | Sequence[ImageSource], k: int = 10, descriptor: str | None = None,
               where: str | Sequence[str] | None = None, **knobs) -> list[QueryResult]:
        """Find the items most similar to each query image.

        Args:
            queries: one image or a list (paths, bytes, arrays, PIL images).
            k: hits per query.
            descriptor: which stored descriptor to search (default: the manifest's).
            where: metadata filter, e.g. ``"width>200"`` or ``"tag=cat"``.
            **knobs: index search knobs (``nprobe``, ``efSearch``).

        Returns:
            One :class:`QueryResult` per query, hits nearest first.
        """
        items, names = _query_list(queries)
        vectors = self.descriptor(descriptor).transform(items)
        return self.search_vectors(vectors, k=k, descriptor=descriptor, where=where, names=names, **knobs)

    def search_item(self, item: int | str, k: int = 10, descriptor: str | None = None,
                    where: str | Sequence[str] | None = None, exclude_self: bool = True, **knobs) -> QueryResult:
        """Search with a stored item's own vector (no image decoding)."""
        row = self.get(item)
        _, vec = self.vectors(descriptor, ids=[row["id"]])
        if len(vec) == 0:
            raise InputError(f"item {row['path']} has no {self._key(descriptor)!r} vector (status {row['status']})")
        result = self.search_vectors(vec, k=k + int(exclude_self), descriptor=descriptor, where=where,
                                     names=[row["path"]], **knobs)[0]
        if exclude_self:
            result.hits = [h for h in result.hits if h.id != row["id"]][:k]
        return result

    def search_vectors(self, vectors: np.ndarray, k: int = 10, descriptor: str | None = None,
                       where: str | Sequence[str] | None = None, names: Sequence[str] | None = None,
                       **knobs) -> list[QueryResult]:
        """Search with descriptor vectors ``(n, code_size)``."""
        key = self._key(descriptor)
        index = self._refresh_index(key, save=False)
        allowed = None if where is None else self._allowed_ids(where)
        result = index.search(vectors, k=k, allowed_ids=allowed, **knobs)
        generation = self._indexes[key][1]  # the generation the index was refreshed at
        return self._hits(result, names, generation)

    def search_fused(self, queries: ImageSource | Sequence[ImageSource], k: int = 10,
                     descriptors: Sequence[str] | None = None, rule: str = "weighted",
                     weights: Sequence[float] | None = None, candidates: int | None = None,
                     where: str | Sequence[str] | None = None) -> list[QueryResult]:
        """Late fusion of several stored descriptors (see :mod:`lookalike.fusion`).

        Args:
            descriptors: keys to fuse (default: all of the collection's).
            rule: ``weighted`` (scale-normalised distances, exact re-scoring of the
                union of candidates) or ``rrf`` (reciprocal-rank fusion).
            weights: one per descriptor (default: equal).
            candidates: hits taken from each descriptor's index (default ``max(50, 5k)``).

        Returns:
            One :class:`QueryResult` per query; ``distance`` is the fused distance
            (weighted) or ``-score`` (rrf): smaller = closer either way.
        """
        from .distances import exact_distances
        from .fusion import check_rule, fuse_rankings, typical_distance

        check_rule(rule)
        keys = list(descriptors or self.descriptor_keys)
        for key in keys:
            self._key(key)
        weights = list(weights) if weights is not None else [1.0] * len(keys)
        if len(weights) != len(keys):
            raise ConfigError(f"{len(keys)} descriptors but {len(weights)} weights")
        items, names = _query_list(queries)
        n_cand = candidates or max(50, 5 * k)
        allowed = self._allowed_ids(where)
        query_vectors, rankings = {}, {}
        for key in keys:
            query_vectors[key] = self.descriptor(key).transform(items)
            rankings[key] = self.index(key).search(query_vectors[key], k=n_cand, allowed_ids=allowed).ids
        fused_ids, fused_d = np.full((len(items), k), -1, np.int64), np.full((len(items), k), np.inf, np.float32)
        for qi in range(len(items)):
            if rule == "rrf":
                merged = fuse_rankings([rankings[key][qi].tolist() for key in keys], weights, k)
            else:
                union = sorted({int(i) for key in keys for i in rankings[key][qi] if i >= 0})
                if not union:
                    continue
                total = np.zeros(len(union), dtype=np.float64)
                for key, weight in zip(keys, weights):
                    ids, vecs = self.vectors(key, ids=union)
                    position = {int(i): j for j, i in enumerate(ids)}
                    metric = self.manifest["descriptors"][key]["metric"]
                    d = exact_distances(query_vectors[key][qi:qi + 1], vecs, metric)[0]
                    scale = self._fusion_scale(key, typical_distance)
                    per_item = np.array([d[position[i]] if i in position else np.inf for i in union])
                    total += weight * per_item / scale
                order = np.argsort(total, kind="stable")[:k]
                merged = [(union[j], float(total[j])) for j in order]
            for col, (item, dist) in enumerate(merged):
                fused_ids[qi, col], fused_d[qi, col] = item, dist
        from .index.base import SearchResult

        return self._hits(SearchResult(fused_ids, fused_d), names, self.generation)

    def _fusion_scale(self, key: str, typical_distance) -> float:
        generation = self.generation
        if key not in self._scales or self._scales[key][1] != generation:
            _, vecs = self.vectors(key)
            self._scales[key] = (typical_distance(vecs, self.manifest["descriptors"][key]["metric"]), generation)
        return self._scales[key][0]

    def _allowed_ids(self, where: str | Sequence[str] | None) -> np.ndarray | None:
        """Ids of ok items passing a metadata filter (None: no filter)."""
        if where is None:
            return None
        clause, args = compile_filter(where)
        return np.fromiter((r[0] for r in self._db.execute(
            f"SELECT id FROM items WHERE status='ok' AND ({clause})", args)), dtype=np.int64)

    def _hits(self, result, names: Sequence[str] | None, generation: int) -> list[QueryResult]:
        # Rows are cached per generation (any write bumps it), so repeated searches
        # skip SQLite; the cache is bounded so huge collections do not fill memory.
        if self._row_cache_generation != generation or len(self._row_cache) > ROW_CACHE_LIMIT:
            self._row_cache, self._row_cache_generation = {}, generation
        cache = self._row_cache
        id_rows = result.ids.tolist()
        missing = {i for row in id_rows for i in row if i not in cache}
        missing.discard(-1)
        if missing:
            missing = list(missing)
            for chunk in range(0, len(missing), 900):
                part = missing[chunk:chunk + 900]
                for item_id, path, meta in self._db.execute(
                        f"SELECT id, path, metadata FROM items WHERE id IN ({','.join('?' * len(part))})", part):
                    cache[item_id] = (path, meta)
        if not names:
            names = [f"<vector {i}>" for i in range(len(id_rows))]
        out = []
        get, loads = cache.get, json.loads
        # Thousands of small acyclic objects: pause the cyclic GC meanwhile (its
        # generation-0 passes cost as much again as building them).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for name, ids, dists in zip(names, id_rows, result.distances.tolist()):
                # get(i) is None for -1 padding (and for an item removed meanwhile).
                out.append(QueryResult(str(name), [
                    Hit(i, row[0], dist, {} if row[1] == "{}" else loads(row[1]))
                    for i, dist in zip(ids, dists) if (row := get(i)) is not None]))
        finally:
            if gc_was_enabled:
                gc.enable()
        return out

    # -- facts ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        counts = dict(self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
        descriptors = {}
        for key, entry in self.manifest["descriptors"].items():
            index = self.index(key)
            descriptors[key] = {**entry, "fitted": self.descriptor(key).is_fitted,
                                "vectors": self._db.execute("SELECT COUNT(*) FROM vectors WHERE descriptor=?",
                                                            (key,)).fetchone()[0],
                                "index_in_use": index.describe()}
        size = sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())
        return {"path": str(self.directory), "format_version": self.manifest["format_version"],
                "items": counts.get("ok", 0), "errors": counts.get("error", 0),
                "default_descriptor": self.manifest["default_descriptor"], "descriptors": descriptors,
                "generation": self.generation, "disk_bytes": size}


def _query_list(queries) -> tuple[list, list[str]]:
    """One query image or a list of them -> (list of sources, printable names)."""
    single = isinstance(queries, (str, bytes, os.PathLike)) or hasattr(queries, "getpixel") or (
        isinstance(queries, np.ndarray) and queries.ndim in (2, 3))
    items = [queries] if single else list(queries)
    names = [str(q) if isinstance(q, (str, os.PathLike)) else f"<query {i}>" for i, q in enumerate(items)]
    return items, names


class _NoProgress:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichProgress:
    def __init__(self, total: int, label: str):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()


def _progress(enabled: bool, total: int, label: str):
    return _RichProgress(total, label) if enabled and total else _NoProgress()


def open_collection(path: str | os.PathLike) -> Collection:
    """Open an existing collection directory."""
    return Collection.open(path)
