"""Tuple miners for metric learning: which pairs / triplets of a batch a loss should see.

Mining is kept apart from the losses: a miner looks at a batch's distances (without
gradient) and returns *indices*; a loss then computes its value on those indices
with gradient. Two layers:

* pure functions on a given distance matrix ``dist (B, B)`` and ``labels (B,)``
  (:func:`semihard_triplets`, :func:`hard_triplets`, :func:`batch_hard_triplets`,
  :func:`margin_pairs`, ...), so tests can check them on hand-built matrices;
* small miner classes (:class:`RandomMiner`, :class:`SemiHardMiner`,
  :class:`HardMiner`, :class:`BatchHardMiner`, :class:`PairMarginMiner`) that compute
  the distance matrix from embeddings and call those functions.

Distances are always "smaller = closer": ``euclidean`` (L2), ``squared_euclidean``
and ``cosine`` (``1 - cos``). Triplets come back as ``(anchor, positive, negative)``,
pairs as ``(anchor1, positive, anchor2, negative)`` (the layout
pytorch-metric-learning uses too), each a 1-D ``torch.int64`` tensor. Indices are
returned in row-major order of ``(anchor, positive, negative)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lookalike.errors import ConfigError, InputError

DISTANCES = ("euclidean", "squared_euclidean", "cosine")


# ----------------------------------------------------------------------------- distances
def check_distance(distance: str) -> str:
    """Return ``distance`` if it is a known name, else raise :class:`ConfigError`."""
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
    return distance


def pairwise_distances(x: torch.Tensor, distance: str = "euclidean",
                       y: torch.Tensor | None = None) -> torch.Tensor:
    """All distances between rows of ``x`` and rows of ``y`` (``x`` itself by default).

    Args:
        x: ``(B, D)`` float embeddings.
        distance: ``euclidean``, ``squared_euclidean`` or ``cosine`` (``1 - cos``).
        y: optional ``(M, D)`` float; ``None`` means ``x`` (then the diagonal is
            exactly 0).

    Returns:
        ``(B, M)`` float tensor, smaller = closer, differentiable. The Euclidean
        square root has gradient 0 (not NaN) where a distance is exactly 0.
    """
    check_distance(distance)
    same = y is None
    y = x if same else y
    if distance == "cosine":
        dist = 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    else:
        # |x|^2 + |y|^2 - 2 x.y: one matrix product, like torch.cdist's fast path.
        sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        dist = sq.clamp_min(0.0)
    if same:
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        dist = dist.masked_fill(eye, 0.0)
    if distance == "euclidean":
        zero = dist == 0
        # sqrt'(0) is infinite; route exact zeros around the sqrt so their gradient is 0.
        dist = torch.sqrt(dist.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)
    return dist


# ----------------------------------------------------------------------------- masks and full sets
def _check_labels(dist: torch.Tensor, labels: torch.Tensor) -> None:
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise InputError(f"distance matrix must be square (B, B), got {tuple(dist.shape)}")
    if labels.ndim != 1 or labels.shape[0] != dist.shape[0]:
        raise InputError(
            f"labels must be 1-D with {dist.shape[0]} entries, got shape {tuple(labels.shape)}")


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pair masks of a batch.

    Args:
        labels: ``(B,)`` integer class labels.

    Returns:
        ``(positive, negative)``, each ``(B, B)`` bool: ``positive[i, j]`` when
        ``i != j`` and the labels match; ``negative[i, j]`` when the labels differ.
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every ordered positive and negative pair: ``(anchor1, positive, anchor2, negative)``."""
    pos, neg = label_masks(labels)
    a1, p = torch.nonzero(pos, as_tuple=True)
    a2, n = torch.nonzero(neg, as_tuple=True)
    return a1, p, a2, n


def all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every valid triplet: ``a != p`` with ``label[a] == label[p] != label[n]``."""
    pos, neg = label_masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    a, p, n = torch.nonzero(valid, as_tuple=True)
    return a, p, n


def _empty_triplets(device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    e = torch.empty(0, dtype=torch.int64, device=device)
    return e, e.clone(), e.clone()


# ----------------------------------------------------------------------------- pure mining functions
def semihard_triplets(dist: torch.Tensor, labels: torch.Tensor, margin: float,
                      select: str = "all",
                      generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FaceNet semi-hard triplets: ``d(a,p) < d(a,n) < d(a,p) + margin``.

    Such negatives are farther than the positive (so not "hard") but still inside
    the margin, so the triplet loss is positive for them (Schroff et al. 2015, Sec. 3.2).

    Args:
        dist: ``(B, B)`` float distances, smaller = closer.
        labels: ``(B,)`` integer labels.
        margin: the triplet margin (same units as ``dist``).
        select: ``all`` (every semi-hard triplet), ``hardest`` (per anchor-positive
            pair, the semi-hard negative closest to the anchor, as TensorFlow's
            ``triplet_semihard_loss`` picks it), or ``random`` (one semi-hard negative
            per anchor-positive pair, drawn uniformly, as FaceNet describes).
        generator: torch random generator for ``select="random"``.

    Returns:
        ``(anchor, positive, negative)`` int64 tensors; pairs with no semi-hard
        negative contribute nothing.
    """
    _check_labels(dist, labels)
    pos, neg = label_masks(labels)
    d_ap = dist[:, :, None]
    d_an = dist[:, None, :]
    valid = pos[:, :, None] & neg[:, None, :] & (d_an > d_ap) & (d_an < d_ap + margin)
    if select == "all":
        return torch.nonzero(valid, as_tuple=True)
    if select not in ("hardest", "random"):
        raise ConfigError(f"unknown select {select!r}; valid: all, hardest, random")
    has = valid.any(dim=2)
    a, p = torch.nonzero(has, as_tuple=True)
    if a.numel() == 0:
        return _empty_triplets(dist.device)
    cand = valid[a, p]  # (num_pairs, B)
    if select == "hardest":
        scores = dist[a].masked_fill(~cand, float("inf"))
        n = scores.argmin(dim=1)
    else:
        weights = cand.to(torch.float64)
        n = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return a, p, n


def hard_triplets(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hardest negative per anchor-positive pair, kept only for hard positives.

    For each positive pair ``(a, p)`` the negative ``n* = argmin_n d(a, n)`` (the
    anchor's nearest other-class item) is chosen; the triplet is kept when the
    positive is "hard" relative to it: ``d(a, n*) < d(a, p) + margin``. With
    ``margin = 0`` that means the positive is farther than the nearest negative (the
    anchor would be misranked); with the loss margin it means the triplet is active.

    Args:
        dist: ``(B, B)`` float distances, smaller = closer.
        labels: ``(B,)`` integer labels.
        margin: slack added to ``d(a, p)``, same units as ``dist``.

    Returns:
        ``(anchor, positive, negative)`` int64 tensors.
    """
    _check_labels(dist, labels)
    pos, neg = label_masks(labels)
    has_neg = neg.any(dim=1)
    nearest_neg = dist.masked_fill(~neg, float("inf")).argmin(dim=1)  # (B,)
    d_an = dist.gather(1, nearest_neg[:, None])  # (B, 1)
    keep = pos & has_neg[:, None] & (d_an < dist + margin)
    a, p = torch.nonzero(keep, as_tuple=True)
    return a, p, nearest_neg[a]


def batch_hard_triplets(dist: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard triplets (Hermans et al. 2017): one per anchor.

    For each anchor with at least one positive and one negative: the farthest
    positive and the closest negative. Ties go to the lowest index.

    Args:
        dist: ``(B, B)`` float distances, smaller = closer.
        labels: ``(B,)`` integer labels.

    Returns:
        ``(anchor, positive, negative)`` int64 tensors, anchors ascending.
    """
    _check_labels(dist, labels)
    pos, neg = label_masks(labels)
    anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1), as_tuple=True)[0]
    hardest_pos = dist.masked_fill(~pos, float("-inf")).argmax(dim=1)
    hardest_neg = dist.masked_fill(~neg, float("inf")).argmin(dim=1)
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def random_triplets(labels: torch.Tensor, triplets_per_anchor: int = 1,
                    generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random valid triplets: per anchor, ``triplets_per_anchor`` draws of (p, n).

    Positives and negatives are drawn uniformly (with replacement) among the
    anchor's valid ones; anchors without a positive or a negative are skipped.

    Args:
        labels: ``(B,)`` integer labels.
        triplets_per_anchor: draws per anchor.
        generator: torch random generator (seeded for determinism).

    Returns:
        ``(anchor, positive, negative)`` int64 tensors, anchors ascending.
    """
    if triplets_per_anchor < 1:
        raise ConfigError(f"triplets_per_anchor must be >= 1, got {triplets_per_anchor}")
    pos, neg = label_masks(labels)
    anchors = torch.nonzero(pos.any(dim=1) & neg.any(dim=1), as_tuple=True)[0]
    if anchors.numel() == 0:
        return _empty_triplets(labels.device)
    t = int(triplets_per_anchor)
    p = torch.multinomial(pos[anchors].to(torch.float64), t, replacement=True,
                          generator=generator)
    n = torch.multinomial(neg[anchors].to(torch.float64), t, replacement=True,
                          generator=generator)
    return anchors.repeat_interleave(t), p.reshape(-1), n.reshape(-1)


def margin_pairs(dist: torch.Tensor, labels: torch.Tensor, pos_margin: float,
                 neg_margin: float) -> tuple[torch.Tensor, ...]:
    """Pairs that still violate a contrastive margin.

    Positive pairs with ``d > pos_margin`` (not yet close enough) and negative pairs
    with ``d < neg_margin`` (not yet far enough): exactly the pairs with a non-zero
    contrastive loss.

    Args:
        dist: ``(B, B)`` float distances, smaller = closer.
        labels: ``(B,)`` integer labels.
        pos_margin, neg_margin: the contrastive margins, same units as ``dist``.

    Returns:
        ``(anchor1, positive, anchor2, negative)`` int64 tensors.
    """
    _check_labels(dist, labels)
    pos, neg = label_masks(labels)
    a1, p = torch.nonzero(pos & (dist > pos_margin), as_tuple=True)
    a2, n = torch.nonzero(neg & (dist < neg_margin), as_tuple=True)
    return a1, p, a2, n


# ----------------------------------------------------------------------------- miner classes
class Miner:
    """Base miner: embeddings -> distance matrix (no gradient) -> index tuple.

    Args:
        distance: ``euclidean``, ``squared_euclidean`` or ``cosine``; use the same
            distance (and normalisation) as the loss the tuples feed.
        normalize: L2-normalise embeddings before computing distances (the losses'
            default too).
    """

    def __init__(self, distance: str = "euclidean", normalize: bool = True):
        self.distance = check_distance(distance)
        self.normalize = bool(normalize)

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, B)`` distances of a batch, computed without gradient."""
        if embeddings.ndim != 2:
            raise InputError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
        with torch.no_grad():
            x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
            return pairwise_distances(x.detach(), self.distance)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mine index tuples from ``embeddings (B, D)`` and ``labels (B,)``."""
        labels = torch.as_tensor(labels, device=embeddings.device)
        return self.mine(self.distances(embeddings), labels)

    def mine(self, dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Index tuples from a ``(B, B)`` distance matrix; implemented by subclasses."""
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class RandomMiner(Miner):
    """Random valid triplets (a baseline): see :func:`random_triplets`.

    Args:
        triplets_per_anchor: draws per anchor.
        seed: seed of the miner's own generator (deterministic sequence of draws).
    """

    def __init__(self, triplets_per_anchor: int = 1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.triplets_per_anchor = int(triplets_per_anchor)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, embeddings, labels):
        # Random triplets do not need distances.
        labels = torch.as_tensor(labels)
        return random_triplets(labels.cpu(), self.triplets_per_anchor, self._generator)

    def mine(self, dist, labels):
        return random_triplets(labels.cpu(), self.triplets_per_anchor, self._generator)


class SemiHardMiner(Miner):
    """FaceNet semi-hard triplets ``d(a,p) < d(a,n) < d(a,p) + margin``.

    Args:
        margin: the triplet loss margin, in the miner's distance units.
        select: ``all``, ``hardest`` or ``random`` (see :func:`semihard_triplets`).
        seed: generator seed for ``select="random"``.
    """

    def __init__(self, margin: float = 0.2, select: str = "all", seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if select not in ("all", "hardest", "random"):
            raise ConfigError(f"unknown select {select!r}; valid: all, hardest, random")
        self.margin = float(margin)
        self.select = select
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def mine(self, dist, labels):
        gen = self._generator if dist.device.type == "cpu" else None
        return semihard_triplets(dist, labels, self.margin, self.select, gen)


class HardMiner(Miner):
    """Hardest negative per anchor-positive pair, for hard positives only.

    See :func:`hard_triplets`; ``margin=0`` keeps triplets whose negative is
    closer than the positive.
    """

    def __init__(self, margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def mine(self, dist, labels):
        return hard_triplets(dist, labels, self.margin)


class BatchHardMiner(Miner):
    """Per anchor: the hardest positive and the hardest negative (Hermans et al. 2017)."""

    def mine(self, dist, labels):
        return batch_hard_triplets(dist, labels)


class PairMarginMiner(Miner):
    """Pair miner for the contrastive loss: the pairs that still violate its margins.

    Args:
        pos_margin: positive pairs farther than this are kept.
        neg_margin: negative pairs closer than this are kept.
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def mine(self, dist, labels):
        return margin_pairs(dist, labels, self.pos_margin, self.neg_margin)
