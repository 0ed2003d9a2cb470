"""The official DINOv2 code as a black-box reference, for parity tests and benchmarks.

Nothing here reads or copies the official model code: it is imported and called, and our
weights are loaded into it by their (shared) key names. Sources, in the order they are tried:

- a local copy of the current official hub code (`repo=PATH`, a folder or a `.tar.gz` of one;
  else $MINIDINO_OFFICIAL_REPO; else the snapshot tarball a checkout of minidino finds beside
  it at ../shared/official/dinov2-*.tar.gz, unpacked once to a temporary folder):
  `torch.hub.load(PATH, name, source="local", pretrained=False)`, every hub model. Its attention
  is `F.scaled_dot_product_attention`, as minidino's default `attn_impl="fused"` is.
- the `dinov2` package from PyPI (0.0.1.dev2; `pip install --no-deps dinov2==0.0.1.dev2`): a
  third-party upload of an April-2023 snapshot of the official code. It predates register
  tokens and the hub module, so it serves the four plain backbones (any depth), built from its
  `DinoVisionTransformer` with the hub's arguments. Its attention is the explicit
  softmax(q k^T * scale) v, so compare it with `attn_impl="explicit"`: measured bit-identical
  (max abs 0.0) on CPU float32 for ViT-S/B/L/g at every size and mask tried.

    ref = official_model("dinov2_vits14")                # the PyPI snapshot, if installed
    ours = minidino.create_model("dinov2_vits14")
    ours.attn_impl = ref.attn_impl                        # the same operations in the same order
    ours.load_state_dict(ref.module.state_dict())         # same keys, same shapes
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..catalogue import lookup

__all__ = ["OfficialModel", "ReferenceUnavailable", "official_model", "official_repo", "snapshot_available",
           "official_dinotxt", "official_tokenizer"]

REPO_ENV = "MINIDINO_OFFICIAL_REPO"  # a folder (or .tar.gz) of the official hub code
# Where a minidino checkout finds the shared snapshot of the official hub code (CI has it there too).
SHARED_SNAPSHOTS = Path(__file__).resolve().parents[2].parent / "shared" / "official"

# The PyPI snapshot names its fused SwiGLU "swiglufused" (hidden width rounded to a multiple
# of 8, as our config.swiglu_hidden_dim); the hub builds ViT-g with it.
_SNAPSHOT_FFN = {"mlp": "mlp", "swiglu": "swiglufused"}


class ReferenceUnavailable(RuntimeError):
    """The official code is not available here for the requested model (the message says why).

    Examples:
        >>> try:
        ...     official_repo("no/such/folder.tar.gz")
        ... except ReferenceUnavailable as e:
        ...     print("unavailable:", e)
        unavailable: no/such/folder.tar.gz: expected a folder of the official hub code or a .tar.gz of one
    """


@dataclass
class OfficialModel:
    """The official model as a black box: the module, where it came from, and minidino's matching attention path.

    Examples:
        >>> ref = OfficialModel(torch.nn.Identity(), "a test double", "fused")
        >>> ref.attn_impl        # the attention path of minidino that performs the same operations
        'fused'
    """

    module: nn.Module  # the official model, in eval mode, official random init
    source: str  # where it came from, for reports
    attn_impl: str  # minidino's attention path that performs the same operations: "fused" | "explicit"


def official_repo(repo: str | os.PathLike | None = None) -> str | None:
    """The folder of the official hub code to load through torch.hub, or None when there is none.

    repo: a folder with hubconf.py, or a .tar.gz of one (unpacked once into the temporary folder,
    by content digest, so concurrent callers and later runs share it). Without it: $MINIDINO_OFFICIAL_REPO,
    then the newest ../shared/official/dinov2-*.tar.gz beside this checkout.

    Examples:
        >>> path = official_repo()           # None on a fresh clone without ../shared/official/
        >>> path is None or (Path(path) / "hubconf.py").is_file()
        True
    """
    if repo is None:
        repo = os.environ.get(REPO_ENV) or None
    if repo is None:
        tarballs = sorted(SHARED_SNAPSHOTS.glob("dinov2-*.tar.gz")) if SHARED_SNAPSHOTS.is_dir() else []
        if not tarballs:
            return None
        repo = tarballs[-1]
    path = Path(repo)
    if path.is_dir():
        if not (path / "hubconf.py").is_file():
            raise ReferenceUnavailable(f"{path} has no hubconf.py: not a copy of the official DINOv2 hub code")
        return str(path)
    if not path.is_file() or not path.name.endswith((".tar.gz", ".tgz")):
        raise ReferenceUnavailable(f"{path}: expected a folder of the official hub code or a .tar.gz of one")
    return str(_unpack_once(path))


def _unpack_once(tarball: Path) -> Path:
    """Unpack `tarball` into <tmp>/minidino-official-<digest> (atomically: a half-unpacked copy is never used)."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"minidino-official-{digest}"
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        with tarfile.open(tarball) as tar:
            tar.extractall(staging, filter="data")  # "data": no links out, no devices, no absolute paths
        try:
            os.replace(staging, target)
        except OSError:  # another process got there first: use its copy
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    roots = [p.parent for p in target.glob("*/hubconf.py")] + ([target] if (target / "hubconf.py").is_file() else [])
    if len(roots) != 1:
        raise ReferenceUnavailable(f"{tarball}: expected one folder with hubconf.py inside, found {len(roots)}")
    return roots[0]


def snapshot_available() -> bool:
    """True when the PyPI `dinov2` snapshot (its models.vision_transformer) can be imported.

    Examples:
        >>> isinstance(snapshot_available(), bool)     # pip install --no-deps dinov2==0.0.1.dev2 makes it True
        True
    """
    try:
        with _quiet_import(), _own_dinov2_package():  # find_spec imports the parent packages
            return importlib.util.find_spec("dinov2.models.vision_transformer") is not None
    except ModuleNotFoundError:
        return False


@contextlib.contextmanager
def _own_dinov2_package() -> Iterator[None]:
    """The PyPI snapshot and the hub code are both a top-level package named `dinov2`: whichever is
    imported first would shadow the other in sys.modules. Each import runs with no `dinov2` module
    loaded and leaves none behind (the built models keep the modules they need alive)."""
    def ours() -> list[str]:
        return [k for k in sys.modules if k == "dinov2" or k.startswith("dinov2.")]

    saved = {k: sys.modules.pop(k) for k in ours()}
    try:
        yield
    finally:
        for k in ours():
            del sys.modules[k]
        sys.modules.update(saved)


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """The snapshot's layers log "xFormers not available" on import: irrelevant, it runs without."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logging.disable(previous)


def official_model(name: str, repo: str | os.PathLike | None = None, *, layers: int | None = None,
                   pypi: bool = False, meta: bool = False, weights: str | None = None,
                   depth_range: tuple[float, float] | None = None, **overrides: Any) -> OfficialModel:
    """The official implementation of hub model `name` (official random init, eval mode).

    repo: the official hub code (a folder or .tar.gz; default: see official_repo), loaded
    through torch.hub; pypi=True (or no hub code found) uses the installed PyPI snapshot instead.
    layers: 1 or 4 for the `*_lc` classifiers (hub code only). overrides: `depth=` builds only
    the first blocks, for fast tests of the big models; with the hub code (whose entry points
    take no depth) the model is then built on the meta device, cut to its first `depth` blocks
    and left UNINITIALISED: load a state dict before use.
    weights / depth_range: passed to the hub's depthers (`*_ld`, `*_dd`). meta=True builds the
    whole model on the meta device (nothing allocated): load a state dict with assign=True.
    Raises ReferenceUnavailable when no source can build it.

    Examples:
        >>> if official_repo() or snapshot_available():           # the official code may be absent (a fresh clone)
        ...     ref = official_model("dinov2_vits14", depth=1)
        ...     print(type(ref.module).__name__)
        ... else:
        ...     print("DinoVisionTransformer")
        DinoVisionTransformer
    """
    hub = None if pypi else official_repo(repo)
    if hub is not None:
        if set(overrides) - {"depth"}:
            raise TypeError(f"overrides {sorted(set(overrides) - {'depth'})}: the hub code takes only depth=")
        kw: dict[str, Any] = {"layers": layers} if layers is not None else {}
        kw.update({k: v for k, v in (("weights", weights), ("depth_range", depth_range)) if v is not None})
        depth = overrides.get("depth")
        with _quiet_import(), _own_dinov2_package(), (torch.device("meta") if depth or meta else contextlib.nullcontext()):
            module = torch.hub.load(hub, name, source="local", pretrained=False, trust_repo=True, verbose=False, **kw)
        if depth:
            backbone = getattr(module, "backbone", module)
            backbone.blocks = backbone.blocks[:depth]
            backbone.n_blocks = depth  # the official model counts its blocks in this attribute
            if not meta:
                module = module.to_empty(device="cpu")
        return OfficialModel(module.eval(), f"official hub code at {hub} (torch.hub)", "fused")
    entry = lookup(name)
    config = entry.config.replace(**overrides)
    if entry.task != "backbone" or config.num_register_tokens:
        raise ReferenceUnavailable(
            f"{name}: the PyPI dinov2 snapshot (April 2023) has no register tokens or linear heads; "
            "pass repo= a checkout of facebookresearch/dinov2")
    if not snapshot_available():
        raise ReferenceUnavailable(
            "the official code is not available: pass repo= a checkout of facebookresearch/dinov2, or "
            "`pip install --no-deps dinov2==0.0.1.dev2` (the PyPI snapshot, plain backbones only)")
    with _quiet_import(), _own_dinov2_package():
        vt = importlib.import_module("dinov2.models.vision_transformer")
        version = getattr(importlib.import_module("dinov2"), "__version__", "?")
    module = vt.DinoVisionTransformer(
        img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans,
        embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
        mlp_ratio=config.ffn_hidden_dim / config.embed_dim if config.ffn_layer == "mlp" else 4.0,
        ffn_layer=_SNAPSHOT_FFN[config.ffn_layer], init_values=config.layerscale_init, block_chunks=0,
    )
    return OfficialModel(module.eval(), f"PyPI dinov2 {version} (April-2023 snapshot of the official code)", "explicit")


_DINOTXT_CONFIG = dict(
    embed_dim=2048, vision_model_freeze_backbone=True, vision_model_train_img_size=224, vision_model_use_class_token=True,
    vision_model_use_patch_tokens=True, vision_model_num_head_blocks=2, vision_model_head_blocks_drop_path=0.3,
    vision_model_use_linear_projection=False, vision_model_patch_tokens_pooler_type="mean", vision_model_patch_token_layer=1,
    text_model_freeze_backbone=False, text_model_num_head_blocks=0, text_model_head_blocks_is_causal=False,
    text_model_head_blocks_drop_prob=0.0, text_model_tokens_pooler_type="argmax", text_model_use_linear_projection=True,
)


def official_dinotxt(repo: str | os.PathLike | None = None, *, depth: int | None = None, text_width: int = 1280,
                     text_num_heads: int = 20, text_layers: int = 24) -> nn.Module:
    """The official dino.txt model (eval mode), built from the hub code's own classes with the
    entry point's configuration, without downloading anything: the entry point itself always
    downloads the published weights. Official random init, except that depth= cuts the backbone
    (which is then UNINITIALISED: load a state dict); text_* reduce the text transformer (the official class takes them as arguments).
    Raises ReferenceUnavailable without the hub code.

    Examples:
        >>> if official_repo():                                    # the official code may be absent (a fresh clone)
        ...     ref = official_dinotxt(depth=1, text_width=64, text_num_heads=2, text_layers=1)
        ...     print(type(ref).__name__ == "DinoTxt" or type(ref).__name__)  # doctest: +SKIP
    """
    hub = official_repo(repo)
    if hub is None:
        raise ReferenceUnavailable("no official hub code: ../shared/official/dinov2-*.tar.gz not found and "
                                   f"${REPO_ENV} unset")
    backbone = official_model("dinov2_vitl14_reg", hub, **({"depth": depth} if depth else {})).module
    sys.path.insert(0, hub)
    try:
        with _quiet_import(), _own_dinov2_package():
            dm = importlib.import_module("dinov2.hub.text.dinotxt_model")
            tt = importlib.import_module("dinov2.hub.text.text_transformer")
            dw = importlib.import_module("dinov2.hub.text.dinov2_wrapper")
            text = tt.TextTransformer(context_length=77, vocab_size=49408, dim=text_width, num_heads=text_num_heads,
                                      num_layers=text_layers, ffn_ratio=4.0, is_causal=True)
            model = dm.DinoTxt(dm.DinoTxtConfig(**_DINOTXT_CONFIG), dw.DINOv2Wrapper(backbone), text)
            model.init_weights()  # the official init of the heads and the text tower (construction leaves some of it empty)
    finally:
        sys.path.remove(hub)
    return model.eval()


def official_tokenizer(vocab_file: str | os.PathLike, repo: str | os.PathLike | None = None) -> Any:
    """The official dino.txt tokenizer (`get_tokenizer()` of the hub code) over a local vocabulary
    file: its download (a `requests.get` of the official URL) is answered with the file's bytes.

    Examples:
        >>> tok = official_tokenizer("bpe_simple_vocab_16e6.txt.gz")   # CLIP's file, a local copy  # doctest: +SKIP
        >>> tok.tokenize(["a dog"])[0, :4].tolist()                    # doctest: +SKIP
        [49406, 320, 1929, 49407]
    """
    hub = official_repo(repo)
    if hub is None:
        raise ReferenceUnavailable("no official hub code for the tokenizer")
    try:
        import requests  # the official tokenizer downloads with it
    except ImportError:
        raise ReferenceUnavailable("the official tokenizer needs the `requests` package") from None

    data = Path(vocab_file).read_bytes()

    class _Response:
        status_code, ok, content = 200, True, data

        def raise_for_status(self) -> None:
            pass

    saved = requests.get
    requests.get = lambda url, *a, **k: _Response()  # type: ignore[assignment]
    sys.path.insert(0, hub)
    try:
        with _quiet_import(), _own_dinov2_package():
            return importlib.import_module("dinov2.hub.dinotxt").get_tokenizer()
    finally:
        requests.get = saved
        sys.path.remove(hub)
