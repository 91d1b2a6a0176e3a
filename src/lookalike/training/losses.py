"""Metric-learning losses as small ``torch.nn.Module``s.

Every loss is called as ``loss(embeddings, labels, indices_tuple=None)`` with
``embeddings (B, D)`` float and ``labels (B,)`` integer, and returns a scalar tensor.
Two families:

* **pair-based** (no parameters of their own): :class:`ContrastiveLoss`,
  :class:`NTXentLoss`, :class:`TripletMarginLoss`, :class:`QuadrupletLoss`,
  :class:`MultiSimilarityLoss`, :class:`SupConLoss`. They accept an optional
  ``indices_tuple`` from a miner (:mod:`lookalike.training.miners`): triplets
  ``(anchor, positive, negative)`` or pairs ``(anchor1, positive, anchor2, negative)``.
* **proxy / classification-based** (own learned weights, built with ``num_classes``
  and ``embedding_size``): :class:`ProxyNCALoss`, :class:`SoftmaxLoss`,
  :class:`CenterLoss`, :class:`NormalizedSoftmaxLoss`, :class:`SphereFaceLoss`,
  :class:`CosFaceLoss`, :class:`ArcFaceLoss`, :class:`CombinedMarginLoss`. Their
  weights are ordinary ``nn.Parameter``s (``weight (C, D)``, plus ``bias``,
  ``centers`` or ``proxies``), so ``optimizer = SGD([*model.parameters(),
  *loss.parameters()])`` trains them; ``needs_num_classes`` is ``True`` on these
  classes and ``get_logits(embeddings)`` gives plain ``(B, C)`` class scores (no margin)
  for accuracy or prediction.

Distances are "smaller = closer" (``euclidean``, ``squared_euclidean``, ``cosine`` =
``1 - cos``); similarities (cosine) are "larger = closer". Parameters carry the
names of their papers (``pos_margin``, ``temperature``, ``alpha``/``beta``/``base``,
``s``, ``m``...). :func:`make_loss` builds any loss from a short name.

Reductions: pair/triplet losses take ``reduction`` = ``mean`` (over all terms),
``mean_nonzero`` (over terms > 0, pytorch-metric-learning's default "AvgNonZero"
and what Hermans et al. 2017 recommend for batch-all) or ``sum``.
"""
from __future__ import annotations

import inspect
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lookalike.errors import ConfigError, InputError

from .miners import (
    all_pairs,
    batch_hard_triplets,
    check_distance,
    label_masks,
    pairwise_distances,
)

REDUCTIONS = ("mean", "mean_nonzero", "sum")


# ----------------------------------------------------------------------------- helpers
def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Validate shapes/dtypes; return labels as int64 on the embeddings' device."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        got = getattr(embeddings, "shape", type(embeddings))
        raise InputError(f"embeddings must be a (B, D) tensor, got {got}")
    if not embeddings.is_floating_point():
        raise InputError(f"embeddings must be floating point, got {embeddings.dtype}")
    labels = torch.as_tensor(labels, device=embeddings.device)
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise InputError(f"labels must be (B,) = ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"labels must be integers, got {labels.dtype}")
    return labels.long()


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    """A 0 that stays connected to the graph (``backward`` works, gradients are 0)."""
    return embeddings.sum() * 0.0


def _reduce(losses: torch.Tensor, reduction: str, embeddings: torch.Tensor) -> torch.Tensor:
    if losses.numel() == 0:
        return _zero(embeddings)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    active = losses > 0
    return losses[active].mean() if bool(active.any()) else losses.sum() * 0.0


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    return reduction


def _as_pairs(indices_tuple, labels) -> tuple[torch.Tensor, ...]:
    """Miner output -> ``(a1, p, a2, n)``; ``None`` means every pair of the batch."""
    if indices_tuple is None:
        return all_pairs(labels)
    if len(indices_tuple) == 4:
        return tuple(torch.as_tensor(t, device=labels.device).long() for t in indices_tuple)
    if len(indices_tuple) == 3:
        a, p, n = (torch.as_tensor(t, device=labels.device).long() for t in indices_tuple)
        return a, p, a, n
    raise InputError(f"indices_tuple must have 3 (triplets) or 4 (pairs) tensors, got {len(indices_tuple)}")


def _pair_counts(indices_tuple, labels, size: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, B)`` float counts of how often each positive / negative pair is used."""
    if indices_tuple is None:
        pos, neg = label_masks(labels)
        return pos.to(dtype), neg.to(dtype)
    a1, p, a2, n = _as_pairs(indices_tuple, labels)
    pos = torch.zeros(size, size, dtype=dtype, device=labels.device)
    neg = torch.zeros_like(pos)
    pos.index_put_((a1, p), torch.ones_like(a1, dtype=dtype), accumulate=True)
    neg.index_put_((a2, n), torch.ones_like(a2, dtype=dtype), accumulate=True)
    return pos, neg


def _reduce_weighted(losses: torch.Tensor, counts: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a ``(B, B)`` loss matrix over the pairs in ``counts`` (each counted that often)."""
    total = (losses * counts).sum()
    if reduction == "sum":
        return total
    n = counts.sum() if reduction == "mean" else (counts * (losses > 0)).sum()
    return total / n.clamp_min(1.0)  # no pairs: total is an (attached) 0


def _pair_masks(indices_tuple, labels, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, B)`` bool masks of the positive and negative pairs to use."""
    if indices_tuple is None:
        return label_masks(labels)
    a1, p, a2, n = _as_pairs(indices_tuple, labels)
    pos = torch.zeros(size, size, dtype=torch.bool, device=labels.device)
    neg = torch.zeros_like(pos)
    pos[a1, p] = True
    neg[a2, n] = True
    return pos, neg


def _masked_fill_min(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # The dtype's most negative finite value rather than -inf: exp() of it is 0 and,
    # unlike -inf, a fully masked row cannot turn a logsumexp gradient into NaN.
    return x.masked_fill(~keep, torch.finfo(x.dtype).min)


def _cosine_logits(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` cosines between embeddings and class weight rows."""
    return F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=1).T


class _Loss(nn.Module):
    """Common base: the ``needs_num_classes`` flag and a readable repr."""

    needs_num_classes: ClassVar[bool] = False
    _repr_params: ClassVar[tuple[str, ...]] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._repr_params)


class _ClassificationLoss(_Loss):
    """Base of losses with a learned ``weight (num_classes, embedding_size)``."""

    needs_num_classes = True

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        if int(num_classes) < 1 or int(embedding_size) < 1:
            raise ConfigError(
                f"num_classes and embedding_size must be >= 1, got {num_classes}, {embedding_size}")
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        # Small random class directions; norms do not matter for the cosine losses.
        nn.init.normal_(self.weight, std=0.01)

    def _check(self, embeddings, labels) -> torch.Tensor:
        labels = _check_batch(embeddings, labels)
        if embeddings.shape[1] != self.embedding_size:
            raise InputError(
                f"embeddings have dim {embeddings.shape[1]}, this loss expects {self.embedding_size}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InputError(f"labels must lie in [0, {self.num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        return labels

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Plain class scores ``(B, C)`` (no margin), larger = more likely."""
        raise NotImplementedError


# ============================================================================= pair-based
class ContrastiveLoss(_Loss):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006), margins in distance units.

    ``L = reduce_pos(relu(d(a,p) - pos_margin)) + reduce_neg(relu(neg_margin - d(a,n)))``:
    positives are pulled within ``pos_margin``, negatives pushed beyond ``neg_margin``.
    The two kinds of pairs are reduced separately and added, so the many negatives
    of a batch do not drown the few positives (pytorch-metric-learning's layout).
    Distances are plain (not squared) unless ``distance="squared_euclidean"``.

    Args:
        pos_margin: positive pairs closer than this cost nothing.
        neg_margin: negative pairs farther than this cost nothing.
        distance: ``euclidean`` | ``squared_euclidean`` | ``cosine``.
        normalize: L2-normalise embeddings first.
        reduction: ``mean`` | ``mean_nonzero`` | ``sum``.
    """

    _repr_params = ("pos_margin", "neg_margin", "distance", "normalize", "reduction")

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0,
                 distance: str = "euclidean", normalize: bool = True, reduction: str = "mean"):
        super().__init__()
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.distance = check_distance(distance)
        self.normalize = bool(normalize)
        self.reduction = _check_reduction(reduction)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        dist = pairwise_distances(x, self.distance)
        pos_count, neg_count = _pair_counts(indices_tuple, labels, dist.shape[0], dist.dtype)
        # Whole-matrix form weighted by pair counts: much faster than gathering index
        # lists (the backward of a gather is a scatter), and exact for repeated pairs.
        pos_loss = F.relu(dist - self.pos_margin)
        neg_loss = F.relu(self.neg_margin - dist)
        return (_reduce_weighted(pos_loss, pos_count, self.reduction)
                + _reduce_weighted(neg_loss, neg_count, self.reduction))


class NTXentLoss(_Loss):
    """NT-Xent / InfoNCE with in-batch negatives (SimCLR; Oord et al. 2018).

    For each positive pair ``(a, p)``, with cosine similarity ``s`` and temperature
    ``t``: ``-log(exp(s_ap/t) / (exp(s_ap/t) + sum_{n in N(a)} exp(s_an/t)))``, where
    ``N(a)`` are the anchor's negatives (other labels). Averaged over positive pairs.
    With two views per label this is SimCLR's NT-Xent exactly; with more, other
    positives are left out of the denominator (as pytorch-metric-learning does; see
    :class:`SupConLoss` for the variant that keeps them). With mined pairs, each given
    positive pair is one term and the anchor's given negatives form its denominator
    (a negative pair listed twice counts once).

    Args:
        temperature: softmax temperature ``t`` (> 0).
    """

    _repr_params = ("temperature",)

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1)
        sim = (x @ x.T) / self.temperature
        a1, p, a2, n = _as_pairs(indices_tuple, labels)
        if a1.numel() == 0:
            return _zero(embeddings)
        neg = torch.zeros_like(sim, dtype=torch.bool)
        neg[a2, n] = True
        lse_neg = torch.logsumexp(_masked_fill_min(sim, neg), dim=1)  # (B,)
        s_ap = sim[a1, p]
        losses = torch.logaddexp(s_ap, lse_neg[a1]) - s_ap
        return losses.mean()


class TripletMarginLoss(_Loss):
    """Triplet margin loss ``relu(d(a,p) - d(a,n) + margin)`` (Schroff et al. 2015).

    Which triplets: the ``(anchor, positive, negative)`` triplets of ``indices_tuple``
    when a miner gives them, else ``strategy``:

    * ``batch-all``: every valid triplet of the batch;
    * ``batch-hard``: per anchor, its farthest positive and closest negative
      (Hermans, Beyer & Leibe 2017).

    Args:
        margin: desired gap ``d(a,n) - d(a,p)``, in distance units.
        strategy: ``batch-all`` | ``batch-hard`` (ignored when triplets are given).
        distance: ``euclidean`` | ``squared_euclidean`` | ``cosine``.
        normalize: L2-normalise embeddings first.
        reduction: ``mean`` | ``mean_nonzero`` | ``sum`` over the triplets.
    """

    STRATEGIES = ("batch-all", "batch-hard")
    _repr_params = ("margin", "strategy", "distance", "normalize", "reduction")

    def __init__(self, margin: float = 0.2, strategy: str = "batch-all",
                 distance: str = "euclidean", normalize: bool = True, reduction: str = "mean"):
        super().__init__()
        if strategy not in self.STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(self.STRATEGIES)}")
        self.margin = float(margin)
        self.strategy = strategy
        self.distance = check_distance(distance)
        self.normalize = bool(normalize)
        self.reduction = _check_reduction(reduction)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        dist = pairwise_distances(x, self.distance)
        if indices_tuple is not None:
            if len(indices_tuple) != 3:
                raise InputError("TripletMarginLoss needs (anchor, positive, negative) triplets")
            a, p, n = (torch.as_tensor(t, device=labels.device).long() for t in indices_tuple)
            losses = F.relu(dist[a, p] - dist[a, n] + self.margin)
        elif self.strategy == "batch-hard":
            a, p, n = batch_hard_triplets(dist.detach(), labels)
            losses = F.relu(dist[a, p] - dist[a, n] + self.margin)
        else:
            pos, neg = label_masks(labels)
            a, p = torch.nonzero(pos, as_tuple=True)
            # (positive pairs, B) rather than (B, B, B): only ~1/B of the cube is valid.
            losses = F.relu(dist[a, p][:, None] - dist[a] + self.margin)[neg[a]]
        return _reduce(losses, self.reduction, embeddings)


class QuadrupletLoss(_Loss):
    """Quadruplet loss (Chen, Chen, Zhang & Huang, "Beyond triplet loss", CVPR 2017).

    For a quadruplet ``(i, j, k, l)`` with ``label_i == label_j`` (``i != j``),
    ``label_k != label_i``, ``label_l`` different from both ``label_i`` and
    ``label_k``::

        [d(i,j) - d(i,k) + alpha1]_+  +  [d(i,j) - d(l,k) + alpha2]_+

    The first term is the triplet loss; the second pushes the positive distance
    below the distance of a pair of *other* classes that share nothing with the
    anchor, which shrinks intra-class variation relative to inter-class distance
    globally. The paper uses squared distances and ``alpha1 > alpha2`` (1.0 and 0.5).

    Which quadruplets: given ``indices_tuple = (i, j, k, l)``, else ``strategy``:

    * ``batch-all``: every valid quadruplet of the batch (mean over them);
    * ``batch-hard``: per anchor ``i``, its farthest positive ``j``, closest negative
      ``k`` for the first term and the closest pair ``(k', l')`` of two other
      different classes (both unlike ``i``) for the second term (the paper's online
      hard mining, one quadruplet per anchor).

    Args:
        alpha1: margin of the triplet term.
        alpha2: margin of the second (negative-pair) term.
        strategy: ``batch-all`` | ``batch-hard``.
        distance: ``squared_euclidean`` (paper) | ``euclidean`` | ``cosine``.
        normalize: L2-normalise embeddings first.
        reduction: ``mean`` | ``mean_nonzero`` | ``sum`` over quadruplets.
    """

    STRATEGIES = ("batch-all", "batch-hard")
    _repr_params = ("alpha1", "alpha2", "strategy", "distance", "normalize", "reduction")

    def __init__(self, alpha1: float = 1.0, alpha2: float = 0.5, strategy: str = "batch-all",
                 distance: str = "squared_euclidean", normalize: bool = True,
                 reduction: str = "mean"):
        super().__init__()
        if strategy not in self.STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(self.STRATEGIES)}")
        self.alpha1 = float(alpha1)
        self.alpha2 = float(alpha2)
        self.strategy = strategy
        self.distance = check_distance(distance)
        self.normalize = bool(normalize)
        self.reduction = _check_reduction(reduction)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        dist = pairwise_distances(x, self.distance)
        if indices_tuple is not None:
            if len(indices_tuple) != 4:
                raise InputError("QuadrupletLoss needs (anchor, positive, negative, negative2)")
            i, j, k, l = (torch.as_tensor(t, device=labels.device).long() for t in indices_tuple)
            losses = (F.relu(dist[i, j] - dist[i, k] + self.alpha1)
                      + F.relu(dist[i, j] - dist[l, k] + self.alpha2))
        elif self.strategy == "batch-hard":
            losses = self._batch_hard(dist, labels)
        else:
            losses = self._batch_all(dist, labels)
        return _reduce(losses, self.reduction, embeddings)

    def _batch_all(self, dist, labels):
        pos, neg = label_masks(labels)
        i, j = torch.nonzero(pos, as_tuple=True)   # positive pairs (P,)
        k, l = torch.nonzero(neg, as_tuple=True)   # ordered pairs of different labels (N,)
        if i.numel() == 0 or k.numel() == 0:
            return dist.new_zeros(0)
        li = labels[i][:, None]
        valid = (labels[k][None, :] != li) & (labels[l][None, :] != li)  # (P, N)
        d_ij = dist[i, j][:, None]
        term1 = F.relu(d_ij - dist[i][:, k] + self.alpha1)          # d(i, k) per (pair, pair)
        term2 = F.relu(d_ij - dist[l, k][None, :] + self.alpha2)
        return (term1 + term2)[valid]

    def _batch_hard(self, dist, labels):
        pos, neg = label_masks(labels)
        d = dist.detach()
        anchors, hp, hn = batch_hard_triplets(d, labels)
        if anchors.numel() == 0:
            return dist.new_zeros(0)
        # Per anchor: the closest pair (k', l') of different labels, both unlike the anchor.
        outside = neg[anchors]                                         # (A, B)
        pair_ok = neg[None, :, :] & outside[:, :, None] & outside[:, None, :]  # (A, B, B)
        has_pair = pair_ok.flatten(1).any(dim=1)
        flat = d[None].expand(anchors.numel(), -1, -1).masked_fill(~pair_ok, float("inf"))
        best = flat.flatten(1).argmin(dim=1)
        kk, ll = best // d.shape[0], best % d.shape[0]
        anchors, hp, hn, kk, ll = (t[has_pair] for t in (anchors, hp, hn, kk, ll))
        return (F.relu(dist[anchors, hp] - dist[anchors, hn] + self.alpha1)
                + F.relu(dist[anchors, hp] - dist[ll, kk] + self.alpha2))


class MultiSimilarityLoss(_Loss):
    """Multi-similarity loss (Wang et al., CVPR 2019), all pairs in matrix form.

    With cosine similarities ``S``, per anchor ``i`` (positives ``P_i``, negatives
    ``N_i``)::

        1/alpha * log(1 + sum_{P_i} exp(-alpha (S_ip - base)))
      + 1/beta  * log(1 + sum_{N_i} exp( beta (S_in - base)))

    averaged over the batch. The paper's pair mining (its epsilon step) is left to a
    miner: pass its pairs as ``indices_tuple``.

    Args:
        alpha: positive-pair weight (paper: 2).
        beta: negative-pair weight (paper: 50).
        base: similarity offset ``lambda`` of the paper (0.5).
    """

    _repr_params = ("alpha", "beta", "base")

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5):
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ConfigError(f"alpha and beta must be > 0, got {alpha}, {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1)
        sim = x @ x.T
        pos, neg = _pair_masks(indices_tuple, labels, sim.shape[0])
        zeros = sim.new_zeros(sim.shape[0], 1)  # the "1 +" inside the log
        pos_term = torch.logsumexp(
            torch.cat([_masked_fill_min(-self.alpha * (sim - self.base), pos), zeros], 1), 1)
        neg_term = torch.logsumexp(
            torch.cat([_masked_fill_min(self.beta * (sim - self.base), neg), zeros], 1), 1)
        return (pos_term / self.alpha + neg_term / self.beta).mean()


class SupConLoss(_Loss):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020; the ``L_out`` form).

    With cosine similarities ``S`` and temperature ``t``, for each anchor ``i`` that
    has positives ``P(i)``::

        -1/|P(i)| * sum_{p in P(i)} log( exp(S_ip/t) / sum_{a != i} exp(S_ia/t) )

    averaged over those anchors. Given pairs ``indices_tuple``, only the mined positives
    and negatives enter the sums.

    Args:
        temperature: softmax temperature ``t`` (> 0).
    """

    _repr_params = ("temperature",)

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1)
        sim = (x @ x.T) / self.temperature
        pos, neg = _pair_masks(indices_tuple, labels, sim.shape[0])
        n_pos = pos.sum(dim=1)
        anchors = n_pos > 0
        if not bool(anchors.any()):
            return _zero(embeddings)
        log_denominator = torch.logsumexp(_masked_fill_min(sim, pos | neg), dim=1, keepdim=True)
        log_prob = sim - log_denominator
        mean_log_prob_pos = (log_prob * pos).sum(dim=1)[anchors] / n_pos[anchors]
        return -mean_log_prob_pos.mean()


# ============================================================================= proxy-based
class ProxyNCALoss(_ClassificationLoss):
    """Proxy-NCA (Movshovitz-Attias et al., ICCV 2017), softmax-over-proxies form.

    One learned proxy per class (``proxies (C, D)``). With L2-normalised embedding
    ``x`` and proxies ``p_c``, the logits are ``-softmax_scale * |x - p_c|^2`` and the
    loss is their cross entropy with the label. ``softmax_scale`` is the inverse
    temperature of Proxy-NCA++ (Teh et al. 2020, who found 1/0.11 ~ 9 works well).

    The original paper leaves the positive proxy out of the denominator
    (``include_positive=False``); that loss can go negative and unbounded, which is why
    later work (and pytorch-metric-learning) use the plain softmax (the default).

    Args:
        num_classes, embedding_size: proxy table shape.
        softmax_scale: multiplies the negative squared distances.
        include_positive: keep the positive proxy in the softmax denominator.
    """

    _repr_params = ("num_classes", "embedding_size", "softmax_scale", "include_positive")

    def __init__(self, num_classes: int, embedding_size: int, softmax_scale: float = 1.0,
                 include_positive: bool = True):
        super().__init__(num_classes, embedding_size)
        # The proxies *are* the weight matrix; "proxies" is the name in the papers.
        nn.init.normal_(self.weight)
        self.softmax_scale = float(softmax_scale)
        self.include_positive = bool(include_positive)

    @property
    def proxies(self) -> nn.Parameter:
        """``(C, D)`` learned proxies (the same tensor as ``weight``)."""
        return self.weight

    def get_logits(self, embeddings):
        # |x - p|^2 = 2 - 2 cos for unit vectors.
        sq = (2.0 - 2.0 * _cosine_logits(embeddings, self.weight)).clamp_min(0.0)
        return -self.softmax_scale * sq

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        logits = self.get_logits(embeddings)
        if self.include_positive:
            return F.cross_entropy(logits, labels)
        target = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], torch.finfo(logits.dtype).min)
        return (torch.logsumexp(others, dim=1) - target).mean()


# ============================================================================= classification-based
class SoftmaxLoss(_ClassificationLoss):
    """Plain softmax classifier baseline: linear layer (``weight (C, D)``, ``bias (C,)``)
    then cross entropy.

    Args:
        num_classes, embedding_size: classifier shape.
        bias: learn a bias per class.
    """

    _repr_params = ("num_classes", "embedding_size")

    def __init__(self, num_classes: int, embedding_size: int, bias: bool = True):
        super().__init__(num_classes, embedding_size)
        linear = nn.Linear(embedding_size, num_classes, bias=bias)  # torch's default init
        self.weight = linear.weight
        self.bias = linear.bias

    def get_logits(self, embeddings):
        return F.linear(embeddings, self.weight, self.bias)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        return F.cross_entropy(self.get_logits(embeddings), labels)


class CenterLoss(SoftmaxLoss):
    """Softmax + centre loss (Wen, Zhang, Li & Qiao, ECCV 2016).

    ``L = CE(W x + b, y) + lambda_c / 2 * mean_i |x_i - c_{y_i}|^2``, with one
    learned centre per class in ``centers (C, D)`` (both terms are batch means, so
    ``lambda_c`` keeps the paper's meaning; the paper used 0.003 for faces).

    How the centres learn: they are plain ``nn.Parameter``s updated by the optimizer
    through the gradient of the centre term, ``dL/dc_j = -(lambda_c / B) * sum_{i: y_i=j}
    (x_i - c_j)``. The paper instead updates ``c_j -= alpha * sum_{i: y_i=j}(c_j - x_i)
    / (1 + n_j)`` with its own rate ``alpha`` (0.5). Plain SGD on our loss matches that
    when the centres get their own learning rate ``lr_c = alpha * B / (lambda_c * (1 + n_j))``;
    with P x K batches ``n_j = K`` for every class present, so one rate fits:
    ``param_groups(lr, center_lr=...)`` builds those optimizer groups. Centres must
    not be weight-decayed.

    Args:
        num_classes, embedding_size: classifier and centre table shape.
        lambda_c: weight ``lambda`` of the centre term.
        bias: learn a classifier bias.
    """

    _repr_params = ("num_classes", "embedding_size", "lambda_c")

    def __init__(self, num_classes: int, embedding_size: int, lambda_c: float = 0.003,
                 bias: bool = True):
        super().__init__(num_classes, embedding_size, bias=bias)
        self.lambda_c = float(lambda_c)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_size))

    def center_term(self, embeddings, labels) -> torch.Tensor:
        """``1/2 * mean_i |x_i - c_{y_i}|^2`` (without ``lambda_c``)."""
        diff = embeddings - self.centers[labels]
        return 0.5 * (diff * diff).sum(dim=1).mean()

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        softmax = F.cross_entropy(self.get_logits(embeddings), labels)
        return softmax + self.lambda_c * self.center_term(embeddings, labels)

    @staticmethod
    def center_lr_from_alpha(alpha: float, lambda_c: float, batch_size: int, k: int) -> float:
        """SGD rate for the centres that reproduces the paper's update rate ``alpha``
        with P x K batches: ``alpha * B / (lambda_c * (1 + K))``."""
        return float(alpha) * batch_size / (float(lambda_c) * (1 + k))

    def param_groups(self, lr: float, center_lr: float) -> list[dict]:
        """Optimizer groups: classifier weights at ``lr``, centres at ``center_lr``
        with no weight decay."""
        classifier = [p for name, p in self.named_parameters() if name != "centers"]
        return [{"params": classifier, "lr": lr},
                {"params": [self.centers], "lr": center_lr, "weight_decay": 0.0}]


class NormalizedSoftmaxLoss(_ClassificationLoss):
    """NormFace (Wang et al., ACM MM 2017): softmax over ``s * cos(x, w_c)``.

    Features and class weights are L2-normalised and there is no bias; the scale
    ``s`` replaces the lost norm (the paper shows ``s`` must be large enough for the
    loss to go low). pytorch-metric-learning's ``NormalizedSoftmaxLoss`` is the same
    with ``temperature = 1 / s``.

    Args:
        num_classes, embedding_size: weight shape.
        s: logit scale.
    """

    _repr_params = ("num_classes", "embedding_size", "s")

    def __init__(self, num_classes: int, embedding_size: int, s: float = 16.0):
        super().__init__(num_classes, embedding_size)
        self.s = float(s)

    def get_logits(self, embeddings):
        return self.s * _cosine_logits(embeddings, self.weight)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        return F.cross_entropy(self.get_logits(embeddings), labels)


def _cos_multiple_angle(c: torch.Tensor, m: int) -> torch.Tensor:
    """``cos(m * theta)`` from ``c = cos(theta)`` via Chebyshev polynomials ``T_m(c)``.

    Exact polynomial (as SphereFace's own code), so the gradient stays finite at
    ``theta = 0`` where ``acos`` would blow up.
    """
    prev, cur = torch.ones_like(c), c
    if m == 0:
        return prev
    for _ in range(m - 1):
        prev, cur = cur, 2.0 * c * cur - prev
    return cur


class SphereFaceLoss(_ClassificationLoss):
    """SphereFace / A-Softmax (Liu et al., CVPR 2017): multiplicative angular margin.

    Class weights are normalised, features keep their norm. With ``theta`` the angle to
    the target class weight, the target logit is ``|x| * psi(theta)`` where::

        psi(theta) = (-1)^k cos(m theta) - 2k,   theta in [k pi/m, (k+1) pi/m],  k in 0..m-1

    (monotonically decreasing on ``[0, pi]``, unlike ``cos(m theta)``); other logits
    are ``|x| cos(theta_j)``. ``cos(m theta)`` is the Chebyshev polynomial of
    ``cos(theta)``.

    Optional lambda annealing of the original Caffe code: the target logit becomes
    ``|x| (lambda cos(theta) + psi(theta)) / (1 + lambda)`` with
    ``lambda = max(lambda_min, lambda_base * (1 + lambda_gamma * iteration) ** -lambda_power)``
    (paper defaults 1000, 0.12, 1, 5), starting near plain softmax and tightening the
    margin as training goes; ``iteration`` counts training-mode forward calls (a
    buffer, saved in ``state_dict``). With annealing off (default), ``lambda = 0``.

    Args:
        num_classes, embedding_size: weight shape.
        m: integer angular margin (paper: 4).
        lambda_annealing: use the lambda schedule above.
        lambda_base, lambda_gamma, lambda_power, lambda_min: its parameters.
    """

    _repr_params = ("num_classes", "embedding_size", "m", "lambda_annealing")

    def __init__(self, num_classes: int, embedding_size: int, m: int = 4,
                 lambda_annealing: bool = False, lambda_base: float = 1000.0,
                 lambda_gamma: float = 0.12, lambda_power: float = 1.0, lambda_min: float = 5.0):
        super().__init__(num_classes, embedding_size)
        if int(m) != m or m < 1:
            raise ConfigError(f"SphereFace margin m must be a positive integer, got {m}")
        self.m = int(m)
        self.lambda_annealing = bool(lambda_annealing)
        self.lambda_base = float(lambda_base)
        self.lambda_gamma = float(lambda_gamma)
        self.lambda_power = float(lambda_power)
        self.lambda_min = float(lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64))

    def current_lambda(self) -> float:
        """The annealing weight for the current ``iteration`` (0 when annealing is off)."""
        if not self.lambda_annealing:
            return 0.0
        lam = self.lambda_base * (1.0 + self.lambda_gamma * int(self.iteration)) ** (-self.lambda_power)
        return max(self.lambda_min, lam)

    def psi(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """``psi(theta)`` from ``cos(theta)`` (any shape)."""
        c = cos_theta.clamp(-1.0, 1.0)
        with torch.no_grad():  # k is piecewise constant: no gradient through it
            k = torch.floor(torch.acos(c) * self.m / math.pi).clamp_(0, self.m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (-1)^k
        return sign * _cos_multiple_angle(c, self.m) - 2.0 * k

    def get_logits(self, embeddings):
        norms = embeddings.norm(dim=1, keepdim=True)
        return norms * _cosine_logits(embeddings, self.weight)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        lam = self.current_lambda()
        if self.training and self.lambda_annealing:
            self.iteration += 1
        cos = _cosine_logits(embeddings, self.weight)
        cos_t = cos.gather(1, labels[:, None])
        target = (lam * cos_t + self.psi(cos_t)) / (1.0 + lam)
        logits = cos.scatter(1, labels[:, None], target) * embeddings.norm(dim=1, keepdim=True)
        return F.cross_entropy(logits, labels)


class CosFaceLoss(_ClassificationLoss):
    """CosFace / AM-Softmax (Wang et al. 2018): additive cosine margin.

    Logits ``s * (cos(theta_j) - m [j == y])`` on normalised features and weights.

    Args:
        num_classes, embedding_size: weight shape.
        s: logit scale (paper: 64).
        m: cosine margin (paper: 0.35).
    """

    _repr_params = ("num_classes", "embedding_size", "s", "m")

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m: float = 0.35):
        super().__init__(num_classes, embedding_size)
        self.s = float(s)
        self.m = float(m)

    def get_logits(self, embeddings):
        return self.s * _cosine_logits(embeddings, self.weight)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        cos = _cosine_logits(embeddings, self.weight)
        margin = F.one_hot(labels, self.num_classes).to(cos.dtype) * self.m
        return F.cross_entropy(self.s * (cos - margin), labels)


class ArcFaceLoss(_ClassificationLoss):
    """ArcFace (Deng et al., CVPR 2019): additive angular margin, InsightFace details.

    Target logit ``s * cos(theta + m)``, others ``s * cos(theta_j)``, on normalised
    features and weights. ``cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)``
    with ``sin(theta) = sqrt(1 - cos^2)`` (theta in [0, pi]).

    ``cos(theta + m)`` stops decreasing once ``theta + m > pi`` (it turns back up), so a
    sample on the wrong side would be *rewarded* for moving further away. InsightFace's
    standard fix: when ``theta > pi - m``, i.e. ``cos(theta) <= th = cos(pi - m)``, use
    ``cos(theta) - mm`` with ``mm = sin(pi - m) * m = m sin(m)`` (a CosFace-like
    additive penalty equal to the first-order size of the angular margin) instead.
    The result is monotonically decreasing in theta (with a small downward step of
    about ``m^2/2`` at ``pi - m``). ``easy_margin=True`` applies the margin only where
    ``cos(theta) > 0`` and leaves larger angles untouched.

    pytorch-metric-learning's ``ArcFaceLoss`` is the same loss with the margin given in
    degrees (``margin = degrees(m)``; its default 28.6 = 0.5 rad).

    Args:
        num_classes, embedding_size: weight shape.
        s: logit scale (paper: 64).
        m: angular margin in radians (paper: 0.5).
        easy_margin: the InsightFace ``easy_margin`` variant.
    """

    _repr_params = ("num_classes", "embedding_size", "s", "m", "easy_margin")

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m: float = 0.5,
                 easy_margin: bool = False):
        super().__init__(num_classes, embedding_size)
        if not 0 <= m < math.pi / 2:
            raise ConfigError(f"ArcFace margin m must be in [0, pi/2) radians, got {m}")
        self.s = float(s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)       # = -cos(m): boundary where theta = pi - m
        self.mm = math.sin(math.pi - m) * m   # = m sin(m): fallback additive penalty

    def margin_cosine(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """The target logit before scaling, from ``cos(theta)`` (any shape)."""
        c = cos_theta.clamp(-1.0, 1.0)
        # Small floor under the sqrt: its derivative is infinite at sin(theta) = 0.
        sine = torch.sqrt((1.0 - c * c).clamp_min(1e-12))
        phi = c * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            return torch.where(c > 0, phi, c)
        return torch.where(c > self.th, phi, c - self.mm)

    def get_logits(self, embeddings):
        return self.s * _cosine_logits(embeddings, self.weight)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        cos = _cosine_logits(embeddings, self.weight)
        target = self.margin_cosine(cos.gather(1, labels[:, None]))
        return F.cross_entropy(self.s * cos.scatter(1, labels[:, None], target), labels)


class CombinedMarginLoss(_ClassificationLoss):
    """InsightFace's combined margin: target logit ``s * (cos(m1 theta + m2) - m3)``.

    ``m1`` is SphereFace's multiplicative margin, ``m2`` ArcFace's additive angular
    margin, ``m3`` CosFace's additive cosine margin; ``(1, 0.5, 0)`` is ArcFace,
    ``(1, 0, 0.35)`` is CosFace, ``(1.35, 0, 0)`` a (real-valued) SphereFace.

    Past ``theta_b = (pi - m2) / m1`` the inner angle leaves ``[0, pi]`` and the cosine
    would turn back up. There the target logit continues as ``cos(theta) - m3 -
    (1 + cos(theta_b))``: continuous at ``theta_b`` and decreasing. (ArcFaceLoss keeps
    InsightFace's exact ``cos(theta) - m sin(m)`` fallback instead, so the two agree for
    ``theta <= pi - m`` and differ slightly beyond.)

    Args:
        num_classes, embedding_size: weight shape.
        s: logit scale.
        m1, m2, m3: the three margins (``m1 >= 1``, ``m2, m3 >= 0``).
    """

    _repr_params = ("num_classes", "embedding_size", "s", "m1", "m2", "m3")

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.5, m3: float = 0.0):
        super().__init__(num_classes, embedding_size)
        if m1 < 1 or m2 < 0 or m3 < 0 or m2 >= math.pi:
            raise ConfigError(f"need m1 >= 1, 0 <= m2 < pi, m3 >= 0; got {m1}, {m2}, {m3}")
        self.s = float(s)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.theta_b = (math.pi - self.m2) / self.m1
        self.cos_theta_b = math.cos(self.theta_b)

    def margin_cosine(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """The target logit before scaling, from ``cos(theta)`` (any shape)."""
        # acos has an infinite derivative at +-1; stay a hair inside.
        eps = 1e-7 if cos_theta.dtype == torch.float64 else 1e-6
        c = cos_theta.clamp(-1.0 + eps, 1.0 - eps)
        theta = torch.acos(c)
        inside = torch.cos(self.m1 * theta + self.m2) - self.m3
        beyond = c - self.m3 - (1.0 + self.cos_theta_b)
        return torch.where(theta <= self.theta_b, inside, beyond)

    def get_logits(self, embeddings):
        return self.s * _cosine_logits(embeddings, self.weight)

    def forward(self, embeddings, labels, indices_tuple=None):
        labels = self._check(embeddings, labels)
        cos = _cosine_logits(embeddings, self.weight)
        target = self.margin_cosine(cos.gather(1, labels[:, None]))
        return F.cross_entropy(self.s * cos.scatter(1, labels[:, None], target), labels)


# ============================================================================= registry
#: name -> (class, fixed keyword arguments)
LOSSES: dict[str, tuple[type[_Loss], dict]] = {
    "contrastive": (ContrastiveLoss, {}),
    "ntxent": (NTXentLoss, {}),
    "triplet": (TripletMarginLoss, {"strategy": "batch-all"}),
    "triplet-hard": (TripletMarginLoss, {"strategy": "batch-hard"}),
    "quadruplet": (QuadrupletLoss, {}),
    "multi-similarity": (MultiSimilarityLoss, {}),
    "supcon": (SupConLoss, {}),
    "proxy-nca": (ProxyNCALoss, {}),
    "softmax": (SoftmaxLoss, {}),
    "center": (CenterLoss, {}),
    "normface": (NormalizedSoftmaxLoss, {}),
    "sphereface": (SphereFaceLoss, {}),
    "cosface": (CosFaceLoss, {}),
    "arcface": (ArcFaceLoss, {}),
    "combined": (CombinedMarginLoss, {}),
}


def _lookup(name: str) -> tuple[type[_Loss], dict]:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_needs_num_classes(name: str) -> bool:
    """Whether ``make_loss(name, ...)`` needs ``num_classes`` and ``embedding_size``
    (proxy and classification losses, which own learned weights)."""
    return _lookup(name)[0].needs_num_classes


def loss_parameters(name: str) -> list[str]:
    """The keyword parameters ``make_loss(name, ...)`` accepts besides the sizes."""
    cls, fixed = _lookup(name)
    sig = inspect.signature(cls.__init__)
    skip = {"self", "num_classes", "embedding_size", *fixed}
    return [p for p in sig.parameters if p not in skip]


def make_loss(name: str, num_classes: int | None = None, embedding_size: int | None = None,
              **params) -> _Loss:
    """Build a loss from its short name.

    Args:
        name: one of :data:`LOSSES` (``contrastive``, ``ntxent``, ``triplet``,
            ``triplet-hard``, ``quadruplet``, ``multi-similarity``, ``supcon``,
            ``proxy-nca``, ``softmax``, ``center``, ``normface``, ``sphereface``,
            ``cosface``, ``arcface``, ``combined``).
        num_classes, embedding_size: required when :func:`loss_needs_num_classes`;
            ignored by pair-based losses.
        **params: the loss's own parameters (see :func:`loss_parameters`).

    Returns:
        The ``nn.Module``.

    Raises:
        ConfigError: unknown name or parameter, or missing sizes.
    """
    cls, fixed = _lookup(name)
    allowed = loss_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"loss {name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(allowed) or '(none)'}")
    if cls.needs_num_classes:
        if num_classes is None or embedding_size is None:
            raise ConfigError(f"loss {name!r} needs num_classes and embedding_size")
        return cls(int(num_classes), int(embedding_size), **fixed, **params)
    return cls(**fixed, **params)
