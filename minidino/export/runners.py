"""Run an exported artifact on this machine: one call for every runtime, numpy in, outputs by name.

    run = load_runner("vits14.xml")              # .onnx, .xml (OpenVINO), .pte (ExecuTorch)
    outputs = run(x)                             # x: (B, 3, H, W) float32 array -> {name: array}

Each loader sets what parity needs and a user easily forgets: OpenVINO's precision hint (it
computes in bf16 by default on AVX512_BF16/AMX CPUs), ExecuTorch's program kept alive with its
method (else a segfault), the output names ExecuTorch does not store (read from the report
beside the file). `threads` pins each runtime to that many threads (for benchmarks). A CoreML
package cannot run here: macOS only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .extras import require
from .report import read_report

__all__ = ["Runner", "load_runner", "runtime_of"]

SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".pte": "executorch", ".mlpackage": "coreml"}


def runtime_of(path: str | Path) -> str:
    """The runtime of an artifact, from its suffix.

    Examples:
        >>> runtime_of("vits14.xml"), runtime_of("vits14.pte")
        ('openvino', 'executorch')
    """
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"{str(path)!r}: unknown artifact; expected one of {', '.join(SUFFIXES)}")
    return SUFFIXES[suffix]


class Runner:
    """A loaded artifact: call it with a (B, 3, H, W) float32 array, get {output name: float32 array}.

    Examples:
        >>> run = Runner("toy", ("y",), lambda x: [x * 2])
        >>> float(run(np.ones((1, 3, 2, 2), np.float32))["y"].sum())
        24.0
    """

    def __init__(self, runtime: str, output_names: tuple[str, ...], call: Callable[[np.ndarray], list[Any]],
                 keep: Any = None) -> None:
        self.runtime = runtime
        self.output_names = output_names
        self._call = call
        self._keep = keep  # whatever the runtime needs kept alive (ExecuTorch's program)

    def __call__(self, x: Any) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
        outs = self._call(x)
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(self.output_names, outs)}


def _onnx(path: Path, threads: int | None) -> Runner:
    ort = require("onnxruntime", "running an ONNX file")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on a shared machine
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = tuple(o.name for o in sess.get_outputs())
    return Runner("onnx", names, lambda x: sess.run(list(names), {"x": x}))


def _openvino(path: Path, threads: int | None) -> Runner:
    ov = require("openvino", "running an OpenVINO IR")
    from .openvino import PRECISION_HINT

    report = read_report(path)
    hint = PRECISION_HINT[report.precision] if report else "f32"
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint}
    if threads:
        config.update({"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    names = tuple(next(iter(o.get_names())) for o in compiled.outputs)

    def call(x: np.ndarray) -> list[Any]:
        result = compiled(x)
        return [result[o] for o in compiled.outputs]

    return Runner("openvino", names, call, keep=compiled)


def _executorch(path: Path, threads: int | None) -> Runner:
    runtime = require("executorch.runtime", "running an ExecuTorch program")
    torch = require("torch", "running an ExecuTorch program")
    if threads:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(threads)
    report = read_report(path)
    program = runtime.Runtime.get().load_program(str(path))  # kept in the Runner: the method needs it alive
    method = program.load_method("forward")
    count = method.metadata.num_outputs
    count = count() if callable(count) else count
    names = tuple(report.outputs) if report else tuple(f"output_{i}" for i in range(count))  # a .pte keeps no names
    return Runner("executorch", names, lambda x: [t.float().numpy() for t in method.execute([torch.from_numpy(x)])],
                  keep=(program, method))


def load_runner(path: str | Path, *, threads: int | None = None) -> Runner:
    """Load an artifact for its runtime on this machine's CPU (see the module docstring).

    Examples:
        >>> run = load_runner("vits14.onnx")                               # doctest: +SKIP
        >>> {k: v.shape for k, v in run(np.zeros((1, 3, 224, 224), np.float32)).items()}   # doctest: +SKIP
        {'x_norm_clstoken': (1, 384), 'x_norm_patchtokens': (1, 256, 384)}
    """
    path = Path(path)
    runtime = runtime_of(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if runtime == "coreml":
        raise RuntimeError(f"{path.name}: a CoreML package runs on macOS only (coremltools predicts there); on a Mac, "
                           "load it with coremltools.models.MLModel and compare its outputs with `minidino compare`")
    return {"onnx": _onnx, "openvino": _openvino, "executorch": _executorch}[runtime](path, threads)
