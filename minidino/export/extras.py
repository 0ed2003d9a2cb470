"""The optional packages of the export paths, in one place: which extra brings which module.

Every runtime is an optional dependency, imported only inside the function that needs it, through
`require`, so that a missing one fails with one line that names the extra to install:

    ImportError: export_openvino needs the openvino extra: pip install 'minidino[openvino]' (No module named 'openvino')
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Iterator
from types import ModuleType

__all__ = ["EXTRAS", "require", "available", "runtime_modules", "quiet_logger"]

# module -> the extra of pyproject.toml that installs it
EXTRAS = {
    "onnx": "export", "onnxscript": "export", "onnxruntime": "export",
    "openvino": "openvino", "nncf": "openvino",
    "executorch": "executorch", "torchao": "executorch",
    "coremltools": "coreml",
}


def require(module: str, what: str) -> ModuleType:
    """Import `module` (e.g. "openvino" or "executorch.runtime") or raise an ImportError naming the extra.

    Examples:
        >>> require("json", "this example").__name__
        'json'
        >>> require("no_such_runtime", "export_nothing")
        Traceback (most recent call last):
        ...
        ImportError: export_nothing needs no_such_runtime, which is not installed (No module named 'no_such_runtime')
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS.get(module.split(".")[0])
        if extra is None:
            raise ImportError(f"{what} needs {module.split('.')[0]}, which is not installed ({e})") from None
        raise ImportError(f"{what} needs the {extra} extra: pip install 'minidino[{extra}]' ({e})") from None


def available(module: str) -> bool:
    """Whether `module` can be imported (without importing it).

    Examples:
        >>> available("json"), available("no_such_runtime")
        (True, False)
    """
    return importlib.util.find_spec(module.split(".")[0]) is not None


def runtime_modules(runtime: str, precision: str = "float32", *, run: bool = True) -> tuple[str, ...]:
    """The modules an export to `runtime` at `precision` imports, and, with run=True, those that run the
    artifact here (the check against eager, `minidino accuracy`): what a command checks with `require`
    before any work, so that a missing extra is one line naming it, not a failure after the export.

    Examples:
        >>> runtime_modules("onnx"), runtime_modules("openvino", "int8", run=False)
        (('onnx', 'onnxscript', 'onnxruntime'), ('onnx', 'openvino', 'nncf'))
    """
    modules = ["onnx", {"onnx": "onnxscript", "openvino": "openvino", "executorch": "executorch",
                        "coreml": "coremltools"}[runtime]]  # onnx: the operator report and the opset check read it
    if runtime == "onnx" and (run or precision != "float32"):  # quantization and float16 are onnxruntime's tools
        modules.append("onnxruntime")
    if runtime == "openvino" and precision in ("int8", "int8-weights"):
        modules.append("nncf")
    if runtime == "executorch" and precision.startswith("int8"):
        modules.append("torchao")
    if runtime == "executorch" and run:
        modules.append("executorch.runtime")
    return tuple(modules)


@contextlib.contextmanager
def quiet_logger(name: str | None, level: int) -> Iterator[None]:
    """Raise one logger's level for one call (None: the root logger), then put it back: a runtime's
    chatter at INFO (NNCF's statistics table, onnxruntime's 'consider pre-processing') hidden, its
    warnings kept where `level` allows.

    Examples:
        >>> with quiet_logger("nncf", logging.WARNING):
        ...     logging.getLogger("nncf").info("statistics table")   # not shown
    """
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
