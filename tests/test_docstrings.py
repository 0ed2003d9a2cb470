"""Every public function and class has a docstring with an example, and every example runs.

Public: the names in a module's `__all__` that the module defines (plus the public methods of
the backbones, the main API: DinoVisionTransformer, Dinov3VisionTransformer and their shared base). The examples are doctests (`>>>`), run here with `torch`
and `minidino` imported, offline, in a temporary folder; those marked `# doctest: +SKIP` need
the network or real weights.

    python -m pytest tests/test_docstrings.py -s        # the counts
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest
import torch

import minidino

from conftest import offline_workdir

MODULES = sorted(
    {"minidino"} | {m.name for m in pkgutil.walk_packages(minidino.__path__, "minidino.")}
    - {"minidino.__main__"}
)
LIBRARY = [m for m in MODULES if not m.startswith("minidino.cli")]  # the command line documents itself (--help)
MAIN_CLASSES = ["minidino.models.dinov2.DinoVisionTransformer", "minidino.models.dinov3.Dinov3VisionTransformer",
                "minidino.models.backbone.VisionTransformerBase"]


def public_objects() -> dict[str, object]:
    out = {}
    for name in LIBRARY:
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == name:
                out[f"{name}.{attr}"] = obj
    for main_class in MAIN_CLASSES:
        for attr, obj in vars(out[main_class]).items():
            if inspect.isfunction(obj) and not attr.startswith("_"):
                out[f"{main_class}.{attr}"] = obj
    return out


def test_every_public_object_has_a_docstring_with_an_example():
    objects = public_objects()
    no_doc = [n for n, o in objects.items() if not (o.__doc__ or "").strip()]
    no_example = [n for n, o in objects.items() if ">>>" not in (o.__doc__ or "")]
    print(f"{len(objects)} public functions and classes; {len(objects) - len(no_example)} with examples")
    assert not no_doc, f"no docstring: {no_doc}"
    assert not no_example, f"docstring without an example (>>>): {no_example}"
    assert len(objects) > 100


def _doctests(name: str) -> list[doctest.DocTest]:
    """The examples of one module (the finder skips objects that the module imports from elsewhere)."""
    mod = importlib.import_module(name)
    found = doctest.DocTestFinder(exclude_empty=True).find(mod, name, globs={**vars(mod), "torch": torch, "minidino": minidino})
    return sorted((t for t in found if t.examples), key=lambda t: t.name)



@pytest.fixture
def offline(tmp_path, monkeypatch):
    offline_workdir(tmp_path, monkeypatch, "network access attempted by a docstring example (mark it # doctest: +SKIP)")


@pytest.mark.parametrize("module", LIBRARY)
def test_docstring_examples_run(module, offline):
    tests = _doctests(module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    torch.manual_seed(0)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    print(f"{module}: {len(tests)} docstrings, {result.attempted} examples, {result.failed} failed")
    assert result.failed == 0
