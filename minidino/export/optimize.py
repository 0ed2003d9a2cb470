"""A fast inference model: `minidino.optimize(model, ...)`.

The eager model stays the reference (bit-identical to the official code). `optimize` returns a
separate, inference-only wrapper whose switches trade exactness for speed, each opt-in or
stated here with what it does to the numbers:

* fold_layerscale (default True): LayerScale is a per-channel scale right after a linear
  layer, so it folds into that layer: W' = diag(gamma) W, b' = gamma * b (ls1 into attn.proj,
  ls2 into mlp.fc2 / mlp.w3). One elementwise pass less per branch. Mathematically equal;
  float32 outputs move by rounding only (about 1e-6, see tests/test_optimize.py).
* dtype (default None: keep the model's): torch.bfloat16 or torch.float16 casts the weights
  (after folding, which is done in float32) and the inputs. bf16 runs on tensor cores on GPUs
  and on AMX / AVX512_BF16 on recent x86 CPUs; on a CPU without them bf16 is emulated and
  SLOWER than float32 (about 3x for ViT-S/14 on such a CPU), and `optimize` warns
  (minidino.utils.hardware). Not exact: bf16 keeps 8 bits of mantissa (cosine similarity to
  float32 > 0.999, max abs stated by the benchmark and the tests).
* compile (default "auto": on CUDA only): torch.compile (inductor) of the whole forward pass:
  norms, GELU, bias and residual adds fused. On CPU with weight freezing (oneDNN prepacked
  weights), but not by default: on a 2-core AMX Xeon it took minutes and gave nothing back
  (ViT-S 224 b8, one run: float32 17.5 img/s compiled vs 17.9 eager, bf16 44.5 vs 54.2;
  benchmarks/results/cpu_2026-11-26_compile_vs_eager.md). The first call of each new input
  shape pays the compilation.
* cuda_graphs ("auto": on CUDA for batches <= graph_max_batch): one CUDA graph captured per
  input shape, then replayed: removes the per-kernel launch cost that dominates batch-1
  latency. Outputs are copied out of the graph's static buffers, so they are never overwritten.

The wrapper computes the positions eagerly, outside the compiled / captured function, and
passes them in as inputs: DINOv2's position embedding with the model's own cached resize (so
the interpolation quirks of posembed.py are exactly the eager ones), DINOv3's RoPE tables
from its stored periods. Masks and lists of differently sized batches are
not supported here: use the eager model for those.
"""

from __future__ import annotations

import copy as _copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..models.backbone import Features, VisionTransformerBase
from ..models.dinov3 import Dinov3VisionTransformer
from ..models.layers import Block, Mlp, SwiGLUFFN, SwiGLUSplitFFN
from ..models.rope import Rope

__all__ = ["optimize", "OptimizedModel", "fold_layerscale"]

_FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@torch.no_grad()
def fold_layerscale(model: VisionTransformerBase) -> VisionTransformerBase:
    """Fold every block's ls1 / ls2 into the linear layer before it, in place; returns the model.

    (x W^T + b) * gamma == x (diag(gamma) W)^T + gamma * b. The LayerScale modules become
    nn.Identity, so the state dict of a folded model no longer has `ls1.gamma` keys: fold
    a copy (optimize does) and save the original.

    Examples:
        >>> import copy
        >>> from minidino.conformance.golden import random_model
        >>> model = random_model("dinov2_vits14", depth=1)
        >>> folded = fold_layerscale(copy.deepcopy(model))
        >>> x = torch.randn(1, 3, 28, 28)
        >>> with torch.no_grad():
        ...     float((folded(x) - model(x)).abs().max()) < 1e-4
        True
    """
    for blk in model.blocks:
        if not isinstance(blk, Block):
            raise TypeError(f"fold_layerscale expects minidino Blocks, got {type(blk).__name__}")
        last = blk.mlp.fc2 if isinstance(blk.mlp, Mlp) else blk.mlp.w3 if isinstance(blk.mlp, (SwiGLUFFN, SwiGLUSplitFFN)) else None
        if last is None:
            raise TypeError(f"unknown FFN {type(blk.mlp).__name__}: cannot fold ls2")
        for ls_name, linear in (("ls1", blk.attn.proj), ("ls2", last)):
            ls = getattr(blk, ls_name)
            if isinstance(ls, nn.Identity):
                continue  # already folded
            gamma = ls.gamma
            if gamma.is_meta:
                raise ValueError("fold_layerscale needs real weights; the model is on the meta device (load it first)")
            linear.weight.mul_(gamma.to(linear.weight.dtype)[:, None])  # (D_out, D_in) rows scaled
            if linear.bias is not None:
                linear.bias.mul_(gamma.to(linear.bias.dtype))
            setattr(blk, ls_name, nn.Identity())
    return model


class _Forward(nn.Module):
    """The forward pass without checks or masks: (B, 3, H, W) and the positions -> x_norm, x_prenorm (B, N, D).

    The same operations as the model's prepare_tokens_with_masks and _run_blocks, with the positions
    passed in, computed outside: DINOv2's position embedding (1, 1 + h*w, D) by the model's cached
    eager resize; DINOv3's RoPE tables, sin and cos (h*w, hd). This is the module that is compiled
    and captured.
    """

    def __init__(self, model: VisionTransformerBase) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: Tensor, *positions: Tensor) -> tuple[Tensor, Tensor]:
        m = self.m
        B = x.shape[0]
        t = m.patch_embed(x)  # (B, h*w, D)
        rope = None
        if isinstance(m, Dinov3VisionTransformer):  # [cls, storage, patches], rotated in every block
            extra = [m.storage_tokens.expand(B, -1, -1)] if m.num_register_tokens else []  # (B, R, D)
            t = torch.cat([m._class_token(False).expand(B, -1, -1), *extra, t], dim=1)  # (B, 1 + R + h*w, D)
            rope = Rope(*positions)
        else:  # DINOv2: the position embedding added to cls and patches, registers inserted after
            t = torch.cat((m.cls_token.expand(B, -1, -1), t), dim=1) + positions[0]  # (B, 1 + h*w, D)
            if m.num_register_tokens:
                reg = m.register_tokens.expand(B, -1, -1)  # (B, R, D)
                t = torch.cat((t[:, :1], reg, t[:, 1:]), dim=1)  # (B, 1 + R + h*w, D)
        for blk in m.blocks:
            t = blk(t, rope=rope)  # (B, N, D)
        return m.norm(t), t


_fold_layerscale = fold_layerscale  # optimize's argument of the same name shadows the function


class _Graph:
    """One captured CUDA graph for one input shape: static input, static outputs."""

    def __init__(self, fn: Any, x: Tensor, positions: tuple[Tensor, ...], warmup: int = 3) -> None:
        self.x = x.clone()
        self.positions = positions  # held here, so the addresses the graph reads stay valid
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up outside the graph (compilation, autotuning, cuBLAS handles)
            for _ in range(warmup):
                fn(self.x, *self.positions)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(self.x, *self.positions)

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        self.x.copy_(x)
        self.graph.replay()
        return tuple(o.clone() for o in self.out)


class OptimizedModel(nn.Module):
    """An inference-only backbone (either family) made by `optimize`; forward_features / forward as the model's.

    Outputs are in the compute dtype (`self.dtype`). `self.model` is the transformed copy.

    Examples:
        >>> fast = optimize(minidino.create_model("dinov2_vits14", depth=1), compile=False)
        >>> type(fast).__name__, tuple(fast.forward_features(torch.randn(1, 3, 28, 28))["x_norm_patchtokens"].shape)
        ('OptimizedModel', (1, 4, 384))
    """

    def __init__(
        self, model: VisionTransformerBase, *, compile: bool, cuda_graphs: bool | str, graph_max_batch: int,
        compile_options: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = model.patch_embed.proj.weight.dtype
        self.cuda_graphs = cuda_graphs
        self.graph_max_batch = graph_max_batch
        self._graphs: dict[tuple, _Graph] = {}
        fn: Any = _Forward(model)
        if compile:
            options = dict(compile_options or {})
            if model.patch_embed.proj.weight.device.type == "cpu" and not {"backend", "mode", "options"} & set(options):
                # Freezing folds the (constant) weights into the graph and prepacks them for oneDNN.
                # (torch.compile takes a mode or options, not both: a given mode wins.)
                options["options"] = {"freezing": True}
            fn = torch.compile(fn, **options)
        self._fn = fn

    def _use_graph(self, x: Tensor) -> bool:
        if x.device.type != "cuda" or self.cuda_graphs is False:
            return False
        return self.cuda_graphs is True or x.shape[0] <= self.graph_max_batch

    @torch.inference_mode()
    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> Features:
        """As the model's forward_features for one batch without masks."""
        m = self.model
        if masks is not None:
            raise ValueError("an optimized model takes no masks; run the eager model for masked inputs")
        if isinstance(x, (list, tuple)):
            raise TypeError("an optimized model takes one (B, 3, H, W) tensor; run the eager model for lists of sizes")
        if isinstance(x, Tensor) and x.is_floating_point():
            x = x.to(self.dtype)
        h, w = m._check_images(x)  # the eager model's checks and messages
        if isinstance(m, Dinov3VisionTransformer):
            positions: tuple[Tensor, ...] = tuple(m.rope_tables(h, w))  # sin, cos (h*w, hd), float32
        else:
            positions = (m.interpolate_pos_encoding(h, w, self.dtype),)  # (1, 1 + h*w, D), eager and cached
        if self._use_graph(x):
            key = (tuple(x.shape), x.dtype, x.device)
            if key not in self._graphs:
                if len(self._graphs) >= 8:  # each graph holds its own memory pool
                    self._graphs.clear()
                self._graphs[key] = _Graph(self._fn, x, tuple(p.clone() for p in positions))
            x_norm, x_prenorm = self._graphs[key](x)
        else:
            x_norm, x_prenorm = self._fn(x, *positions)
        return m._split(x_norm, x_prenorm, None)

    def forward(self, x: Tensor) -> Tensor:
        """The normalised class token, (B, D)."""
        return self.forward_features(x)["x_norm_clstoken"]


def optimize(
    model: VisionTransformerBase,
    *,
    dtype: torch.dtype | None = None,
    compile: bool | str = "auto",
    cuda_graphs: bool | str = "auto",
    fold_layerscale: bool = True,
    copy: bool = True,
    graph_max_batch: int = 32,
    compile_options: dict[str, Any] | None = None,
) -> OptimizedModel:
    """A fast inference model made from `model` (see the module docstring for each switch).

    dtype: None keeps the model's dtype; torch.bfloat16 / torch.float16 for the fast, non-exact
    modes. compile: True, False or "auto" (on CUDA only): torch.compile the forward pass
    (`compile_options` go to torch.compile, e.g.
    {"mode": "max-autotune-no-cudagraphs"} or {"backend": "eager"}). cuda_graphs: True, False or
    "auto" (CUDA graphs on CUDA for batches <= graph_max_batch). copy=False transforms `model`
    itself (saves memory for ViT-g; the model is then folded and cast).

    Examples:
        >>> from minidino.conformance.golden import random_model
        >>> model = random_model("dinov2_vits14", depth=1)
        >>> fast = optimize(model, compile=False)             # LayerScale folded, float32
        >>> x = torch.randn(2, 3, 28, 28)
        >>> with torch.no_grad():
        ...     float((fast(x) - model(x)).abs().max()) < 1e-4
        True
        >>> tuple(optimize(model, dtype=torch.bfloat16, compile=False)(x).shape)
        (2, 384)
    """
    if not isinstance(model, VisionTransformerBase):
        hint = " (for a *_lc classifier, optimize its .backbone)" if hasattr(model, "backbone") else ""
        raise TypeError("optimize expects a minidino backbone (DinoVisionTransformer or Dinov3VisionTransformer), "
                        f"got {type(model).__name__}{hint}")
    if dtype is not None and dtype not in _FAST_DTYPES:
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    if cuda_graphs not in (True, False, "auto"):
        raise ValueError(f"cuda_graphs must be True, False or 'auto', got {cuda_graphs!r}")
    if compile != "auto" and not isinstance(compile, bool):
        raise TypeError(f"compile must be True, False or 'auto', got {compile!r}")
    if not isinstance(fold_layerscale, bool) or not isinstance(copy, bool):
        raise TypeError("fold_layerscale and copy must be bools")
    if not isinstance(graph_max_batch, int) or graph_max_batch < 1:
        raise ValueError(f"graph_max_batch must be a positive int, got {graph_max_batch!r}")
    if compile_options is not None and not isinstance(compile_options, dict):
        raise TypeError(f"compile_options must be a dict of torch.compile arguments, got {type(compile_options).__name__}")
    weight = model.patch_embed.proj.weight
    if weight.is_meta:
        raise ValueError("the model is on the meta device: load its weights (load_state_dict(..., assign=True)) first")
    if cuda_graphs is True and weight.device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a model on a CUDA device, the model is on {weight.device}")
    if model.attn_impl != "fused":
        raise ValueError(f"optimize runs the fused attention path; the model has attn_impl={model.attn_impl!r}")
    if dtype is not None:
        from ..utils.hardware import slow_dtype_message

        slow = slow_dtype_message(dtype, weight.device)
        if slow is not None:  # said, not silently slow (the caller may still want the numbers of this dtype)
            warnings.warn(f"optimize(dtype={dtype}): {slow}", RuntimeWarning, stacklevel=2)
    if compile == "auto":  # on CUDA, or wherever torch.compile arguments were given
        compile = weight.device.type == "cuda" or compile_options is not None
    m = _copy.deepcopy(model) if copy else model
    m.eval().requires_grad_(False)
    if fold_layerscale:
        _fold_layerscale(m)
    if dtype is not None:
        m.to(dtype)
    if hasattr(m, "_pos_cache"):  # DINOv2: resized position embeddings of the unfolded, uncast weights
        m._pos_cache.clear()
    return OptimizedModel(m, compile=compile, cuda_graphs=cuda_graphs, graph_max_batch=graph_max_batch,
                          compile_options=compile_options)
