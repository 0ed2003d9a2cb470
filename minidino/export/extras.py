"""The optional packages of the export paths, in one place: which extra brings which module.

Every runtime is an optional dependency, imported only inside the function that needs it, through
`require`, so that a missing one fails with one line that names the extra to install:

    ImportError: export_openvino needs the openvino extra: pip install 'minidino[openvino]' (No module named 'openvino')
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "require", "available"]

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
