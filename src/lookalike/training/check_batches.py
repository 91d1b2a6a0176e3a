"""Deterministic float64 batches for checking losses against a reference: the test
suite's slow Python loops and, in the bench venv, pytorch-metric-learning
(``bench/losses_vs_pml.py``). Both must see the very same numbers, so they live here."""
from __future__ import annotations

import torch

DT = torch.float64
#: Classes and embedding size of :func:`classification_batch`.
CLASSES, DIM = 5, 4


def labelled_batch(b_per_class: int = 3, classes: int = 4, dim: int = 5, seed: int = 0):
    """``(x, labels)``: labelled embeddings, same-class items pulled together a little so
    distances spread over both sides of the margins; shuffled."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(classes * b_per_class, dim, generator=g, dtype=DT)
    centres = torch.randn(classes, dim, generator=g, dtype=DT)
    labels = torch.arange(classes).repeat_interleave(b_per_class)
    x = x + 1.2 * centres[labels]
    perm = torch.randperm(len(labels), generator=g)
    return x[perm].contiguous(), labels[perm].contiguous()


def classification_batch(seed: int = 0, n: int = 14):
    """``(x, y, w)``: embeddings whose angles to their class weight spread over
    ``[0, pi]``, some almost opposite to it (past ArcFace's ``pi - m`` branch point)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(CLASSES, DIM, generator=g, dtype=DT)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randn(n, DIM, generator=g, dtype=DT) * 2.0
    x[:3] = -w[y[:3]] * 1.5 + 0.05 * torch.randn(3, DIM, generator=g, dtype=DT)  # theta near pi
    x[3:5] = w[y[3:5]] * 2.0 + 0.05 * torch.randn(2, DIM, generator=g, dtype=DT)  # theta near 0
    return x, y, w


def with_weight(loss, w):
    """``loss`` in float64 with its class weights set to ``w``."""
    loss = loss.double()
    with torch.no_grad():
        loss.weight.copy_(w)
    return loss
