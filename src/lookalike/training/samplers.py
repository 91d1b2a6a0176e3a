"""Batch samplers for metric learning.

:class:`PKSampler` builds each batch from ``P`` classes x ``K`` items per class
(Hermans et al. 2017), so every anchor in a batch has positives and negatives —
what pair, triplet and proxy losses need. Use it as a *batch* sampler::

    loader = DataLoader(dataset, batch_sampler=PKSampler(labels, p=16, k=4, seed=0))
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.utils.data

from lookalike.errors import ConfigError, InputError


class PKSampler(torch.utils.data.Sampler):
    """Yields batches (lists of dataset indices) of ``p`` classes x ``k`` items.

    How a batch is drawn:

    * classes: a seeded random permutation of the classes is walked ``p`` at a time,
      and a new permutation starts when it is used up, so over an epoch every class
      is visited about equally often (exactly equally when ``p`` divides the number of
      classes and the epoch is a whole number of passes). The ``p`` classes of a
      batch are always distinct.
    * items of a class with at least ``k`` items: a seeded permutation of the class
      is walked ``k`` at a time (re-shuffled when used up), so its items are seen
      evenly and never twice in one batch.
    * a class with fewer than ``k`` items is sampled **with replacement**: all its
      items once, the remaining ``k - n`` slots drawn uniformly from them again, so
      such a batch holds duplicate images (identical embeddings without
      augmentation; set ``min_per_class=2`` to drop singleton classes).

    Epoch length: ``num_batches`` batches; by default ``len(items) // (p * k)`` (at
    least 1), i.e. one epoch shows about as many items as the kept classes hold.

    Determinism: the draws of epoch ``e`` come from ``numpy.random.default_rng([seed,
    e])``. Each ``iter()`` uses the current epoch then advances it, so two samplers
    built with the same seed yield the same sequence of epochs; ``set_epoch(e)``
    jumps to an epoch (as with ``DistributedSampler``).

    Args:
        labels: ``(N,)`` class label of every dataset item (ints or strings).
        p: classes per batch.
        k: items per class per batch.
        seed: random seed.
        num_batches: batches per epoch (``None``: the default above).
        min_per_class: classes with fewer items are left out entirely.

    Raises:
        InputError: fewer than ``p`` classes are left after ``min_per_class``.
        ConfigError: ``p``, ``k``, ``num_batches`` or ``min_per_class`` < 1.
    """

    def __init__(self, labels: Sequence, p: int, k: int, seed: int = 0,
                 num_batches: int | None = None, min_per_class: int = 1):
        if int(p) < 1 or int(k) < 1 or int(min_per_class) < 1:
            raise ConfigError(f"p, k and min_per_class must be >= 1, got {p}, {k}, {min_per_class}")
        if num_batches is not None and int(num_batches) < 1:
            raise ConfigError(f"num_batches must be >= 1, got {num_batches}")
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise InputError(f"labels must be 1-D, got shape {labels.shape}")
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.min_per_class = int(min_per_class)
        classes, inverse = np.unique(labels, return_inverse=True)
        members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
        keep = [i for i, m in enumerate(members) if len(m) >= self.min_per_class]
        #: the class labels that can appear, and the dataset indices of each
        self.classes = classes[keep]
        self.class_indices: list[np.ndarray] = [members[i] for i in keep]
        if len(self.classes) < self.p:
            raise InputError(
                f"labels: need at least p={self.p} classes with >= {self.min_per_class} items, "
                f"found {len(self.classes)}")
        n_items = sum(len(m) for m in self.class_indices)
        self.num_batches = (int(num_batches) if num_batches is not None
                            else max(1, n_items // (self.p * self.k)))
        self._epoch = 0

    @property
    def batch_size(self) -> int:
        """Items per batch, ``p * k``."""
        return self.p * self.k

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` draw epoch ``epoch``."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self._epoch])
        self._epoch += 1
        n_classes = len(self.classes)
        class_stream = _Stream(n_classes, rng)
        item_streams = [_Stream(len(m), rng) if len(m) >= self.k else None
                        for m in self.class_indices]
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in class_stream.take(self.p):
                members = self.class_indices[c]
                stream = item_streams[c]
                if stream is not None:
                    picked = members[stream.take(self.k)]
                else:
                    # Too few items: each once, then the rest drawn with replacement.
                    extra = rng.integers(0, len(members), self.k - len(members))
                    picked = np.concatenate([rng.permutation(members), members[extra]])
                batch.extend(int(i) for i in picked)
            yield batch


class _Stream:
    """Walks seeded permutations of ``range(n)``, ``take(m)`` distinct values at a time."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng = n, rng
        self.order = rng.permutation(n)
        self.pos = 0

    def take(self, m: int) -> np.ndarray:
        out = list(self.order[self.pos:self.pos + m])
        self.pos += len(out)
        if len(out) < m:
            # Start a new pass; values already taken go to its end, so one call never
            # repeats a value and none is skipped in the new pass.
            fresh = self.rng.permutation(self.n)
            taken = set(out)
            self.order = np.concatenate([[v for v in fresh if v not in taken],
                                         [v for v in fresh if v in taken]]).astype(np.int64)
            self.pos = m - len(out)
            out.extend(self.order[:self.pos])
        return np.asarray(out, dtype=np.int64)
