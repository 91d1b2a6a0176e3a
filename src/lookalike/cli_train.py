"""``lookalike train``: train a descriptor on labelled images (metric learning).

Registered on the main Typer app by :func:`register` (``cli._register_extensions``).
A thin shell over :func:`lookalike.training.loop.train`; the output folder then works
as ``--descriptor cnn:model=OUT`` in ``index``, ``search`` and ``evaluate``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_options import parse_key_values
from .errors import ConfigError

console = Console()


def _json_or_text(text: str):
    """Loss parameters: JSON values (numbers, lists, true/false in any case), else text."""
    try:
        return json.loads(text.lower() if text.lower() in ("true", "false") else text)
    except ValueError:
        return text


def _parse_loss_params(pairs: List[str]) -> dict:
    return parse_key_values(pairs, "--loss-param", _json_or_text)


def _parse_hidden(text: str) -> tuple:
    if not text.strip():
        return ()
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--hidden takes widths like 512 or 512,256, got {text!r}") from None


def train(
    data: Path = typer.Argument(..., help="Labelled folder (class = sub-folder) or CSV manifest (path,label)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (weights, ONNX, preprocess.json, scores)."),
    loss: str = typer.Option("arcface", "--loss", help="Loss: arcface, cosface, sphereface, combined, normface, "
                             "softmax, center, proxy-nca, contrastive, triplet, triplet-hard, "
                             "multi-similarity, supcon, ntxent, quadruplet."),
    loss_param: List[str] = typer.Option([], "--loss-param", help="Loss parameter key=value, repeatable "
                                         "(e.g. s=30, m=0.3, margin=0.1)."),
    miner: str = typer.Option("auto", "--miner", help="auto, none, semihard, hard, batch-hard, random, pair-margin."),
    backbone: str = typer.Option("efficientnet-lite0", "--backbone", help="efficientnet-lite0 or small-cnn."),
    dim: int = typer.Option(128, "--dim", help="Embedding size."),
    hidden: str = typer.Option("", "--hidden", help="Hidden head layer widths, e.g. 512 or 512,256."),
    epochs: int = typer.Option(10, "--epochs"),
    frozen: bool = typer.Option(False, "--frozen", help="Freeze the backbone; train the head on cached features."),
    trainable_blocks: int = typer.Option(-1, "--trainable-blocks",
                                         help="EfficientNet blocks fine-tuned from the top (-1 = all)."),
    batch_p: int = typer.Option(8, "--batch-p", help="Classes per batch."),
    batch_k: int = typer.Option(4, "--batch-k", help="Images per class per batch."),
    sampler: str = typer.Option("auto", "--sampler", help="auto, pk or shuffle."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch"),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of head and loss (backbone: x0.1)."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    seed: int = typer.Option(0, "--seed"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side (default: the backbone's)."),
    val_classes: float = typer.Option(0.2, "--val-classes", help="Share of classes held out for validation."),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0 = half the cores)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the run's scores as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a descriptor for your notion of "same" (metric learning), ready for search."""
    from .training.loop import TrainConfig
    from .training.loop import train as run_training

    config = TrainConfig(
        data=str(data), out=str(out), loss=loss, loss_params=_parse_loss_params(loss_param),
        miner=miner, backbone=backbone, dim=dim, hidden=_parse_hidden(hidden), epochs=epochs,
        frozen=frozen, trainable_blocks=trainable_blocks, batch_p=batch_p, batch_k=batch_k,
        sampler=sampler, steps_per_epoch=steps_per_epoch, lr=lr, weight_decay=weight_decay,
        seed=seed, image_size=image_size, val_classes=val_classes, augment=augment,
        threads=threads, resume=resume)
    result = run_training(config, progress=progress and not json_out and sys.stderr.isatty())
    if json_out:
        sys.stdout.write(json.dumps({"out": str(result.out), "best_epoch": result.best_epoch,
                                     "history": result.history,
                                     "n_train_images": result.n_train_images,
                                     "n_val_images": result.n_val_images,
                                     "failed": result.failed}, indent=2) + "\n")
        return
    table = Table(title=f"{loss} on {backbone} ({result.n_train_images} training, "
                        f"{result.n_val_images} validation images)")
    for column in ("epoch", "loss", "R@1", "mAP@R", "s"):
        table.add_column(column, justify="right")
    for h in result.history:
        best = " *" if h["epoch"] == result.best_epoch else ""
        table.add_row(f"{h['epoch']}{best}", "-" if h["loss"] is None else f"{h['loss']:.4f}",
                      f"{h['recall_at_1']:.3f}" if "recall_at_1" in h else "-",
                      f"{h['map_at_r']:.3f}" if "map_at_r" in h else "-", f"{h['seconds']:.1f}")
    console.print(table)
    for path, reason in result.failed[:10]:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    console.print(f"wrote {result.out} (best epoch {result.best_epoch}); use it as "
                  f"--descriptor cnn:model={result.out}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the main app."""
    app.command("train")(train)
