"""`minidino info`: parameters, tokens, FLOPs and memory of a model, from its config alone.

Nothing is allocated or downloaded, and the model itself is not even built: its size comes
from models of one or two blocks on the meta device (minidino.cli._common.model_size), so the
figures for ViT-g/14, or for --config depth=100000000, come as fast as for ViT-S/14. FLOPs count 2 per multiply-add of the matrix
products and the patch convolution (norms, softmax, GELU, residual adds are not counted: they
are under 1% at these widths), the convention of torch.utils.flop_counter.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..models.cost import ModelCost, model_cost
from ..utils import memory
from ._common import HelpFormatter, parse_hw


def parse_size(text: str, patch: int) -> tuple[int, int]:
    """'224' or '224x448' (H x W) -> (H, W), both multiples of the patch size."""
    try:
        return parse_hw(text, patch)
    except ValueError as e:
        raise SystemExit(f"minidino info: --size: {e}") from None


def _si(n: float, unit: str = "") -> str:
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _mib(values: float, bytes_per: int) -> str:
    return f"{values * bytes_per / 2**20:,.1f} MiB"


def normalisation(entry: Any) -> str:
    """The mean and std each weight set of a catalogue row expects (what the commands normalise images with).

    Examples:
        >>> from minidino.catalogue import lookup
        >>> normalisation(lookup("dinov2_vits14"))
        'ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)'
        >>> normalisation(lookup("dinov3_vitl16")).split("; ")[1]
        'SAT493M: mean (0.430, 0.411, 0.296), std (0.213, 0.156, 0.143)'
    """
    from ..catalogue import IMAGENET

    def stats(p: Any) -> str:
        mean, std = (", ".join(f"{v:.3f}" for v in t) for t in (p.mean, p.std))
        return f"{'ImageNet ' if p == IMAGENET else ''}mean ({mean}), std ({std})"

    if len({w.preprocessing for w in entry.weights}) == 1:
        return stats(entry.default_weights.preprocessing)
    return "; ".join(f"{w.name}: {stats(w.preprocessing)}" for w in entry.weights)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..catalogue import FAMILIES, lookup
    from ..factory import vision_backbone
    from ._common import config_overrides, model_size, resolve_model

    spec = resolve_model(args.name, config_overrides(args))  # every field checked; nothing built
    size = model_size(args.name, config_overrides(args))  # parameters from models of one block or two
    entry = lookup(args.name)
    c = spec.config
    H, W = parse_size(args.size, c.patch_size)
    if args.batch_size < 1:
        raise SystemExit(f"minidino info: --batch-size must be >= 1, got {args.batch_size}")
    small = size.small
    backbone = vision_backbone(small)
    cost = model_cost(small, H, W, backbone=backbone)
    L0 = backbone.config.depth  # the blocks built; the costs of the others follow from the config
    per_block = ("qkv + output projections", "attention (q k^T, a v)", "FFN")
    cost = dataclasses.replace(cost, params=size.params, head_params=size.params - size.backbone_params,
                               flops={k: v // L0 * c.depth if k in per_block else v for k, v in cost.flops.items()})
    backbone = backbone if L0 == c.depth else None  # --measure needs the real one: built below if asked
    B = args.batch_size
    h, w = cost.grid
    ffn = f"SwiGLU {c.ffn_hidden_dim}" if c.ffn_layer == "swiglu" else f"GELU MLP {c.ffn_hidden_dim}"
    extra = "storage tokens" if entry.family == "dinov3" else "registers"  # the same thing, named by each family
    print(f"{args.name}: {c.depth} blocks, width D {c.embed_dim}, {c.num_heads} heads of {c.head_dim}, {ffn}, "
          f"{c.num_register_tokens} {extra}, patch {c.patch_size}")
    print(f"  {entry.summary}; weights {', '.join(w.name for w in entry.weights)} ({FAMILIES[entry.family].weights_license})")
    print(f"  normalisation   {normalisation(entry)}")
    part = {"classifier": "linear head", "depther": "depth head"}.get(entry.task, "heads and text encoder")
    head = f" (backbone {cost.params - cost.head_params:,} + {part} {cost.head_params:,})" if cost.head_params else ""
    print(f"  parameters      {cost.params:,} ({cost.params / 1e6:.2f} M){head}")
    print(f"  input           {H}x{W} px -> {h}x{w} = {h * w} patches")
    print(f"  tokens          {cost.tokens} = 1 class + {c.num_register_tokens} {extra} + {h * w} patches")
    print(f"  FLOPs / image   {_si(cost.total_flops, 'FLOP')} ({_si(cost.total_flops / 2)} multiply-adds)")
    for part, f in cost.flops.items():
        print(f"      {part:26s} {_si(f, 'FLOP'):>12s} {100 * f / cost.total_flops:5.1f}%")
    print(f"  weights         {_mib(cost.params, 4)} float32, {_mib(cost.params, 2)} bfloat16/float16")
    print(f"  activations     inference peak inside a block, batch {B} (estimate; the weights come on top):")
    print(f"      fused attention (default)  {_mib(B * cost.act_values_fused, 4)} float32, "
          f"{_mib(B * cost.act_values_fused, 2)} bf16")
    print(f"      explicit attention (maps)  {_mib(B * cost.act_values_explicit, 4)} float32, "
          f"{_mib(B * cost.act_values_explicit, 2)} bf16")
    print(f"      outputs                    {_mib(2 * B * cost.tokens * c.embed_dim, 4)} float32 "
          f"(x_prenorm and the normed tokens, 2 x {B} x {cost.tokens} x {c.embed_dim})")
    if args.measure:
        device = _measure_device(args.device)
        need = measure_estimate(c, cost, B, H, W, device)  # before the model is built, even on meta
        have = memory.available_memory(device)
        if have is not None and need > have and not args.force:
            from .errors import EXIT_RESOURCES, fail

            fail(f"minidino info --measure: one forward needs about {need / 2**30:,.2f} GiB (estimate: weights + "
                 f"explicit-attention activations + outputs) but {device.type} has {have / 2**30:,.2f} GiB available; "
                 "use a smaller --batch-size or --size, or add --force to try anyway", EXIT_RESOURCES)
        if backbone is None:
            from ..factory import build

            backbone = vision_backbone(build(spec, device="meta"))
        measure(backbone, H, W, B, args.device)
    return 0


def _measure_device(name: str) -> Any:
    from ._common import resolve_device

    return resolve_device(name)


def measure_estimate(c: Any, cost: ModelCost, B: int, H: int, W: int, device: Any) -> int:
    """Bytes the --measure forward needs: weights, the input, the larger attention path's peak, the outputs
    (`c` the backbone's DinoConfig)."""
    bytes_per = 2 if device.type == "cuda" else 4  # --measure runs bfloat16 on CUDA, float32 on the CPU
    values = cost.params + B * 3 * H * W + B * cost.act_values_explicit + 2 * B * cost.tokens * c.embed_dim
    return int(values * bytes_per)


def measure(backbone: Any, H: int, W: int, B: int, device_name: str) -> None:
    """Peak memory of one forward_features call, measured (see minidino.utils.memory), both attention paths."""
    import torch

    from ..utils.memory import cpu_peak_supported, peak_growth, prefer_mmap
    from ._common import resolve_device

    device = resolve_device(device_name)
    if device.type == "cpu":
        if not cpu_peak_supported():
            print("  measured        not available: CPU peak memory needs Linux /proc (VmHWM)")
            return
        prefer_mmap()  # this process only exists to print this: RSS then follows the live tensors
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = backbone.to_empty(device=device).to(dtype).eval()  # values do not change the memory: leave them
    for p in model.parameters():
        p.data.normal_(0, 0.02)  # ... but keep them finite, so that no kernel takes a NaN path
    x = torch.randn(B, 3, H, W, device=device, dtype=dtype)
    figures = []
    with torch.inference_mode():
        for impl in ("fused", "explicit"):
            model.attn_impl = impl
            model.forward_features(x)  # warm-up: first-call workspaces, position-embedding cache
            peak = peak_growth(lambda: model.forward_features(x), device)
            figures.append(f"{impl} {peak / 2**20:,.1f} MiB" if peak is not None else f"{impl} -")
    print(f"  measured        peak growth of one forward_features call on {device.type}, "
          f"{str(dtype).removeprefix('torch.')}, batch {B}, outputs included: {', '.join(figures)}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="parameters, tokens, FLOPs and memory of a model at an input size (no download)",
        description="Print a model's size and cost, computed from its config on the meta device (nothing is "
                    "allocated or downloaded): parameter count, patch grid and token count at --size, FLOPs per "
                    "image split by part (2 per multiply-add of matrix products and the patch convolution; norms, "
                    "softmax and activations not counted), the memory of the weights in float32 and bfloat16, and "
                    "an estimate of the peak activation memory of inference for --batch-size images (--measure "
                    "also measures it).",
        epilog="examples:\n  minidino info dinov2_vitg14\n  minidino info dinov2_vitb14_reg --size 518x742 --batch-size 8",
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="hub name, e.g. dinov2_vits14, dinov2_vitl14_reg, dinov2_vitg14_lc")
    p.add_argument("--size", default="224", metavar="S|HxW", help="input size in pixels, multiples of 14 (default 224)")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch for the activation estimate (default 1)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --config depth=4 (repeatable)")
    p.add_argument("--measure", action="store_true",
                   help="also run one forward (random weights, nothing downloaded) and print the measured peak "
                        "memory: RSS growth on CPU (Linux), allocator peak on CUDA (bfloat16)")
    p.add_argument("--device", default="cpu", help="with --measure: cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--force", action="store_true",
                   help="with --measure: run the forward even when the estimate exceeds the memory available "
                        "(otherwise refused with exit status 6, before anything is allocated)")
    p.set_defaults(func=run)
