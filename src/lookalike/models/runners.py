"""Inference runners: one call ``run(batch) -> list of output arrays`` per engine.

A runner wraps an onnxruntime session, a torch module or a TorchScript module. Runners
hold native objects that cannot be pickled; descriptors create them lazily and drop
them when pickled into worker processes.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .efficientnet import import_torch
from .onnx_cache import INPUT_NAME, available_cores, make_session


class OnnxRunner:
    """onnxruntime CPU session over an ``.onnx`` file.

    Args:
        path: the model file.
        threads: intra-op threads (``0`` = every available core).
    """

    engine = "onnx"

    def __init__(self, path: Path | str, threads: int = 0):
        self.path = Path(path)
        self.session = make_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def output_shapes(self) -> list[list[Any]]:
        """Declared output shapes (symbolic axes are strings or ``None``)."""
        return [list(o.shape) for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """``batch``: ``(N, 3, S, S) float32`` -> the model's outputs as float32 arrays."""
        outputs = self.session.run(None, {self.input_name: batch})
        return [np.asarray(o, dtype=np.float32) for o in outputs]


class TorchRunner:
    """Eager torch module (or TorchScript module) on CPU, without autograd.

    ``torch.set_num_threads`` is process-wide, so the thread count is set for the call
    and restored afterwards.
    """

    engine = "torch"

    def __init__(self, module: Any, threads: int = 0):
        self.module = module
        self.threads = int(threads) if threads > 0 else available_cores()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = import_torch()
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = self.module(torch.from_numpy(np.ascontiguousarray(batch)))
        finally:
            torch.set_num_threads(previous)
        if not isinstance(out, (tuple, list)):
            out = (out,)
        return [o.detach().float().numpy() for o in out]


def load_torchscript(path: Path | str) -> Any:
    """Load a TorchScript ``.pt`` file on CPU in eval mode."""
    torch = import_torch()
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; loading still works and users may have
        # such files, so the notice is not repeated on every descriptor.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return module


__all__ = ["INPUT_NAME", "OnnxRunner", "TorchRunner", "load_torchscript"]
