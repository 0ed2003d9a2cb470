"""`minidino convert SRC DST`: rewrite a DINOv2 checkpoint of any layout as safetensors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from .. import weights
    from ..catalogue import get_config
    from ..weights.load import _prepare, fill_dinov3

    from .outputs import check_output

    if not (args.layout != "official" and (Path(args.dst).is_dir() or args.dst.endswith(("/", "\\")))):
        check_output(args.dst, "DST")  # before the source is read: a read-only folder fails now, not after
    elif Path(args.dst).is_dir():
        check_output(Path(args.dst) / "model.safetensors", "DST")
    parts, layout, name, backbone_layout = _prepare(args.src, args.network, None, True)
    if "backbone" not in parts:
        print(f"error: {name} holds no backbone ({', '.join(sorted(parts))}); nothing to convert", file=sys.stderr)
        return 2
    sd = parts["backbone"]
    filled = fill_dinov3(sd, backbone_layout)  # a transformers / timm DINOv3 file: what the official one has and it lacks
    looks_like = weights.guess_hub_name(sd)
    dst = Path(args.dst)
    if args.layout != "official" and (dst.is_dir() or args.dst.endswith(("/", "\\"))):
        dst = dst / "model.safetensors"  # a Hugging Face model folder: weights + config.json
        heads = get_config(args.model).num_heads if args.model else args.num_heads
        config = weights.huggingface_config(weights.infer_config(sd, num_heads=heads))
        dst.parent.mkdir(parents=True, exist_ok=True)
        (dst.parent / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if args.with_heads and args.layout == "official":
        sd = dict(sd)
        for part in ("linear_head", "dino_head"):
            sd.update({f"{part}.{k}": v for k, v in parts.get(part, {}).items()})
    weights.save_weights(sd, dst, layout=args.layout)
    dropped = sorted(p for p in parts if p != "backbone" and not (args.with_heads and args.layout == "official"
                                                                   and p in ("linear_head", "dino_head")))
    print(f"{name}: {layout} layout, looks like {looks_like}; {len(sd)} tensors -> {dst} ({args.layout} layout)"
          + (f"; left out: {', '.join(dropped)}" if dropped else "")
          + (f"; filled (not in that layout): {len(filled)} tensors ({filled[0]}, ...)" if filled else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..catalogue import list_models

    p = sub.add_parser(
        "convert", help="convert a DINOv2 checkpoint (official, Hugging Face, timm, training...) to safetensors",
        description="Read a DINOv2 checkpoint in any layout minidino knows (official torch.hub .pth, Hugging Face "
                    "facebook/dinov2-*, timm, chunked FSDP blocks, training checkpoints with teacher and student) "
                    "without running code from it, and write its backbone as a .safetensors file. With --layout "
                    "huggingface and a folder as DST, a config.json is written too, so transformers' "
                    "from_pretrained(DST) works.",
        epilog="examples:\n  minidino convert dinov2_vits14_pretrain.pth vits14.safetensors\n"
               "  minidino convert teacher_checkpoint.pth hf_vits14/ --layout huggingface\n"
               "  minidino convert training.pth student.safetensors --network student",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="checkpoint file (.pth, .bin, .safetensors), Hugging Face folder, or http(s) URL")
    p.add_argument("dst", metavar="DST", help="output .safetensors file (or a folder, for the Hugging Face layouts)")
    p.add_argument("--layout", choices=["official", "huggingface", "huggingface_hub"], default="official",
                   help="key names to write: official torch.hub keys (default); huggingface: current transformers "
                        "Dinov2Model names; huggingface_hub: the older names stored in the facebook/dinov2-* repos")
    p.add_argument("--network", choices=["teacher", "student"], default="teacher",
                   help="which network of a training checkpoint to convert (default: teacher)")
    p.add_argument("--model", default=None, choices=sorted(list_models(False, False)), metavar="NAME",
                   help="hub name whose head count config.json uses (default: the model the weights look like)")
    p.add_argument("--num-heads", type=int, default=None, metavar="N",
                   help="attention heads, for widths no hub model has (default: width // 64, as in every DINOv2)")
    p.add_argument("--with-heads", action="store_true",
                   help="official layout only: also keep the linear head / DINO head, as linear_head.* / dino_head.*")
    p.set_defaults(func=run)
