"""What an export produced: its operators with their counts, the opset, the inputs and outputs
with their free dimensions, and the runtime's traps that apply. Every export function returns one.

A porter's first question about a target is whether it has every operator the graph uses; the
report answers it without opening the file in a viewer:

    report = minidino.export.export_model(model, "vits14.onnx")
    print(report.summary())
    # onnx, float32: vits14.onnx
    #   input  x (batch, 3, H, W)          free: batch 1.., H 14.. (multiple of 14), W ...
    #   output x_norm_clstoken (batch, 384)
    #   opset  ai.onnx 20
    #   ops    606 nodes: Add 89, MatMul 72, Mul 64, ...

`write_report` stores it as JSON beside the artifact (`NAME.report.json`): the loaders read the
output names back from it where the format keeps none (ExecuTorch's outputs are positional).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ExportReport", "count_ops", "describe_free", "onnx_summary", "program_ops", "program_io_dims", "report_path",
           "write_report", "read_report"]

Dims = list[Any]  # an int for a fixed dimension, a name (str) for a free one


@dataclass
class ExportReport:
    """One exported artifact, described.

    runtime:   "onnx", "openvino", "executorch", "coreml"
    path:      the artifact (a file; a folder for CoreML's .mlpackage)
    precision: "float32", "float16", "bfloat16", "int8", "int8-dynamic", "int8-weights"
    inputs, outputs: name -> dims (an int if fixed, a name if free), in graph order
    free:      each free dimension -> its range, e.g. {"batch": "1..8", "H": "14..518, multiple of 14"}
    ops:       operator type -> count (the graph the runtime runs; ExecuTorch: what is left
               outside the delegate, plus one `executorch_call_delegate` per delegated segment)
    delegated: ExecuTorch only: operator type -> count inside the XNNPACK delegate
    opset:     ONNX: domain -> version; CoreML: {"minimum deployment target": target}; else empty
    notes:     the traps of this runtime that apply to this artifact (and how they are handled)
    check:     output -> [max abs, cosine] against eager float32 (export_model's check), if run

    Examples:
        >>> r = ExportReport("onnx", "m.onnx", "float32", {"x": ["batch", 3, 224, 224]}, {"cls": ["batch", 384]},
        ...                  ops={"MatMul": 2, "Add": 1}, free={"batch": "1.."})
        >>> print(r.summary())
        onnx, float32: m.onnx
          input  x (batch, 3, 224, 224)
          output cls (batch, 384)
          free   batch 1..
          ops    3 nodes, 2 types: MatMul 2, Add 1
    """

    runtime: str
    path: str | None
    precision: str
    inputs: dict[str, Dims]
    outputs: dict[str, Dims]
    ops: dict[str, int] = field(default_factory=dict)
    free: dict[str, str] = field(default_factory=dict)
    delegated: dict[str, int] = field(default_factory=dict)
    opset: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None  # how long the export took
    check: dict[str, list[float]] = field(default_factory=dict)  # output -> [max abs, cosine] against eager float32

    def summary(self) -> str:
        """The report as a few lines of text (what `minidino export` prints)."""
        dims = lambda d: "(" + ", ".join(str(v) for v in d) + ")"  # noqa: E731
        lines = [f"{self.runtime}, {self.precision}: {self.path}"]
        lines += [f"  input  {k} {dims(v)}" for k, v in self.inputs.items()]
        lines += [f"  output {k} {dims(v)}" for k, v in self.outputs.items()]
        lines.append("  free   " + (", ".join(f"{k} {v}" for k, v in self.free.items()) or "nothing: every dimension fixed"))
        if self.opset:
            lines.append("  opset  " + ", ".join(f"{k} {v}" for k, v in self.opset.items()))
        lines.append(f"  ops    {_format_ops(self.ops)}")
        if self.delegated:
            lines.append(f"  inside the delegate: {_format_ops(self.delegated)}")
        lines += [f"  check  {k}: max abs {v[0]:.1e}, cosine {v[1]:.6f}" for k, v in self.check.items()]
        lines += [f"  note   {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _format_ops(ops: Mapping[str, int]) -> str:
    total = sum(ops.values())
    return f"{total} nodes, {len(ops)} types: " + ", ".join(f"{k} {v}" for k, v in ops.items())


def count_ops(names: Iterable[str]) -> dict[str, int]:
    """Operator counts, most frequent first (ties by name).

    Examples:
        >>> count_ops(["Add", "MatMul", "Add", "Softmax"])
        {'Add': 2, 'MatMul': 1, 'Softmax': 1}
    """
    return dict(sorted(Counter(names).items(), key=lambda kv: (-kv[1], kv[0])))


def describe_free(free: Mapping[str, tuple[Any, ...]]) -> dict[str, str]:
    """Ranges of free dimensions as text, from `Shapes.free` (program.py).

    Examples:
        >>> describe_free({"batch": (1, 8), "H": (14, None, "14*n")})
        {'batch': '1..8', 'H': '14.., multiple of 14'}
    """
    out = {}
    for name, (lo, hi, *step) in free.items():
        text = f"{lo}..{hi if hi is not None else ''}"
        if step:
            text += f", multiple of {str(step[0]).split('*')[0]}"
        out[name] = text
    return out


def program_ops(program: Any) -> dict[str, int]:
    """Operator counts of a torch.export ExportedProgram (or a GraphModule): its call_function targets.

    Examples:
        >>> import torch
        >>> program_ops(torch.export.export(torch.nn.Linear(2, 3), (torch.randn(1, 2),)))
        {'aten.linear.default': 1}
    """
    gm = program.graph_module if hasattr(program, "graph_module") else program
    return count_ops(_target_name(n.target) for n in gm.graph.nodes if n.op == "call_function" and not _is_plumbing(n.target))


def program_io_dims(program: Any, output_names: Sequence[str]) -> tuple[dict[str, Dims], dict[str, Dims]]:
    """(input dims, output dims) of an ExportedProgram with input "x": ints where fixed, names where
    free ("batch", "H", "W" for the input's free sides; the sizes they make elsewhere, e.g. "h*w").

    Examples:
        >>> import torch
        >>> program = torch.export.export(torch.nn.Linear(2, 3), (torch.randn(4, 2),))
        >>> program_io_dims(program, ["y"])
        ({'x': [4, 2]}, {'y': [4, 3]})
    """
    gm = program.graph_module
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    user_inputs = set(program.graph_signature.user_inputs)
    x = next(n for n in placeholders if n.name in user_inputs)
    rename: dict[str, str] = {}
    x_shape = list(x.meta["val"].shape)
    for i, label in ((0, "batch"), (2, "H"), (3, "W")):
        if i < len(x_shape) and not isinstance(x_shape[i], int):
            rename[str(x_shape[i])] = label
    if len(x_shape) == 4 and not isinstance(x_shape[2], int):  # H = p*h: name the patch-grid symbols h, w
        for side, label in ((2, "h"), (3, "w")):
            sym = str(x_shape[side])  # e.g. "14*s53"
            if "*" in sym:
                inner = sym.split("*", 1)[1]
                rename[inner] = label

    def dims(val: Any) -> Dims:
        out: Dims = []
        for d in val.shape:
            if isinstance(d, int) or str(d).isdigit():
                out.append(int(d))
                continue
            text = str(d)
            for k in sorted(rename, key=len, reverse=True):
                text = text.replace(k, rename[k])
            out.append(text)
        return out

    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    values = out_node.args[0]
    return {"x": dims(x.meta["val"])}, {name: dims(v.meta["val"]) for name, v in zip(output_names, values)}


def _is_plumbing(target: Any) -> bool:
    """Tuple indexing and shape arithmetic (operator.getitem, operator.mul on sizes, sym_size): not operators."""
    return getattr(target, "__module__", None) == "_operator" or "sym_size" in str(getattr(target, "__name__", ""))


def _target_name(target: Any) -> str:
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)  # aten.linear.default
    return getattr(target, "__name__", None) or str(target)  # ExecuTorch's EdgeOpOverload: aten.view_copy.default


def onnx_summary(path: str | Path) -> tuple[dict[str, int], dict[str, int], dict[str, Dims], dict[str, Dims]]:
    """(op counts, opset by domain, input dims, output dims) of an ONNX file (its weights are not read).

    Op counts are over the main graph and the bodies of any local functions and subgraphs.

    Examples:
        >>> ops, opset, inputs, outputs = onnx_summary("vits14.onnx")             # doctest: +SKIP
        >>> opset, inputs                                                         # doctest: +SKIP
        ({'ai.onnx': 20}, {'x': ['batch', 3, '14*h', '14*w']})
    """
    import onnx

    mp = onnx.load(str(path), load_external_data=False)

    def nodes(graph: Any) -> Iterable[str]:
        for n in graph.node:
            yield n.op_type
            for a in n.attribute:  # If / Loop / Scan bodies
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from nodes(a.g)

    def dims(vi: Any) -> Dims:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]

    names = list(nodes(mp.graph))
    for f in mp.functions:
        names += [n.op_type for n in f.node]
    opset = {(o.domain or "ai.onnx"): o.version for o in mp.opset_import}
    inits = {i.name for i in mp.graph.initializer}
    inputs = {i.name: dims(i) for i in mp.graph.input if i.name not in inits}
    return count_ops(names), opset, inputs, {o.name: dims(o) for o in mp.graph.output}


def report_path(path: str | Path) -> Path:
    """Where the report of an artifact is stored: beside it, NAME.report.json.

    Examples:
        >>> report_path("out/vits14.pte").as_posix()
        'out/vits14.pte.report.json'
    """
    path = Path(path)
    return path.with_name(path.name + ".report.json")


def write_report(report: ExportReport, at: str | Path | None = None) -> Path:
    """Store `report` as JSON beside its artifact (or `at`); returns the JSON's path.

    Examples:
        >>> r = ExportReport("onnx", "m.onnx", "float32", {"x": [1, 3, 28, 28]}, {"y": [1, 384]})
        >>> write_report(r).name, read_report("m.onnx").inputs
        ('m.onnx.report.json', {'x': [1, 3, 28, 28]})
    """
    from ..utils.atomic import atomic_write

    if report.path is None and at is None:
        raise ValueError("this report describes no file")
    out = Path(at) if at is not None else report_path(report.path)  # type: ignore[arg-type]
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(report.to_dict(), indent=1) + "\n"))
    return out


def read_report(path: str | Path) -> ExportReport | None:
    """The report stored beside an artifact, or None if there is none.

    Examples:
        >>> read_report("no_such_model.onnx") is None
        True
    """
    p = report_path(path)
    if not p.is_file():
        return None
    return ExportReport(**json.loads(p.read_text()))
