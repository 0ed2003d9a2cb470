"""Write the depth golden cases from the OFFICIAL depthers (run as a black box) and add them to index.json.

    PYTHONPATH=. python tests/golden/make_depth_golden.py      # needs ../shared/official (or $MINIDINO_OFFICIAL_REPO)

Weights: the splitmix64 generator of minidino/conformance/golden.py over the official model's own state-dict
keys (sorted), with one added key rule: decode_head.conv_depth.head.4.bias centred at 2.0 (so the
DPT depth is not clamped to min_depth). Inputs: generated images of sizes that are not multiples
of 14 (the official model pads). Output: `TAG/depth` = whole_inference(x, img_meta=None, rescale=True).
ViT-S (all three heads) and ViT-B (layers=4, DPT) only: the depthers read the last block, so a case
runs the full backbone, and generating ViT-L/g's 0.3B/1.1B weights would not fit the test budget
(their parity is checked live in tests/test_depth_live.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from minidino.conformance import golden
from minidino.conformance.reference import official_model, official_repo

HERE = Path(__file__).resolve().parent
CASES = [("dinov2_vits14_ld", 1, 21), ("dinov2_vits14_ld", 4, 22), ("dinov2_vits14_dd", None, 23),
         ("dinov2_vitb14_ld", 4, 24), ("dinov2_vitb14_dd", None, 25)]
INPUTS = [("b2_47x61", (2, 3, 47, 61), 1000), ("b1_70x42", (1, 3, 70, 42), 1001)]


def main() -> int:
    repo = official_repo()
    if repo is None:
        print("no official hub code (../shared/official or $MINIDINO_OFFICIAL_REPO)", file=sys.stderr)
        return 1
    index = json.loads((HERE / "index.json").read_text())
    index["cases"] = [c for c in index["cases"] if not c["model"].endswith(("_ld", "_dd"))]
    for name, layers, seed in CASES:
        kw = {"layers": layers} if layers else {}
        ref = official_model(name, repo, meta=True, **kw).module
        sd = golden.generate_for(ref, seed)
        ref.load_state_dict(sd, strict=True, assign=True)
        lo, hi = ref.decode_head.min_depth, ref.decode_head.max_depth
        case = {"model": name, **({"depth_layers": layers} if layers else {}), "weight_seed": seed,
                "weights_sha256": golden.weights_sha256(sd), "depth_range": [lo, float(hi)],
                "file": f"{golden.case_name({'model': name, **({'depth_layers': layers} if layers else {})})}.safetensors",
                "source": f"official hub code b8931f7 ({Path(repo).name}), torch {torch.__version__}, CPU float32",
                "inputs": []}
        tensors = {}
        for tag, shape, stream in INPUTS:
            x = golden.generate_images(seed, stream, shape)
            with torch.no_grad():
                y = ref.whole_inference(x, img_meta=None, rescale=True)
            # the computation is exercised: nothing at the range's ends, a spread of values
            assert float(y.min()) > lo and float(y.max()) < hi and float(y.std()) > 1e-2, (name, tag, y.min(), y.max())
            tensors[f"{tag}/depth"] = y.contiguous()
            case["inputs"].append({"tag": tag, "shape": list(shape), "image_stream": stream, "mask_stream": None,
                                   "mask_p": None, "outputs": ["depth"]})
            print(f"{case['file']} {tag}: depth {float(y.min()):.4f}..{float(y.max()):.4f} m, std {float(y.std()):.4f}")
        save_file(tensors, str(HERE / case["file"]), metadata={"source": case["source"]})
        index["cases"].append(case)
    (HERE / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
