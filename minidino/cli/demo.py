"""`minidino demo`: the offline demo on synthetic scenes (the pipeline is minidino/cli/demo_scenes.py)."""

from __future__ import annotations

import argparse

from ._common import add_model_args


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ._common import args_preprocessing, check_memory, describe_weights, model_from_args, preflight_model, weights_spec
    from .demo_scenes import FILES, run_demo
    from .outputs import check_output_dir, locked, plan_outputs
    from .pca import model_inputs

    patch = preflight_model(args).patch_size
    if not patch <= args.size <= 2044:
        raise SystemExit(f"minidino demo: --size {args.size} must be between {patch} and 2044 pixels")
    out = check_output_dir(args.out)
    # its files have fixed names: they replace those of an earlier demo in the folder (docs/cli-errors.md)
    plan_outputs([(out / name, "a demo picture") for name in FILES] + [(out / ".demo.lock", "the lock of --out")],
                 model_inputs(args, []))
    check_memory(args, 4, args.size, args.size, what=f"for 4 scenes at --size {args.size}")
    t0 = time.perf_counter()
    label = f"{args.model}, {describe_weights(args)}"
    stats = args_preprocessing(args)  # the weights' mean and std
    print(label)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out / "demo"):
        model = model_from_args(args)
        model = getattr(model, "backbone", model)  # a *_lc classifier: picture its backbone
        with torch.no_grad():
            run_demo(args.out, model, weights_label=label, size=args.size, mean=stats.mean, std=stats.std)
    print(f"done in {time.perf_counter() - t0:.1f} s: pictures in {args.out}/, the scenes in {args.out}/samples/")
    if weights_spec(args).startswith("random:"):
        print("These come from RANDOM weights: they show that decoding, preprocessing, the forward pass and the "
              "pictures work, not what DINOv2 learned. For real features, run the same with the official weights:\n"
              "    minidino demo --weights official     # downloads the checkpoint once (verified, cached)\n"
              "    minidino demo --weights PATH         # or a checkpoint file you already have")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="offline demo: embed and picture four synthetic scenes (random weights unless --weights)",
        description="Draw four synthetic scenes (no photos, nothing downloaded), embed them and write under --out: "
                    "the scenes (samples/*.png), pca.png (the patch features' first 3 principal components as RGB, "
                    "next to each scene), attention.png (the class token's attention per head in the last block) "
                    "and similarity.txt (cosine similarity of the class tokens). By default the weights come from "
                    "the golden-vector generator: RANDOM weights that check the pipeline, labelled so on every "
                    "picture. --weights official (downloaded once) or --weights PATH gives real DINOv2 features.",
    )
    p.add_argument("--out", default="minidino_demo", metavar="DIR", help="folder for the pictures, created if needed "
                   "(default: minidino_demo)")
    p.add_argument("--size", type=int, default=224, help="side of the square scenes in pixels, rounded to a "
                   "multiple of 14 (default: 224)")
    add_model_args(p, default_weights="random:0")
    p.set_defaults(func=run)
