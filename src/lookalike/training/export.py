"""Write a trained model as a folder the ``cnn`` descriptor loads (``cnn:model=DIR``).

The folder::

    DIR/weights.pt        state_dict of backbone + head (torch.load, weights_only)
    DIR/model.onnx        images (N, 3, S, S) float32 -> embeddings (N, dim), unit rows;
                          dynamic batch axis; what the descriptor runs (onnxruntime)
    DIR/preprocess.json   {"size", "mean", "std" (0..1 units), "dim", "resize", ...}:
                          exactly what lookalike.models.user_model reads
    DIR/scores.json       settings, validation scores per epoch, best epoch, class split

Every file is written to a temporary name and renamed into place, so a reader never
sees half a file. :func:`load_trained_model` rebuilds the torch module from
``weights.pt`` + ``scores.json`` (for further training or checking the export).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..models.onnx_cache import INPUT_NAME, OPSET_VERSION
from ..models.user_model import PREPROCESS_FILE
from .backbones import EmbeddingModel, NormalizedEmbedder, backbone_info, build_model

WEIGHTS_FILE = "weights.pt"
ONNX_FILE = "model.onnx"
SCORES_FILE = "scores.json"
OUTPUT_NAME = "embeddings"
#: Bump when the folder layout changes.
MODEL_DIR_FORMAT = 1


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n"))


def export_onnx(model: EmbeddingModel, path: Path, size: int) -> Path:
    """Export ``model`` (eval mode) with L2-normalised output and a dynamic batch axis.

    Args:
        model: backbone + head.
        path: the ``.onnx`` file to write.
        size: input side the graph is traced at (Lite0's padding is static).
    """
    wrapper = NormalizedEmbedder(model).eval()
    dummy = torch.zeros(2, 3, int(size), int(size), dtype=torch.float32)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript-exporter deprecation notice
            with torch.no_grad():
                torch.onnx.export(wrapper, (dummy,), tmp, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                                  opset_version=OPSET_VERSION, do_constant_folding=True,
                                  dynamo=False)
    _atomic_write(path, write)
    return path


def write_model_dir(model: EmbeddingModel, out: Path | str, config, history: list[dict],
                    best_epoch: int, split: dict | None = None) -> Path:
    """Write ``weights.pt``, ``model.onnx``, ``preprocess.json`` and ``scores.json``.

    Args:
        model: the trained backbone + head (put in eval mode here).
        out: the folder (created).
        config: the run's :class:`~.loop.TrainConfig`.
        history: per-epoch records (epoch 0 = before training).
        best_epoch: the epoch whose weights ``model`` holds.
        split: class split and image counts, stored in ``scores.json``.

    Returns:
        ``out`` as a ``Path``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    info = backbone_info(config.backbone)
    size = config.size
    _atomic_write(out / WEIGHTS_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    export_onnx(model, out / ONNX_FILE, size)
    _write_json(out / PREPROCESS_FILE, {
        "size": int(size), "mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std],
        "dim": int(config.dim), "resize": "crop", "normalized": True,
        "backbone": config.backbone, "format": MODEL_DIR_FORMAT,
    })
    best = next((h for h in history if h["epoch"] == best_epoch), {})
    _write_json(out / SCORES_FILE, {
        "format": MODEL_DIR_FORMAT, "settings": config.to_dict(), "best_epoch": best_epoch,
        "best": {k: v for k, v in best.items() if k != "epoch"},
        "before_training": {k: v for k, v in history[0].items() if k not in ("epoch", "loss")}
        if history and history[0]["epoch"] == 0 else {},
        "history": history, "split": split or {},
        "descriptor": f"cnn:model={out}",
    })
    return out


def load_trained_model(model_dir: Path | str) -> EmbeddingModel:
    """Rebuild the torch model of a folder written by :func:`write_model_dir` (eval mode).

    Raises:
        ConfigError: the folder lacks ``scores.json`` or ``weights.pt``.
    """
    from .loop import TrainConfig

    model_dir = Path(model_dir)
    scores, weights = model_dir / SCORES_FILE, model_dir / WEIGHTS_FILE
    if not scores.is_file() or not weights.is_file():
        raise ConfigError(f"{model_dir}: not a trained model folder (needs {SCORES_FILE} and {WEIGHTS_FILE})")
    config = TrainConfig.from_dict(json.loads(scores.read_text())["settings"])
    model = build_model(config.backbone, config.size, config.dim, tuple(config.hidden),
                        frozen=config.frozen, trainable_blocks=config.trainable_blocks,
                        pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()
