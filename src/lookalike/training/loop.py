"""The trainer: labelled images in, a searchable descriptor folder out.

:func:`train` runs the whole job for ``lookalike train``:

1. read the labelled data and hold out whole classes for validation
   (:func:`~.data.split_by_class`);
2. decode every image once, build backbone + head (:mod:`.backbones`) and the loss
   (:func:`~.losses.make_loss`, with a miner from :func:`make_miner` where it helps);
3. with a *frozen* EfficientNet-Lite0, describe the images once (plus their mirror
   images) and train the head alone on those cached features -- seconds per epoch on
   a CPU; otherwise train on augmented images;
4. validate after every epoch, and once before training (the untrained model), by
   leave-one-out retrieval over the validation classes: Recall@1 and mAP@R through
   :mod:`lookalike.evaluation` (cosine distance of unit embeddings, smaller = closer);
5. keep the best epoch's weights, checkpoint every epoch, and export the best model
   with :func:`~.export.write_model_dir`.

Determinism and resume: batches are drawn from ``(seed, epoch)`` and augmentations
from ``(seed, epoch, step)``; model and loss weights start from ``seed``. A checkpoint
(``OUT/checkpoints/last.pt``: model, loss weights, optimizer, schedule, torch RNG,
history, best so far) is written atomically after every epoch, so ``resume=True``
after an interruption continues from the last finished epoch and ends with the same
weights as an uninterrupted run.

:func:`fit` is the epoch loop itself, reusable on any module and batch source (the
loss bench trains heads on cached features with it).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from . import miners as miners_module
from .backbones import BACKBONES, EmbeddingModel, backbone_info, build_model
from .data import (
    Augmenter,
    FeatureBatches,
    ImageBatches,
    decode_images,
    eval_batch,
    lite0_frozen_features,
    load_labelled,
    split_by_class,
)
from .losses import LOSSES, make_loss
from .samplers import PKSampler

MINERS = ("auto", "none", "semihard", "hard", "batch-hard", "random", "pair-margin")
SAMPLERS = ("auto", "pk", "shuffle")
SELECT_METRICS = ("map_at_r", "recall_at_1")
CHECKPOINT_DIR = "checkpoints"
#: Config fields that may differ between an interrupted run and its resumption.
RESUME_FREE = ("resume", "threads", "out", "data")


@dataclass
class TrainConfig:
    """Every setting of a training run (saved in ``scores.json`` and checkpoints).

    Attributes:
        data: labelled folder or CSV manifest.
        out: output model folder.
        loss: a :data:`~.losses.LOSSES` name.
        loss_params: the loss's own parameters (``margin``, ``s``, ``m``...).
        miner: ``auto`` (semi-hard for ``triplet``, none otherwise), ``none``,
            ``semihard``, ``hard``, ``batch-hard``, ``random`` or ``pair-margin``.
        backbone: ``efficientnet-lite0`` or ``small-cnn``.
        dim: embedding size.
        hidden: widths of hidden head layers (e.g. ``(512,)``).
        epochs: passes over the training data.
        frozen: freeze the backbone and train only the head on cached features.
        trainable_blocks: Lite0 blocks fine-tuned when not frozen (``-1`` = all).
        batch_p, batch_k: P classes x K images per batch.
        sampler: ``pk``, ``shuffle`` (plain shuffled batches of ``P * K``) or ``auto``
            (P x K for pair losses, shuffled for classification losses).
        steps_per_epoch: batches per epoch (``None``: about one pass over the images).
        lr: AdamW learning rate of the head and the loss's weights.
        backbone_lr_scale: backbone rate = ``lr * backbone_lr_scale`` (pretrained
            Lite0; a from-scratch small CNN always uses ``lr``).
        weight_decay: AdamW weight decay of backbone and head (not of loss weights).
        warmup: share of the steps with a linear warm-up before the cosine decay.
        seed: every random draw derives from it.
        image_size: network input side (``None``: the backbone's default).
        val_classes: share of classes held out for validation (``0`` = none).
        augment: augment training images (random resized crop, flip, colour jitter).
        select_metric: validation score that picks the best epoch.
        threads: torch threads (``0`` = half the cores this process may use, at least 1).
        resume: continue from ``out/checkpoints/last.pt`` if present.
    """

    data: str = ""
    out: str = ""
    loss: str = "arcface"
    loss_params: dict = field(default_factory=dict)
    miner: str = "auto"
    backbone: str = "efficientnet-lite0"
    dim: int = 128
    hidden: tuple = ()
    epochs: int = 10
    frozen: bool = False
    trainable_blocks: int = -1
    batch_p: int = 8
    batch_k: int = 4
    sampler: str = "auto"
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    warmup: float = 0.05
    seed: int = 0
    image_size: int | None = None
    val_classes: float = 0.2
    augment: bool = True
    select_metric: str = "map_at_r"
    threads: int = 0
    resume: bool = False

    def validate(self) -> "TrainConfig":
        """Check names and ranges; return ``self``.

        Raises:
            ConfigError: the first bad setting, with the valid choices.
        """
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; valid: {', '.join(BACKBONES)}")
        for name, value, valid in (("miner", self.miner, MINERS), ("sampler", self.sampler, SAMPLERS),
                                   ("select_metric", self.select_metric, SELECT_METRICS)):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if min(self.dim, self.epochs, self.batch_p, self.batch_k) < 1:
            raise ConfigError("dim, epochs, batch_p and batch_k must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup < 1:
            raise ConfigError("need lr > 0, weight_decay >= 0 and 0 <= warmup < 1")
        if self.image_size is not None and self.image_size < 32:
            # The cnn descriptor that loads the exported model never feeds less than 32 px.
            raise ConfigError(f"image_size must be >= 32, got {self.image_size}")
        if self.frozen and self.backbone != "efficientnet-lite0":
            raise ConfigError("--frozen needs a pretrained backbone (efficientnet-lite0)")
        self.hidden = tuple(int(h) for h in self.hidden)
        return self

    @property
    def size(self) -> int:
        """Input side actually used."""
        return int(self.image_size or backbone_info(self.backbone).default_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch (``epoch`` 0 = before training): ``loss`` (mean
            training loss, ``None`` for epoch 0), ``recall_at_1``, ``map_at_r``,
            ``seconds``.
        best_epoch: the epoch whose weights are in ``best_state``.
        best_state: ``state_dict`` of the trained module at ``best_epoch``.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]


@dataclass
class TrainResult:
    """What :func:`train` returns: the exported folder and the run's record."""

    out: Path
    history: list[dict[str, Any]]
    best_epoch: int
    n_train_images: int
    n_val_images: int
    failed: list[tuple[str, str]]


# ----------------------------------------------------------------------------- pieces
def set_threads(threads: int = 0) -> int:
    """``torch.set_num_threads``: ``threads``, or half the cores this process may use.

    Why half by default: on a shared 2-core machine (load average about 8) a small-CNN
    training step measured 0.23 s with 1 thread and 1.8 s with 2, as threads waited on
    each other; leaving a core free also keeps the machine usable.

    Returns:
        The count set.
    """
    from ..models.onnx_cache import available_cores

    n = int(threads) if threads > 0 else max(1, available_cores() // 2)
    torch.set_num_threads(n)
    return n


def make_miner(name: str, loss_name: str, loss: nn.Module, seed: int = 0):
    """The miner for a loss (``None`` = the loss sees the whole batch).

    ``auto``: semi-hard triplets (FaceNet) for ``triplet``, none otherwise (batch-hard
    triplet, multi-similarity, SupCon, contrastive and the classification losses do
    their own weighting). Distances follow the loss's own ``distance`` and margins.

    Raises:
        ConfigError: a miner on a loss that takes no tuples.
    """
    if name == "auto":
        name = "semihard" if loss_name == "triplet" else "none"
    if name == "none":
        return None
    if getattr(loss, "needs_num_classes", False):
        raise ConfigError(f"loss {loss_name!r} takes no mined tuples; use --miner none")
    kwargs = {"distance": getattr(loss, "distance", "euclidean")}
    margin = getattr(loss, "margin", 0.2)
    if name == "semihard":
        return miners_module.SemiHardMiner(margin=margin, seed=seed, **kwargs)
    if name == "hard":
        return miners_module.HardMiner(**kwargs)
    if name == "batch-hard":
        return miners_module.BatchHardMiner(**kwargs)
    if name == "random":
        return miners_module.RandomMiner(seed=seed, **kwargs)
    return miners_module.PairMarginMiner(pos_margin=getattr(loss, "pos_margin", 0.0),
                                         neg_margin=getattr(loss, "neg_margin", 1.0), **kwargs)


def epoch_batches(labels: np.ndarray, config: TrainConfig, epoch: int, needs_classes: bool
                  ) -> list[list[int]]:
    """The batches (dataset indices) of ``epoch``, a pure function of seed and epoch."""
    kind = config.sampler
    if kind == "auto":
        kind = "shuffle" if needs_classes else "pk"
    batch_size = config.batch_p * config.batch_k
    if kind == "pk":
        sampler = PKSampler(labels, config.batch_p, config.batch_k, seed=config.seed,
                            num_batches=config.steps_per_epoch)
        sampler.set_epoch(epoch)
        return [list(b) for b in sampler]
    n = len(labels)
    steps = config.steps_per_epoch or max(1, n // batch_size)
    rng = np.random.default_rng([config.seed, 7919, epoch])
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * batch_size / n))])
    return [order[i * batch_size:(i + 1) * batch_size].tolist() for i in range(steps)]


def retrieval_scores(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Leave-one-out retrieval of unit embeddings ``(N, D)`` (cosine distance).

    Returns:
        ``{"recall_at_1", "recall_at_5", "map_at_r"}`` as floats.
    """
    from ..evaluation.report import evaluate_retrieval_arrays

    x = np.asarray(embeddings, np.float64)
    distances = 1.0 - x @ x.T  # smaller = closer
    report = evaluate_retrieval_arrays(distances, labels, labels, exclude_self=True, ks=(1, 5))
    return {"recall_at_1": float(report["recall_at_k"]["1"]),
            "recall_at_5": float(report["recall_at_k"].get("5", float("nan"))),
            "map_at_r": float(report["map_at_r"])}


def _lr_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    warm = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    return factor


def _param_groups(module: nn.Module, loss: nn.Module, config: TrainConfig) -> list[dict]:
    backbone_scale = config.backbone_lr_scale if config.backbone == "efficientnet-lite0" else 1.0
    groups = []
    if isinstance(module, EmbeddingModel):
        backbone = [p for p in module.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"params": backbone, "lr": config.lr * backbone_scale,
                           "weight_decay": config.weight_decay})
        head = list(module.head.parameters())
    else:
        head = [p for p in module.parameters() if p.requires_grad]
    groups.append({"params": head, "lr": config.lr, "weight_decay": config.weight_decay})
    if hasattr(loss, "param_groups"):  # center loss: centres without weight decay
        groups += [dict(g, weight_decay=0.0) for g in loss.param_groups(config.lr, config.lr)]
    elif list(loss.parameters()):
        groups.append({"params": list(loss.parameters()), "lr": config.lr, "weight_decay": 0.0})
    return groups


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _NoProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def remove_task(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """A rich ``Progress`` (to stderr) or a silent stand-in."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=False) as bars:
        yield bars


# ----------------------------------------------------------------------------- the loop
def fit(module: nn.Module, loss: nn.Module, source, validate: Callable[[], dict] | None,
        config: TrainConfig, checkpoint_dir: Path | None = None,
        progress=None, on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``module`` with ``loss`` for ``config.epochs`` epochs.

    Args:
        module: maps a batch input to raw ``(B, dim)`` embeddings.
        loss: a loss from :func:`~.losses.make_loss`.
        source: ``.labels (N,) int64`` and ``.batch(indices, rng) -> (x, y)`` (an
            :class:`~.data.ImageBatches` or :class:`~.data.FeatureBatches`).
        validate: returns retrieval scores of the current module (called in eval
            mode, without gradient), or ``None`` for no validation (then the last
            epoch is the best).
        config: the settings (epochs, batches, lr, seed, miner, select_metric).
        checkpoint_dir: where ``last.pt`` / ``best.pt`` go; ``None`` = no checkpoints
            (and no resume).
        progress: a rich ``Progress`` (or ``None``).
        on_epoch_end: called with each epoch's record after its checkpoint is
            written (raising there stops training, as an interruption would).

    Returns:
        :class:`FitResult`.
    """
    progress = progress or _NoProgress()
    labels = np.asarray(source.labels, np.int64)
    needs_classes = bool(getattr(loss, "needs_num_classes", False))
    miner = make_miner(config.miner, config.loss, loss, config.seed)
    optimizer = torch.optim.AdamW(_param_groups(module, loss, config))
    steps = len(epoch_batches(labels, config, 1, needs_classes))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(steps * config.epochs, config.warmup))

    def evaluate() -> dict:
        if validate is None:
            return {}
        module.eval()
        loss.eval()
        with torch.no_grad():
            return validate()

    history: list[dict] = []
    best_epoch, best_score, best_state = 0, -math.inf, None
    start = 1
    last_path = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if config.resume and last_path is not None and last_path.exists():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        _check_resumable(ckpt["config"], config)
        module.load_state_dict(ckpt["module"])
        loss.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if miner is not None and ckpt.get("miner_rng") is not None:
            miner._generator.set_state(ckpt["miner_rng"])
        history, best_epoch, best_score = ckpt["history"], ckpt["best_epoch"], ckpt["best_score"]
        best_state = torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=True)
        start = ckpt["epoch"] + 1
    else:
        t0 = time.perf_counter()
        history.append({"epoch": 0, "loss": None, **evaluate(),
                        "seconds": round(time.perf_counter() - t0, 3)})

    epochs_task = progress.add_task("epochs", total=config.epochs, completed=start - 1,
                                    info=_describe(history[-1]) if history else "")
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        module.train()
        loss.train()
        batches = epoch_batches(labels, config, epoch, needs_classes)
        task = progress.add_task(f"epoch {epoch}", total=len(batches), info="")
        values = []
        for step, indices in enumerate(batches):
            rng = np.random.default_rng([config.seed, epoch, step])
            x, y = source.batch(indices, rng)
            embeddings = module(x)
            tuples = miner(embeddings, y) if miner is not None else None
            value = loss(embeddings, y, tuples)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            values.append(float(value.detach()))
            progress.update(task, advance=1, info=f"loss {np.mean(values[-20:]):.4f}")
        progress.remove_task(task)
        if not np.isfinite(values).all():
            raise InputError(f"training diverged at epoch {epoch} (loss {values[-1]}); lower --lr")
        record = {"epoch": epoch, "loss": float(np.mean(values)), **evaluate()}
        record["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(record)
        score = record.get(config.select_metric, float(epoch))  # no validation: latest wins
        if score > best_score or best_state is None:
            best_epoch, best_score = epoch, score
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            if checkpoint_dir is not None:
                _atomic_save(best_state, checkpoint_dir / "best.pt")
        if last_path is not None:
            _atomic_save({"config": config.to_dict(), "epoch": epoch, "module": module.state_dict(),
                          "loss": loss.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                          "miner_rng": (miner._generator.get_state()
                                        if miner is not None and hasattr(miner, "_generator") else None),
                          "history": history, "best_epoch": best_epoch, "best_score": best_score},
                         last_path)
        progress.update(epochs_task, advance=1, info=_describe(record))
        if on_epoch_end is not None:
            on_epoch_end(record)
    if best_state is None:  # resumed a finished run with nothing left to do
        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return FitResult(history, best_epoch, best_state)


def _describe(record: dict) -> str:
    parts = []
    if record.get("loss") is not None:
        parts.append(f"loss {record['loss']:.4f}")
    for key, name in (("recall_at_1", "R@1"), ("map_at_r", "mAP@R")):
        if key in record:
            parts.append(f"{name} {record[key]:.3f}")
    return "  ".join(parts)


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    now = config.to_dict()
    diff = sorted(k for k in now if k not in RESUME_FREE and saved.get(k) != now[k])
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
        raise ConfigError(f"cannot resume: settings differ from the checkpoint ({details}); "
                          "use the same settings or a new --out folder")


def embed_pixels(model: EmbeddingModel, pixels: list[np.ndarray], size: int, mean, std,
                 batch: int = 64) -> np.ndarray:
    """Unit embeddings ``(N, dim) float32`` of images, with the descriptor's preprocessing."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            x = torch.from_numpy(eval_batch(pixels[start:start + batch], size, mean, std))
            out.append(model.embed(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head.dim), np.float32)


def head_embeddings(head: nn.Module, features: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Unit embeddings ``(N, dim) float32`` of cached backbone features ``(N, F)``."""
    head.eval()
    with torch.no_grad():
        parts = [F.normalize(head(torch.from_numpy(np.ascontiguousarray(features[s:s + batch]))), dim=1)
                 for s in range(0, len(features), batch)]
    return torch.cat(parts).numpy()


def train_head_on_features(train_features: np.ndarray, train_labels: np.ndarray,
                           val_features: np.ndarray | None, val_labels: np.ndarray | None,
                           config: TrainConfig, progress: bool = False):
    """Train an embedding head (and the loss's weights) on cached backbone features.

    Args:
        train_features: ``(V, N, F)`` or ``(N, F)`` float32 (views of each item).
        train_labels: ``(N,)`` any integer labels (re-coded to ``0..C-1``).
        val_features, val_labels: ``(M, F)``, ``(M,)`` for per-epoch validation.
        config: settings (``backbone``/``data``/``out`` are not used).

    Returns:
        ``(head, FitResult)``: the head holding the best epoch's weights, in eval mode.
    """
    from .backbones import EmbeddingHead

    config.validate()
    set_threads(config.threads)
    _, codes = np.unique(np.asarray(train_labels), return_inverse=True)
    source = FeatureBatches(train_features, codes.astype(np.int64))
    torch.manual_seed(config.seed)
    head = EmbeddingHead(source.features.shape[2], config.dim, config.hidden)
    loss = make_loss(config.loss, int(codes.max()) + 1, config.dim, **config.loss_params)
    validate = None
    if val_features is not None:
        def validate():
            return retrieval_scores(head_embeddings(head, val_features), val_labels)
    with progress_bars(progress) as bars:
        result = fit(head, loss, source, validate, config, progress=bars)
    head.load_state_dict(result.best_state)
    return head.eval(), result


# ----------------------------------------------------------------------------- the job
def train(config: TrainConfig, progress: bool = True,
          on_epoch_end: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a descriptor on labelled images and export it to ``config.out``.

    See the module docstring for the steps. ``OUT`` afterwards holds ``weights.pt``,
    ``model.onnx``, ``preprocess.json`` and ``scores.json`` (plus ``checkpoints/``), and
    ``cnn:model=OUT`` is a working descriptor.

    Raises:
        ConfigError: bad settings, or a resume with different settings.
        InputError: unreadable data, too few classes, no image decoded.
    """
    from .export import write_model_dir

    config.validate()
    if not config.out:
        raise ConfigError("an output folder (--out) is required")
    out = Path(config.out)
    set_threads(config.threads)
    data = load_labelled(config.data)
    train_idx, val_idx, val_classes = split_by_class(data.labels, config.val_classes, config.seed)
    info = backbone_info(config.backbone)
    size = config.size

    with progress_bars(progress) as bars:
        task = bars.add_task("decoding images", total=len(data.paths), info="")
        pixels, kept, failed = decode_images(data.paths, 2 * size,
                                             lambda n: bars.update(task, advance=n))
        bars.remove_task(task)
        if not pixels:
            raise InputError(f"{config.data}: no image could be decoded ({failed[:3]})")
        position = {orig: i for i, orig in enumerate(kept)}
        train_keep = [position[i] for i in train_idx if i in position]
        val_keep = [position[i] for i in val_idx if i in position]
        all_labels = data.labels[np.asarray(kept)]
        classes, train_codes = np.unique(all_labels[train_keep], return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"{config.data}: need at least 2 training classes, found {len(classes)}")
        val_labels = all_labels[val_keep]
        train_pixels = [pixels[i] for i in train_keep]
        val_pixels = [pixels[i] for i in val_keep]

        torch.manual_seed(config.seed)
        model = build_model(config.backbone, size, config.dim, config.hidden,
                            frozen=config.frozen, trainable_blocks=config.trainable_blocks)
        loss = make_loss(config.loss, len(classes), config.dim, **config.loss_params)
        has_val = len(np.unique(val_labels)) >= 2

        if config.frozen:
            task = bars.add_task("backbone features", total=len(train_pixels) * 2 + len(val_pixels),
                                 info="(once)")
            advance = lambda n: bars.update(task, advance=n)  # noqa: E731
            train_features = lite0_frozen_features(train_pixels, size, True, advance)
            val_features = (lite0_frozen_features(val_pixels, size, False, advance)[0]
                            if has_val else None)
            bars.remove_task(task)
            source = FeatureBatches(train_features, train_codes)
            module: nn.Module = model.head

            def validate():
                return retrieval_scores(head_embeddings(model.head, val_features), val_labels)
        else:
            augment = Augmenter(size) if config.augment else None
            source = ImageBatches(train_pixels, train_codes, size, info.mean, info.std, augment)
            module = model

            def validate():
                return retrieval_scores(embed_pixels(model, val_pixels, size, info.mean, info.std),
                                        val_labels)

        result = fit(module, loss, source, validate if has_val else None, config,
                     checkpoint_dir=out / CHECKPOINT_DIR, progress=bars, on_epoch_end=on_epoch_end)
    module.load_state_dict(result.best_state)
    model.eval()
    split = {"train_classes": [data.class_names[c] for c in classes],
             "val_classes": [data.class_names[c] for c in val_classes],
             "n_train_images": len(train_pixels), "n_val_images": len(val_pixels),
             "failed": [{"path": p, "reason": r} for p, r in failed]}
    write_model_dir(model, out, config, result.history, result.best_epoch, split)
    return TrainResult(out, result.history, result.best_epoch, len(train_pixels),
                       len(val_pixels), failed)
