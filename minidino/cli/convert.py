"""`minidino convert SRC DST`: rewrite a DINOv2 checkpoint of any layout as safetensors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """Plan the outputs against the source, read it, check that what would be written loads (the backbone
    strictly into a model of its architecture, every head's values), then write all files together."""
    from .. import weights
    from ..catalogue import get_config
    from ..heads import LinearClassifier
    from ..models.dinov2 import DinoVisionTransformer
    from ..weights.load import _load_part, _prepare, check_backbone, check_tensors, fill_dinov3
    from .errors import EXIT_USAGE, fail
    from .outputs import input_files, plan_outputs

    folder = args.layout != "official" and (Path(args.dst).is_dir() or args.dst.endswith(("/", "\\")))
    dst = Path(args.dst) / "model.safetensors" if folder else Path(args.dst)
    outputs = [(dst, "DST")] + ([(dst.with_name("config.json"), "DST's config.json")] if folder else [])
    local = "://" not in args.src
    plan_outputs(outputs, [(f, "SRC") for f in input_files(args.src)] if local else [])  # before SRC is read
    parts, layout, name, backbone_layout = _prepare(args.src, args.network, None, True)
    if "backbone" not in parts:
        fail(f"minidino convert: {name} holds no backbone ({', '.join(sorted(parts))}); nothing to convert", EXIT_USAGE)
    sd = parts["backbone"]
    filled = fill_dinov3(sd, backbone_layout)  # a transformers / timm DINOv3 file: what the official one has and it lacks
    heads = get_config(args.model).num_heads if args.model else args.num_heads
    config = check_backbone(sd, num_heads=heads)  # what load_weights accepts: else status 3, nothing written
    looks_like = weights.guess_hub_name(sd)
    keep_heads = args.with_heads and args.layout == "official"
    if keep_heads:
        sd = dict(sd)
        for part in ("linear_head", "dino_head"):
            if part not in parts:
                continue
            check_tensors(parts[part], f"{part} of {name}")
            if part == "linear_head":  # it must fit a classifier on this backbone: (1000, (1 + layers) * D)
                w = parts[part].get("weight")
                layers = w.shape[1] // config.embed_dim - 1 if w is not None and w.ndim == 2 else 0
                if layers not in (1, 4) or w.shape[1] % config.embed_dim:
                    raise weights.CheckpointError(f"the linear head of {name} ({tuple(w.shape) if w is not None else 'no weight'}) "
                                                  f"does not fit a backbone of width {config.embed_dim}")
                clf = LinearClassifier(DinoVisionTransformer(config, device="meta"), layers=layers,
                                       num_classes=w.shape[0], device="meta")
                _load_part(clf.linear_head, parts[part], True, part, looks_like, weights.LoadReport(layout=layout))
            sd.update({f"{part}.{k}": v for k, v in parts[part].items()})
    side = {"config.json": json.dumps(weights.huggingface_config(config), indent=2) + "\n"} if folder else None
    weights.save_weights(sd, dst, layout=args.layout, side_files=side)  # the weights and config.json together
    dropped = sorted(p for p in parts if p != "backbone" and not (keep_heads and p in ("linear_head", "dino_head")))
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
