"""PKSampler: batch structure, sampling with replacement, determinism, coverage."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lookalike.errors import ConfigError, InputError  # noqa: E402
from lookalike.training.samplers import PKSampler  # noqa: E402


def imbalanced_labels():
    # class sizes 1, 2, 3, 5, 8, 13, 4, 4 (several below k=4), shuffled positions
    sizes = [1, 2, 3, 5, 8, 13, 4, 4]
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    return np.random.default_rng(0).permutation(labels)


def test_every_batch_is_p_classes_by_k_items():
    labels = imbalanced_labels()
    sampler = PKSampler(labels, p=3, k=4, seed=1, num_batches=30)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 30
    for b in batches:
        assert len(b) == 12 == sampler.batch_size
        counts = Counter(labels[b].tolist())
        assert len(counts) == 3 and set(counts.values()) == {4}
        for c in counts:
            members = [i for i in b if labels[i] == c]
            n_c = int((labels == c).sum())
            if n_c >= 4:
                assert len(set(members)) == 4          # no repeats when the class is big enough
            else:
                # small class: every item once, the rest repeats drawn from the class
                assert set(members) == set(np.flatnonzero(labels == c).tolist())


def test_deterministic_with_seed_and_epochs_differ():
    labels = imbalanced_labels()
    a, b = PKSampler(labels, 2, 3, seed=7), PKSampler(labels, 2, 3, seed=7)
    ea1, ea2 = list(a), list(a)
    assert ea1 == list(b) and ea2 == list(b)        # same sequence of epochs
    assert ea1 != ea2                                # a new epoch reshuffles
    assert list(PKSampler(labels, 2, 3, seed=8)) != ea1
    a.set_epoch(1)
    assert list(a) == ea2


def test_balanced_epoch_covers_every_item_exactly_once():
    # 6 classes x 8 items, P=3, K=4: default epoch = 48 // 12 = 4 batches, each class
    # visited twice, each visit takes the next 4 of its shuffled items.
    labels = np.repeat(np.arange(6), 8)
    sampler = PKSampler(labels, p=3, k=4, seed=3)
    assert len(sampler) == 4
    for _ in range(3):  # every epoch
        seen = [i for b in sampler for i in b]
        assert sorted(seen) == list(range(48))


def test_imbalanced_epoch_visits_every_class_evenly():
    labels = imbalanced_labels()
    sampler = PKSampler(labels, p=2, k=2, seed=0, num_batches=20)  # 40 class visits, 8 classes
    visits = Counter(c for b in sampler for c in set(labels[b].tolist()))
    assert set(visits) == set(range(8))
    assert set(visits.values()) == {5}
    # items of a big class are walked through, not redrawn: 5 visits x 2 = 10 of 13 distinct
    big = [i for b in PKSampler(labels, 2, 2, seed=0, num_batches=20) for i in b if labels[i] == 5]
    assert len(big) == 10 and len(set(big)) == 10


def test_min_per_class_and_errors():
    labels = imbalanced_labels()
    sampler = PKSampler(labels, p=2, k=2, min_per_class=4)
    assert set(sampler.classes.tolist()) == {3, 4, 5, 6, 7}
    assert all(labels[i] in (3, 4, 5, 6, 7) for b in sampler for i in b)
    with pytest.raises(InputError):
        PKSampler(labels, p=9, k=2)
    with pytest.raises(InputError):
        PKSampler(labels, p=6, k=2, min_per_class=4)
    with pytest.raises(ConfigError):
        PKSampler(labels, p=0, k=2)
    with pytest.raises(ConfigError):
        PKSampler(labels, p=2, k=2, num_batches=0)


def test_string_labels_and_dataloader():
    names = np.array(["ann", "bob", "cid"] * 4)
    data = torch.utils.data.TensorDataset(torch.arange(12))
    loader = torch.utils.data.DataLoader(data, batch_sampler=PKSampler(names, p=2, k=2, seed=0))
    batches = [b[0] for b in loader]
    assert len(batches) == 3
    for b in batches:
        assert Counter(names[b.numpy()].tolist()).most_common()[0][1] == 2
        assert len(set(names[b.numpy()].tolist())) == 2
