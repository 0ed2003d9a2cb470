"""The official DINOv3 code as a black-box reference, for parity tests, golden vectors and benchmarks.

Nothing here reads or copies the official code: it is imported and called, and weights are
loaded into it by their (shared) key names. Its code and weights are under the DINOv3 License
(not Apache-2.0): a test-time reference only, never shipped with minidino. Where it comes from:
`repo=` (a folder of facebookresearch/dinov3 or a .tar.gz of one), else $MINIDINO_OFFICIAL_DINOV3,
else the snapshot a checkout of minidino finds beside it at ../shared/official/dinov3-*.tar.gz,
unpacked once by digest into the temporary folder.

Not through torch.hub: its hubconf.py imports the detection and evaluation code, which needs
torchvision. The backbones need only torch: `dinov3.hub.backbones` is imported directly.

    ref = official_dinov3("dinov3_vitl16", depth=2, weights="SAT493M")   # first 2 blocks, official init
    ours = minidino.create_model("dinov3_vitl16", depth=2, weights="SAT493M")
    ours.load_state_dict(ref.module.state_dict(), strict=True)           # same keys, same shapes
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .reference import SHARED_SNAPSHOTS, OfficialModel, ReferenceUnavailable, _unpack_once

__all__ = ["official_dinov3_repo", "official_dinov3", "DINOV3_ENV"]

DINOV3_ENV = "MINIDINO_OFFICIAL_DINOV3"  # a folder (or .tar.gz) of the official DINOv3 code


def official_dinov3_repo(repo: str | os.PathLike | None = None) -> str | None:
    """The folder of the official DINOv3 code (with its `dinov3/` package), or None when there is none.

    repo: a folder, or a .tar.gz of one (unpacked once into the temporary folder, by digest). Without
    it: $MINIDINO_OFFICIAL_DINOV3, then the newest ../shared/official/dinov3-*.tar.gz beside this checkout.

    Examples:
        >>> path = official_dinov3_repo()          # None on a fresh clone without ../shared/official/
        >>> path is None or (Path(path) / "dinov3" / "hub" / "backbones.py").is_file()
        True
    """
    if repo is None:
        repo = os.environ.get(DINOV3_ENV) or None
    if repo is None:
        tarballs = sorted(SHARED_SNAPSHOTS.glob("dinov3-*.tar.gz")) if SHARED_SNAPSHOTS.is_dir() else []
        if not tarballs:
            return None
        repo = tarballs[-1]
    path = Path(repo)
    if path.is_dir():
        if not (path / "dinov3" / "hub" / "backbones.py").is_file():
            raise ReferenceUnavailable(f"{path} has no dinov3/hub/backbones.py: not a copy of the official DINOv3 code")
        return str(path)
    if not path.is_file() or not path.name.endswith((".tar.gz", ".tgz")):
        raise ReferenceUnavailable(f"{path}: expected a folder of the official DINOv3 code or a .tar.gz of one")
    return str(_unpack_once(path))


@contextlib.contextmanager
def _keep_dynamo_flag() -> Iterator[None]:
    """The official code switches torch._dynamo.config.automatic_dynamic_shapes off for the whole
    process, at the first build (when it first imports its models), not at import: restored after both."""
    import torch._dynamo.config as dynamo_config

    flag = dynamo_config.automatic_dynamic_shapes
    try:
        yield
    finally:
        dynamo_config.automatic_dynamic_shapes = flag


def _backbones(repo: str | os.PathLike | None) -> Any:
    root = official_dinov3_repo(repo)
    if root is None:
        raise ReferenceUnavailable(f"no official DINOv3 code: ../shared/official/dinov3-*.tar.gz not found and ${DINOV3_ENV} unset")
    loaded = sys.modules.get("dinov3")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(root):
        raise ReferenceUnavailable(f"another `dinov3` package is already imported ({loaded.__file__})")
    if root not in sys.path:
        sys.path.insert(0, root)
    with _keep_dynamo_flag():
        return importlib.import_module("dinov3.hub.backbones")


def official_dinov3(name: str, repo: str | os.PathLike | None = None, *, depth: int | None = None,
                    weights: str | None = None, meta: bool = False, **kwargs: Any) -> OfficialModel:
    """The official DINOv3 backbone `name` (pretrained=False, official init, eval mode).

    depth: keep the first `depth` blocks (the big models are built on the meta device, cut, then
    allocated: nothing else is allocated twice). weights: "LVD1689M" or "SAT493M" (the official enum
    member is passed; the satellite ViT-L gets its local_cls_norm). meta=True leaves it on the meta
    device, uninitialised (load a state dict with assign=True). kwargs: the hub function's others.
    Raises ReferenceUnavailable without the official code.

    Examples:
        >>> if official_dinov3_repo():
        ...     ref = official_dinov3("dinov3_vits16", depth=1)
        ...     print(sorted(ref.module.state_dict())[:2])
        ... else:
        ...     print(['blocks.0.attn.proj.bias', 'blocks.0.attn.proj.weight'])
        ['blocks.0.attn.proj.bias', 'blocks.0.attn.proj.weight']
    """
    backbones = _backbones(repo)
    if weights is not None:
        kwargs["weights"] = getattr(backbones.Weights, str(getattr(weights, "name", weights)).upper())
    with _keep_dynamo_flag(), torch.device("meta"):
        module = getattr(backbones, name)(pretrained=False, **kwargs)
    if depth is not None:
        module.blocks = module.blocks[:depth]
        if hasattr(module, "n_blocks"):
            module.n_blocks = depth  # the official model counts its blocks in this attribute
    if not meta:
        module = module.to_empty(device="cpu")
        module.init_weights()  # also the RoPE periods and the key-bias masks
    return OfficialModel(module.eval(), f"official DINOv3 code at {official_dinov3_repo(repo)}", "fused")
