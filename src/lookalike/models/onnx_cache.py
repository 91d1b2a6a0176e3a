"""One-time ONNX export of a torch module, cached on disk, and onnxruntime sessions.

The cache lives in ``$LOOKALIKE_CACHE/onnx`` (or ``~/.cache/lookalike/onnx``). A file
name carries a hash of everything that changes the exported graph (model name,
settings, package versions), so a new torch or new weights never reuse a stale graph.
Files are written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX and Windows): two processes exporting at once both
produce a complete file and the last rename wins; a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from ..errors import MissingDependencyError

#: Bump when the exported graph layout changes (inputs/outputs/opset).
EXPORT_FORMAT_VERSION = 1
OPSET_VERSION = 17
INPUT_NAME = "images"


def cache_dir() -> Path:
    """Folder of cached ONNX graphs (not created here)."""
    root = os.environ.get("LOOKALIKE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lookalike"
    return base / "onnx"


def cache_key(settings: dict[str, Any]) -> str:
    """Short stable hash of JSON-able ``settings`` (sorted keys)."""
    payload = json.dumps({"format": EXPORT_FORMAT_VERSION, "opset": OPSET_VERSION, **settings},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_onnx_path(stem: str, settings: dict[str, Any]) -> Path:
    """Where the graph for ``settings`` lives (it may not exist yet)."""
    return cache_dir() / f"{stem}-{cache_key(settings)}.onnx"


def export_onnx_atomic(build_module: Callable[[], Any], path: Path, side: int,
                       output_names: tuple[str, ...]) -> Path:
    """Export ``build_module()`` to ``path`` unless it already exists.

    Args:
        build_module: returns the eval-mode ``torch.nn.Module`` taking
            ``(N, 3, side, side)`` float32.
        path: destination ``.onnx`` file.
        side: spatial input size used for tracing (the batch axis stays dynamic).
        output_names: names of the module's outputs, in order.

    Returns:
        ``path``.
    """
    if path.exists():
        return path
    from .efficientnet import import_torch

    torch = import_torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    module = build_module()
    dummy = torch.zeros(2, 3, int(side), int(side), dtype=torch.float32)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        dynamic = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
        with warnings.catch_warnings():
            # The TorchScript-based exporter is used on purpose (the dynamo exporter needs
            # onnxscript); silence its deprecation notice.
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(
                    module, (dummy,), tmp, input_names=[INPUT_NAME],
                    output_names=list(output_names), dynamic_axes=dynamic,
                    opset_version=OPSET_VERSION, do_constant_folding=True, dynamo=False,
                )
        # mkstemp creates 0600; give the cached file the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "cnn") from None
    return onnxruntime


def make_session(path: Path | str, threads: int = 0) -> Any:
    """An onnxruntime CPU session for ``path``.

    Args:
        threads: intra-op threads; ``0`` means every core this process may use.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads) if threads > 0 else available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])
