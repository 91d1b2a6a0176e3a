"""Evaluation protocols: readers of real datasets that describe what to compare.

A protocol never copies or decodes images: it lists the files (each once, in
``paths``) and says how they are compared, so an evaluator can embed ``paths`` once,
compute distances, and score them with :mod:`lookalike.evaluation.metrics` (or the
one-call helpers in :mod:`lookalike.evaluation.report`).

Four shapes:

* :class:`RetrievalProtocol` -- queries and a gallery drawn from ``paths`` with a
  class label each; relevant = same label. ``exclude_self`` marks leave-one-out
  protocols, where each query is also a gallery item and must not match itself.
* :class:`VerificationProtocol` -- pairs of images, same/different, and a fold per pair.
* :class:`IdentificationProtocol` -- open-set 1:N: an enrolled gallery (with
  distractors) and mated / non-mated probes.
* :class:`AnnProtocol` -- base vectors, query vectors and exact neighbour ids.

Every reader takes ``data_path`` = either the shared data root (``.../shared/data``,
holding ``lfw/``, ``coil100/``, ...) or the dataset's own folder. Bad input (missing
file, malformed line) raises :class:`~lookalike.errors.InputError` naming the file and
line. :func:`load_protocol` dispatches by name.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from ..errors import ConfigError, InputError
from ..images import is_image_path, iter_image_files

__all__ = [
    "RetrievalProtocol", "VerificationProtocol", "IdentificationProtocol", "AnnProtocol",
    "load_lfw_pairs", "load_lfw_identification", "load_coil100", "load_cifar10", "load_orl",
    "load_folder", "load_csv_manifest", "load_ann_sift", "read_fvecs", "read_ivecs",
    "read_bvecs", "load_protocol", "PROTOCOL_NAMES",
]

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- shapes
def _position_in(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Position of each needle in ``haystack`` (unique values), -1 when absent."""
    where = {int(v): i for i, v in enumerate(haystack)}
    return np.array([where.get(int(v), -1) for v in needles], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class RetrievalProtocol:
    """Query/gallery retrieval with class labels (relevant = same label).

    Attributes:
        name: protocol name, e.g. ``"coil100"``.
        paths: every image involved, each once.
        labels: ``(len(paths),) int64`` class of each path (index into ``label_names``).
        query_indices: ``(n_queries,) int64`` positions in ``paths``.
        gallery_indices: ``(n_gallery,) int64`` positions in ``paths``.
        exclude_self: True when queries are also gallery items (leave-one-out): the
            query's own entry is dropped from its ranking and from ``n_relevant``.
        label_names: human name of each label value.
        description: one line on how queries and gallery were chosen.

    Distances to score are ``(n_queries, n_gallery)``, rows in ``query_indices`` order,
    columns in ``gallery_indices`` order, smaller = closer.
    """

    name: str
    paths: list[Path]
    labels: np.ndarray
    query_indices: np.ndarray
    gallery_indices: np.ndarray
    exclude_self: bool
    label_names: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def query_labels(self) -> np.ndarray:
        return self.labels[self.query_indices]

    @property
    def gallery_labels(self) -> np.ndarray:
        return self.labels[self.gallery_indices]

    @property
    def self_index(self) -> np.ndarray:
        """``(n_queries,) int64``: each query's column in the gallery, ``-1`` if absent."""
        return _position_in(self.gallery_indices, self.query_indices)

    def summary(self) -> dict[str, Any]:
        """JSON-able counts for reports."""
        return {"name": self.name, "kind": "retrieval", "n_images": len(self.paths),
                "n_queries": int(len(self.query_indices)),
                "n_gallery": int(len(self.gallery_indices)),
                "n_labels": int(len(np.unique(self.labels))),
                "exclude_self": self.exclude_self, "description": self.description}


@dataclass(frozen=True, eq=False)
class VerificationProtocol:
    """Same/different pairs.

    Attributes:
        name: e.g. ``"lfw-pairs"``.
        paths: every image involved, each once.
        index_a, index_b: ``(n_pairs,) int64`` positions in ``paths`` of each pair's images.
        is_same: ``(n_pairs,) bool``.
        folds: ``(n_pairs,) int64`` fold of each pair (all 0 for a single-fold set).
        description: one line on the source.
    """

    name: str
    paths: list[Path]
    index_a: np.ndarray
    index_b: np.ndarray
    is_same: np.ndarray
    folds: np.ndarray
    description: str = ""

    @property
    def path_a(self) -> list[Path]:
        return [self.paths[i] for i in self.index_a]

    @property
    def path_b(self) -> list[Path]:
        return [self.paths[i] for i in self.index_b]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "verification", "n_images": len(self.paths),
                "n_pairs": int(len(self.is_same)), "n_same": int(self.is_same.sum()),
                "n_folds": int(len(np.unique(self.folds))), "description": self.description}


@dataclass(frozen=True, eq=False)
class IdentificationProtocol:
    """Open-set 1:N identification: enrolled gallery with distractors, mated and
    non-mated probes (see :func:`lookalike.evaluation.metrics.identification_rates`).

    Attributes:
        name: e.g. ``"lfw-identification"``.
        paths: every image involved, each once.
        labels: ``(len(paths),) int64`` identity of each path.
        gallery_indices: ``(n_gallery,) int64`` enrolled images (distractors included).
        probe_indices: ``(n_probes,) int64`` probe images (never in the gallery).
        label_names: identity name of each label value.
        description: how the split was made.
    """

    name: str
    paths: list[Path]
    labels: np.ndarray
    gallery_indices: np.ndarray
    probe_indices: np.ndarray
    label_names: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def gallery_labels(self) -> np.ndarray:
        return self.labels[self.gallery_indices]

    @property
    def probe_labels(self) -> np.ndarray:
        return self.labels[self.probe_indices]

    @property
    def mated(self) -> np.ndarray:
        """``(n_probes,) bool``: the probe's identity is enrolled in the gallery."""
        return np.isin(self.probe_labels, self.gallery_labels)

    @property
    def n_distractors(self) -> int:
        """Gallery identities that no probe shares."""
        return int(len(np.setdiff1d(self.gallery_labels, self.probe_labels)))

    def summary(self) -> dict[str, Any]:
        mated = self.mated
        return {"name": self.name, "kind": "identification", "n_images": len(self.paths),
                "n_gallery": int(len(self.gallery_indices)),
                "n_distractors": self.n_distractors,
                "n_mated_probes": int(mated.sum()), "n_nonmated_probes": int((~mated).sum()),
                "description": self.description}


@dataclass(frozen=True, eq=False)
class AnnProtocol:
    """Approximate nearest-neighbour benchmark on fixed vectors.

    Attributes:
        name: e.g. ``"lfw-sift-10k"``.
        base: ``(n_base, dim) float32`` vectors to index.
        queries: ``(n_queries, dim) float32``.
        groundtruth: ``(n_queries, k_gt) int64`` exact neighbour ids (rows of ``base``),
            nearest first, by L2 distance.
    """

    name: str
    base: np.ndarray
    queries: np.ndarray
    groundtruth: np.ndarray
    description: str = ""

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "ann", "n_base": int(self.base.shape[0]),
                "dim": int(self.base.shape[1]), "n_queries": int(self.queries.shape[0]),
                "k_groundtruth": int(self.groundtruth.shape[1]), "description": self.description}


# --------------------------------------------------------------------------- helpers
def _dataset_dir(data_path: PathLike, folder: str, marker: str) -> Path:
    """``data_path`` itself when it holds ``marker``, else ``data_path/folder``."""
    root = Path(data_path)
    for candidate in (root, root / folder):
        if (candidate / marker).exists():
            return candidate
    raise InputError(f"{root}: no {folder} dataset here (looked for {marker} in "
                     f"{root} and {root / folder})")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _parse_int(token: str, path: Path, line_no: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise InputError(f"{path}:{line_no}: {what} must be an integer, got {token!r}") from None


def _rng_subset(items: list, size: int | None, rng: np.random.Generator) -> list:
    """A sorted random subset of ``size`` items (all when size is None or too large)."""
    if size is None or size >= len(items):
        return list(items)
    if size < 0:
        raise InputError(f"subset size must be >= 0, got {size}")
    chosen = rng.choice(len(items), size=size, replace=False)
    return [items[i] for i in sorted(chosen)]


def _leave_one_out(name: str, paths: list[Path], label_of_path: list[str],
                   description: str) -> RetrievalProtocol:
    names = sorted(set(label_of_path))
    code = {n: i for i, n in enumerate(names)}
    idx = np.arange(len(paths), dtype=np.int64)
    return RetrievalProtocol(name=name, paths=list(paths),
                             labels=np.array([code[x] for x in label_of_path], dtype=np.int64),
                             query_indices=idx, gallery_indices=idx.copy(), exclude_self=True,
                             label_names=names, description=description)


# --------------------------------------------------------------------------- LFW
LFW_PAIR_FILES = {"2": "pairs.txt", "dev-train": "pairsDevTrain.txt", "dev-test": "pairsDevTest.txt"}


def _lfw_image(images: Path, name: str, number: int) -> Path:
    return images / name / f"{name}_{number:04d}.jpg"


def load_lfw_pairs(data_path: PathLike, view: str = "2", check_files: bool = True
                   ) -> VerificationProtocol:
    """LFW verification pairs.

    Files (standard LFW format, tab or space separated):
        * View 2, ``pairs.txt``: header ``n_folds n_per_class`` (``10 300``), then per
          fold ``n_per_class`` same pairs ``name i j`` followed by ``n_per_class``
          different pairs ``name1 i name2 j``. Fold ``f`` (0-based) of each pair is set
          from its position.
        * View 1, ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``N``, then ``N``
          same pairs and ``N`` different pairs; one fold (all 0).
    Images resolve to ``lfw/images/NAME/NAME_NNNN.jpg`` (``i`` zero-padded to 4 digits).

    Args:
        data_path: shared data root or the ``lfw`` folder.
        view: ``"2"`` (pairs.txt), ``"dev-train"`` or ``"dev-test"``.
        check_files: raise when an image is missing (about 10k stat calls).

    Raises:
        InputError: missing file, malformed line, counts not matching the header,
            or a missing image (naming the pairs file and line).
    """
    view = str(view)
    if view not in LFW_PAIR_FILES:
        raise ConfigError(f"unknown LFW view {view!r}; valid: {', '.join(LFW_PAIR_FILES)}")
    lfw = _dataset_dir(data_path, "lfw", "images")
    pairs_file = lfw / LFW_PAIR_FILES[view]
    images = lfw / "images"
    lines = _read_lines(pairs_file)
    if not lines:
        raise InputError(f"{pairs_file}: empty file")
    header = lines[0].split()
    if view == "2":
        if len(header) != 2:
            raise InputError(f"{pairs_file}:1: header must be 'n_folds n_per_class', got {lines[0]!r}")
        n_folds, per_class = (_parse_int(t, pairs_file, 1, "header") for t in header)
    else:
        if len(header) != 1:
            raise InputError(f"{pairs_file}:1: header must be one pair count, got {lines[0]!r}")
        n_folds, per_class = 1, _parse_int(header[0], pairs_file, 1, "header")
    body = [(n, line) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    expected = n_folds * 2 * per_class
    if len(body) != expected:
        raise InputError(f"{pairs_file}: header promises {expected} pairs, found {len(body)} lines")

    path_index: dict[Path, int] = {}
    paths: list[Path] = []
    index_a, index_b, is_same, folds = [], [], [], []

    def index_of(path: Path, line_no: int) -> int:
        if path not in path_index:
            if check_files and not path.is_file():
                raise InputError(f"{pairs_file}:{line_no}: image not found: {path}")
            path_index[path] = len(paths)
            paths.append(path)
        return path_index[path]

    for pos, (line_no, line) in enumerate(body):
        tokens = line.split()
        fold, within = divmod(pos, 2 * per_class)
        expect_same = within < per_class
        if len(tokens) == 3:
            name_a, name_b = tokens[0], tokens[0]
            num_a, num_b = tokens[1], tokens[2]
        elif len(tokens) == 4:
            name_a, num_a, name_b, num_b = tokens
        else:
            raise InputError(f"{pairs_file}:{line_no}: expected 'name i j' or "
                             f"'name1 i name2 j', got {line!r}")
        same = len(tokens) == 3
        if same != expect_same:
            raise InputError(f"{pairs_file}:{line_no}: expected a "
                             f"{'same' if expect_same else 'different'} pair at this position "
                             f"(fold {fold}), got {line!r}")
        a = _lfw_image(images, name_a, _parse_int(num_a, pairs_file, line_no, "image number"))
        b = _lfw_image(images, name_b, _parse_int(num_b, pairs_file, line_no, "image number"))
        index_a.append(index_of(a, line_no))
        index_b.append(index_of(b, line_no))
        is_same.append(same)
        folds.append(fold)
    name = "lfw-pairs" if view == "2" else f"lfw-view1-{view.split('-')[1]}"
    return VerificationProtocol(
        name=name, paths=paths, index_a=np.array(index_a, dtype=np.int64),
        index_b=np.array(index_b, dtype=np.int64), is_same=np.array(is_same, dtype=bool),
        folds=np.array(folds, dtype=np.int64),
        description=f"LFW {pairs_file.name}: {n_folds} fold(s) x ({per_class} same + "
                    f"{per_class} different) pairs")


def _lfw_people(images: Path) -> dict[str, list[Path]]:
    """Person name -> their image files, sorted; read from the folder layout."""
    if not images.is_dir():
        raise InputError(f"{images}: no such directory")
    people = {}
    for entry in sorted(os.scandir(images), key=lambda e: e.name):
        if entry.is_dir():
            files = sorted(Path(entry.path) / f for f in os.listdir(entry.path)
                           if is_image_path(f))
            if files:
                people[entry.name] = files
    if not people:
        raise InputError(f"{images}: no person folders with images")
    return people


def load_lfw_identification(data_path: PathLike, max_identities: int | None = None,
                            max_distractors: int | None = None,
                            non_mated_fraction: float = 0.1, seed: int = 0
                            ) -> IdentificationProtocol:
    """LFW open-set identification with distractors.

    Split (deterministic for a given ``seed``):
        * People with 2+ images: a random ``non_mated_fraction`` of them is **not
          enrolled** -- all their images become non-mated probes. For every other such
          person the first image (sorted file name) is enrolled in the gallery and the
          rest are mated probes.
        * People with exactly one image are enrolled as **distractors** (gallery
          identities no probe shares).
        * ``max_identities`` keeps a random subset of the 2+ people (before the
          non-mated split) and ``max_distractors`` a random subset of the one-image
          people, for speed. On the full LFW: 1,680 people with 2+ images, 4,069 with one.

    Args:
        data_path: shared data root or the ``lfw`` folder.
        max_identities: keep at most this many people with 2+ images (None = all).
        max_distractors: keep at most this many one-image people (None = all).
        non_mated_fraction: share of the 2+ people held out as non-mated probes; 0 gives
            a closed-set gallery with distractors (no FPIR/DIR then).
        seed: random seed of the subsets and of the non-mated split.
    """
    if not 0.0 <= non_mated_fraction < 1.0:
        raise InputError(f"non_mated_fraction must lie in [0, 1), got {non_mated_fraction}")
    lfw = _dataset_dir(data_path, "lfw", "images")
    people = _lfw_people(lfw / "images")
    rng = np.random.default_rng(seed)
    multi = _rng_subset([n for n, f in people.items() if len(f) >= 2], max_identities, rng)
    single = _rng_subset([n for n, f in people.items() if len(f) == 1], max_distractors, rng)
    n_unenrolled = int(round(non_mated_fraction * len(multi)))
    unenrolled = set(_rng_subset(multi, n_unenrolled, rng)) if n_unenrolled else set()

    names = sorted(multi + single)
    code = {n: i for i, n in enumerate(names)}
    paths: list[Path] = []
    labels: list[int] = []
    gallery: list[int] = []
    probes: list[int] = []
    for name in names:
        for j, path in enumerate(people[name]):
            enrol = name not in unenrolled and j == 0
            (gallery if enrol else probes).append(len(paths))
            paths.append(path)
            labels.append(code[name])
    return IdentificationProtocol(
        name="lfw-identification", paths=paths, labels=np.array(labels, dtype=np.int64),
        gallery_indices=np.array(gallery, dtype=np.int64),
        probe_indices=np.array(probes, dtype=np.int64), label_names=names,
        description=(f"LFW 1:N: {len(multi) - len(unenrolled)} enrolled people (first image "
                     f"in gallery, rest mated probes), {len(unenrolled)} unenrolled people "
                     f"(non-mated probes), {len(single)} one-image distractors; seed={seed}"))


# --------------------------------------------------------------------------- COIL, CIFAR, ORL
def load_coil100(data_path: PathLike, query_angle: int = 0,
                 object_ids: Any = None) -> RetrievalProtocol:
    """COIL-100 instance retrieval.

    ``coil100/labels.csv`` (columns ``file, object_id, angle_deg``) lists the views;
    images sit in ``coil100/images``. For each object the view at ``query_angle`` is the
    query; every other view of every object forms the gallery (relevant = the same
    object's other views). Queries are not in the gallery, so ``exclude_self`` is False.

    Args:
        data_path: shared data root or the ``coil100`` folder.
        query_angle: turntable angle (degrees) of the query views.
        object_ids: optional iterable of object ids to keep (e.g. ``range(51, 101)``
            for a test split).

    Raises:
        InputError: malformed CSV line, missing image, or an object without a view at
            ``query_angle``.
    """
    coil = _dataset_dir(data_path, "coil100", "labels.csv")
    csv_path = coil / "labels.csv"
    keep = None if object_ids is None else {int(o) for o in object_ids}
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "object_id", "angle_deg"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{csv_path}:1: missing columns {sorted(missing)}")
        for line_no, row in enumerate(reader, start=2):
            obj = _parse_int(row["object_id"] or "", csv_path, line_no, "object_id")
            angle = _parse_int(row["angle_deg"] or "", csv_path, line_no, "angle_deg")
            if keep is not None and obj not in keep:
                continue
            path = coil / "images" / row["file"]
            if not path.is_file():
                raise InputError(f"{csv_path}:{line_no}: image not found: {path}")
            rows.append((obj, angle, path))
    if not rows:
        raise InputError(f"{csv_path}: no views selected")
    rows.sort()
    objects = sorted({r[0] for r in rows})
    code = {o: i for i, o in enumerate(objects)}
    queries, gallery = [], []
    for i, (obj, angle, _) in enumerate(rows):
        (queries if angle == query_angle else gallery).append(i)
    lacking = sorted(set(objects) - {rows[i][0] for i in queries})
    if lacking:
        raise InputError(f"{csv_path}: objects {lacking[:10]} have no view at {query_angle} degrees")
    return RetrievalProtocol(
        name="coil100", paths=[r[2] for r in rows],
        labels=np.array([code[r[0]] for r in rows], dtype=np.int64),
        query_indices=np.array(queries, dtype=np.int64),
        gallery_indices=np.array(gallery, dtype=np.int64), exclude_self=False,
        label_names=[f"obj{o}" for o in objects],
        description=(f"COIL-100 instance retrieval: {len(objects)} objects, query = view at "
                     f"{query_angle} deg, gallery = the other {len(gallery)} views"))


def load_cifar10(data_path: PathLike, per_class: int | None = 100, seed: int = 0,
                 split: str = "test") -> RetrievalProtocol:
    """CIFAR-10 category retrieval, leave-one-out within a seed-controlled subset.

    Images: ``cifar10/<split>/CLASS/*.jpg``. ``per_class`` images per class are drawn
    at random (``seed``); each is a query against all the others (relevant = same
    class). ``per_class=None`` uses every image (10 x 1,000 on the test split: a
    10k x 10k distance matrix).
    """
    root = _dataset_dir(data_path, "cifar10", split) / split
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise InputError(f"{root}: no class folders")
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for cls in classes:
        files = sorted(p for p in (root / cls).iterdir() if is_image_path(p))
        if not files:
            raise InputError(f"{root / cls}: class folder without images")
        chosen = _rng_subset(files, per_class, rng)
        paths += chosen
        labels += [cls] * len(chosen)
    return _leave_one_out("cifar10", paths, labels,
                          f"CIFAR-10 {split} category retrieval, leave-one-out over "
                          f"{len(paths)} images ({per_class or 'all'} per class, seed={seed})")


def load_orl(data_path: PathLike, variant: str = "full_92x112") -> RetrievalProtocol:
    """ORL / AT&T faces, leave-one-out identification (relevant = same person).

    Images: ``orl_faces/<variant>/sN/K.pgm`` (``full_92x112``: 38 people s3..s40 x 10;
    ``small_23x28``: 40 x 10). Sorted by person number then image number.
    """
    root = _dataset_dir(data_path, "orl_faces", variant) / variant
    people = sorted((d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name)),
                    key=lambda d: int(d.name[1:]))
    if not people:
        raise InputError(f"{root}: no sN person folders")
    paths, labels = [], []
    for person in people:
        files = sorted((p for p in person.iterdir() if p.suffix.lower() == ".pgm"),
                       key=lambda p: (len(p.stem), p.stem))
        paths += files
        labels += [person.name] * len(files)
    return _leave_one_out("orl", paths, labels,
                          f"ORL faces {variant}: leave-one-out over {len(paths)} images of "
                          f"{len(people)} people")


# --------------------------------------------------------------------------- user data
def load_folder(root: PathLike) -> RetrievalProtocol:
    """A labelled folder of the user's own images: class = first-level sub-folder.

    Every image under a class folder (recursively) belongs to that class; each image is
    a query against all others (leave-one-out). Hidden folders are ignored.

    Raises:
        InputError: the folder is missing, an image sits directly in ``root`` (no
            class), or a class folder holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such directory")
    loose = [p for p in root.iterdir() if p.is_file() and is_image_path(p)]
    if loose:
        raise InputError(f"{loose[0]}: image outside any class folder (class = sub-folder of {root})")
    paths, labels = [], []
    for cls in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = iter_image_files(cls)
        if not files:
            raise InputError(f"{cls}: class folder without images")
        paths += files
        labels += [cls.name] * len(files)
    if not paths:
        raise InputError(f"{root}: no class folders with images")
    return _leave_one_out(f"folder:{root.name}", paths, labels,
                          f"labelled folder {root}: leave-one-out over {len(paths)} images")


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def load_csv_manifest(csv_path: PathLike, split: str | None = None) -> RetrievalProtocol:
    """A CSV manifest of the user's own images.

    Columns (header row required): ``path,label[,split][,is_query]``. ``path`` is
    relative to the CSV's folder (absolute paths pass). Rows whose ``split`` differs
    from ``split`` are dropped when ``split`` is given. With an ``is_query`` column
    (``1/0``, ``true/false``, ``yes/no``, empty = false) the marked rows are queries and
    the rest the gallery; without it, leave-one-out over all rows.

    Raises:
        InputError: missing columns, empty field, bad ``is_query`` value, duplicate
            path, missing image file (naming the CSV line), or nothing selected.
    """
    csv_path = Path(csv_path)
    base = csv_path.parent
    try:
        fh = open(csv_path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{csv_path}: no such file") from None
    with fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        reader.fieldnames = fields
        missing = {"path", "label"} - set(fields)
        if missing:
            raise InputError(f"{csv_path}:1: header must name columns path,label[,split]"
                             f"[,is_query]; missing {sorted(missing)}")
        if split is not None and "split" not in fields:
            raise InputError(f"{csv_path}:1: split={split!r} asked but there is no split column")
        has_query = "is_query" in fields
        paths, labels, is_query = [], [], []
        seen: dict[Path, int] = {}
        for line_no, row in enumerate(reader, start=2):
            if None in row:
                raise InputError(f"{csv_path}:{line_no}: more fields than the header")
            if all(v is None or not v.strip() for v in row.values()):
                continue  # blank line
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not rel or not label:
                raise InputError(f"{csv_path}:{line_no}: empty path or label")
            if split is not None and (row.get("split") or "").strip() != split:
                continue
            path = (base / rel) if not Path(rel).is_absolute() else Path(rel)
            if path in seen:
                raise InputError(f"{csv_path}:{line_no}: duplicate path {rel!r} "
                                 f"(first on line {seen[path]})")
            if not path.is_file():
                raise InputError(f"{csv_path}:{line_no}: image not found: {path}")
            seen[path] = line_no
            flag = (row.get("is_query") or "").strip().lower() if has_query else ""
            if flag not in _TRUE | _FALSE:
                raise InputError(f"{csv_path}:{line_no}: is_query must be 1/0, true/false or "
                                 f"yes/no, got {row.get('is_query')!r}")
            paths.append(path)
            labels.append(label)
            is_query.append(flag in _TRUE)
    if not paths:
        raise InputError(f"{csv_path}: no rows selected" + (f" for split {split!r}" if split else ""))
    name = f"csv:{csv_path.name}"
    if not has_query:
        return _leave_one_out(name, paths, labels,
                              f"CSV manifest {csv_path}: leave-one-out over {len(paths)} images")
    flags = np.array(is_query, dtype=bool)
    if not flags.any() or flags.all():
        raise InputError(f"{csv_path}: is_query marks {int(flags.sum())} of {len(flags)} rows; "
                         "need both queries and gallery rows")
    names = sorted(set(labels))
    code = {n: i for i, n in enumerate(names)}
    return RetrievalProtocol(
        name=name, paths=paths, labels=np.array([code[x] for x in labels], dtype=np.int64),
        query_indices=np.flatnonzero(flags).astype(np.int64),
        gallery_indices=np.flatnonzero(~flags).astype(np.int64), exclude_self=False,
        label_names=names,
        description=f"CSV manifest {csv_path}: {int(flags.sum())} queries, "
                    f"{int((~flags).sum())} gallery images")


# --------------------------------------------------------------------------- texmex vectors
def _read_vecs(path: PathLike, value_dtype: np.dtype, max_rows: int | None) -> np.ndarray:
    """texmex ``.Xvecs``: each row = int32 little-endian dim, then ``dim`` values."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    if raw.size < 4:
        raise InputError(f"{path}: too short for a texmex vector file ({raw.size} bytes)")
    value_dtype = np.dtype(value_dtype).newbyteorder("<")
    dim = int(raw[:4].view("<i4")[0])
    if dim <= 0:
        raise InputError(f"{path}: row 0 declares dimension {dim}")
    row_bytes = 4 + dim * value_dtype.itemsize
    if raw.size % row_bytes:
        raise InputError(f"{path}: {raw.size} bytes is not a whole number of rows of "
                         f"dimension {dim} ({row_bytes} bytes each)")
    rows = raw.reshape(-1, row_bytes)
    if max_rows is not None:
        rows = rows[:max_rows]
    dims = np.ascontiguousarray(rows[:, :4]).view("<i4").ravel()
    bad = np.flatnonzero(dims != dim)
    if bad.size:
        raise InputError(f"{path}: row {int(bad[0])} declares dimension {int(dims[bad[0]])}, "
                         f"row 0 declares {dim}")
    return np.ascontiguousarray(rows[:, 4:]).view(value_dtype).astype(value_dtype.newbyteorder("="))


def read_fvecs(path: PathLike, max_rows: int | None = None) -> np.ndarray:
    """Read a texmex ``.fvecs`` file -> ``(n, dim) float32``."""
    return _read_vecs(path, np.float32, max_rows)


def read_ivecs(path: PathLike, max_rows: int | None = None) -> np.ndarray:
    """Read a texmex ``.ivecs`` file -> ``(n, dim) int32`` (e.g. ground-truth ids)."""
    return _read_vecs(path, np.int32, max_rows)


def read_bvecs(path: PathLike, max_rows: int | None = None) -> np.ndarray:
    """Read a texmex ``.bvecs`` file -> ``(n, dim) uint8``."""
    return _read_vecs(path, np.uint8, max_rows)


def load_ann_sift(data_path: PathLike, name: str = "lfw-sift-10k") -> AnnProtocol:
    """An ANN set in texmex layout: ``ann/<name>/{base,query}.fvecs, groundtruth.ivecs``."""
    root = _dataset_dir(data_path, f"ann/{name}", "base.fvecs")
    base = read_fvecs(root / "base.fvecs")
    queries = read_fvecs(root / "query.fvecs")
    gt = read_ivecs(root / "groundtruth.ivecs").astype(np.int64)
    if queries.shape[1] != base.shape[1]:
        raise InputError(f"{root}: query dim {queries.shape[1]} != base dim {base.shape[1]}")
    if gt.shape[0] != queries.shape[0]:
        raise InputError(f"{root / 'groundtruth.ivecs'}: {gt.shape[0]} rows for "
                         f"{queries.shape[0]} queries")
    if gt.size and (gt.min() < 0 or gt.max() >= base.shape[0]):
        raise InputError(f"{root / 'groundtruth.ivecs'}: ids outside [0, {base.shape[0]})")
    return AnnProtocol(name=name, base=base, queries=queries, groundtruth=gt,
                       description=f"{name}: {base.shape[0]} base, {queries.shape[0]} queries, "
                                   f"exact L2 top-{gt.shape[1]}")


# --------------------------------------------------------------------------- dispatch
def _lfw_view1(data_path: PathLike, split: str = "test", check_files: bool = True):
    if split not in ("train", "test"):
        raise ConfigError(f"lfw-view1 split must be 'train' or 'test', got {split!r}")
    return load_lfw_pairs(data_path, view=f"dev-{split}", check_files=check_files)


_LOADERS: dict[str, Callable[..., Any]] = {
    "lfw-pairs": lambda data_path, **kw: load_lfw_pairs(data_path, view="2", **kw),
    "lfw-view1": _lfw_view1,
    "lfw-identification": load_lfw_identification,
    "coil100": load_coil100,
    "cifar10": load_cifar10,
    "orl": load_orl,
    "folder": load_folder,
    "csv": load_csv_manifest,
    "lfw-sift-10k": load_ann_sift,
}
PROTOCOL_NAMES = tuple(_LOADERS)


def load_protocol(name: str, data_path: PathLike, **options: Any):
    """Load a protocol by name.

    Names: ``lfw-pairs`` (View 2, 10 folds), ``lfw-view1`` (``split="train"|"test"``),
    ``lfw-identification``, ``coil100``, ``cifar10``, ``orl``, ``folder`` (data_path =
    the labelled folder), ``csv`` (data_path = the manifest), ``lfw-sift-10k`` (ANN).
    ``options`` go to the matching ``load_*`` function.

    Raises:
        ConfigError: unknown name or option.
    """
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOL_NAMES)}") from None
    try:
        return loader(data_path, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"protocol {name!r}: {exc}") from None
        raise
