"""Write the DINOv3 golden cases from the OFFICIAL DINOv3 code (run as a black box) and add them to index.json.

    PYTHONPATH=. python tests/golden/make_dinov3_golden.py   # needs ../shared/official/dinov3-*.tar.gz (or $MINIDINO_OFFICIAL_DINOV3)

The official backbones (facebookresearch/dinov3 at 6876159, DINOv3 License: only their outputs are
stored here, never their code or weights) are built with pretrained=False on the meta device, cut to
their first `depth` blocks (full width) and given the splitmix64 generator's weights over their own
state-dict keys (minidino/conformance/generator.py, with its two DINOv3 rules: the RoPE periods +-10%
around the official formula, the official 1/0/1 key-bias masks). Inputs: generated images, one side
not a multiple of 16 (the official model floors the grid), one masked. Stored: slices of every output
of the official API (forward_features, get_intermediate_layers with the class and storage tokens).
ViT-S/16 runs all 12 blocks; the larger models their first blocks, so the cases stay fast and the
files small (the 7B's channels are sliced too).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from minidino.conformance import golden
from minidino.conformance.reference_v3 import official_dinov3, official_dinov3_repo

HERE = Path(__file__).resolve().parent
# (model, weights, depth, seed, patch stride, channel stride of the slices)
CASES = [("dinov3_vits16", None, 12, 31, 7, 1), ("dinov3_vits16plus", None, 2, 32, 7, 1),
         ("dinov3_vitb16", None, 2, 33, 7, 2), ("dinov3_vitl16", None, 2, 34, 7, 2),
         ("dinov3_vitl16", "SAT493M", 1, 35, 7, 2), ("dinov3_vitl16plus", None, 2, 36, 7, 2),
         ("dinov3_vith16plus", None, 1, 37, 7, 3), ("dinov3_vit7b16", None, 1, 38, 13, 8)]
# (tag, shape, image stream, mask stream, mask p): 224 px for ViT-S/S+/B, smaller for the wide models
INPUTS = {"small": [("r224", (2, 3, 224, 224), 1000, None, None), ("r203x125", (1, 3, 203, 125), 1001, None, None),
                    ("mask224", (1, 3, 224, 224), 1002, 2002, 0.3)],
          "wide": [("r112x96", (2, 3, 112, 96), 1000, None, None), ("r77x61", (1, 3, 77, 61), 1001, None, None),
                   ("mask96", (1, 3, 96, 96), 1002, 2002, 0.3)]}


def outputs(depth: int, ps: int, cs: int) -> list[str]:
    """The stored outputs: every ps-th patch token, every cs-th channel (the full tensors of the small models)."""
    blocks = sorted({0, depth - 1})
    gil = (f"get_intermediate_layers(n={blocks},reshape=True,return_class_token=True,"
           "return_extra_tokens=True,norm=True)")
    ch = f",::{cs}" if cs > 1 else ""  # the channel dimension D, last (or second of (B, D, h, w))
    out = [f"forward_features/x_norm_clstoken[:{ch}]" if ch else "forward_features/x_norm_clstoken",
           f"forward_features/x_storage_tokens[:,:{ch}]" if ch else "forward_features/x_storage_tokens",
           f"forward_features/x_norm_patchtokens[:,::{ps}{ch}]", f"forward_features/x_prenorm[:,::{ps}{ch}]"]
    for block in blocks:
        out += [f"{gil}/{block}/patch[:{ch or ',:'},::3,::3]",
                f"{gil}/{block}/cls" + (f"[:{ch}]" if ch else ""), f"{gil}/{block}/storage" + (f"[:,:{ch}]" if ch else "")]
    out.append(f"get_intermediate_layers(n=1,norm=False)/0[:,::{ps}{ch}]")
    return out


def main() -> int:
    if official_dinov3_repo() is None:
        print("no official DINOv3 code (../shared/official/dinov3-*.tar.gz or $MINIDINO_OFFICIAL_DINOV3)", file=sys.stderr)
        return 1
    index = json.loads((HERE / "index.json").read_text())
    index["cases"] = [c for c in index["cases"] if not c["model"].startswith("dinov3_")]
    for name, weights, depth, seed, ps, cs in CASES:
        ref = official_dinov3(name, depth=depth, weights=weights, meta=True).module
        sd = golden.generate_for(ref, seed)
        ref.load_state_dict(sd, strict=True, assign=True)
        ref.eval()
        case = {"model": name, **({"weights": weights} if weights else {}), "depth": depth, "weight_seed": seed,
                "weights_sha256": golden.weights_sha256(sd), "file": f"{golden.case_name({'model': name, **({'weights': weights} if weights else {})})}.safetensors",
                "source": f"official DINOv3 code 6876159 ({Path(official_dinov3_repo()).name}), torch {torch.__version__}, "
                          "CPU float32", "inputs": []}
        tensors = {}
        for tag, shape, stream, mask_stream, p in INPUTS["small" if ref.embed_dim < 1000 else "wide"]:
            B, _, H, W = shape
            x = golden.generate_images(seed, stream, shape)
            masks = golden.generate_masks(seed, mask_stream, B, (H // 16) * (W // 16), p) if mask_stream else None
            specs = outputs(depth, ps, cs)
            if masks is not None:
                specs = [s for s in specs if s.startswith("forward_features/")]  # get_intermediate_layers takes no masks
                tensors[f"{tag}/masks"] = masks
            cache: dict = {}
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for spec in specs:
                    tensors[f"{tag}/{spec}"] = golden._evaluate(ref, x, masks, spec, cache).contiguous().clone()
            case["inputs"].append({"tag": tag, "shape": list(shape), "image_stream": stream, "mask_stream": mask_stream,
                                   "mask_p": p, "outputs": specs, "intermediate_layers": sorted({0, depth - 1})})
        save_file(tensors, str(HERE / case["file"]), metadata={"source": case["source"]})
        size = (HERE / case["file"]).stat().st_size
        print(f"{case['file']}: {len(tensors)} tensors, {size / 1e3:.0f} kB")
        index["cases"].append(case)
        del ref, sd
    (HERE / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
