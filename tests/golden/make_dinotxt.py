"""Regenerate tests/golden/dinotxt_depth2_text2x256.safetensors from the OFFICIAL dino.txt code.

    PYTHONPATH=. python tests/golden/make_dinotxt.py      # needs ../shared/official (or $MINIDINO_OFFICIAL_REPO)

The official model is built from the hub code's own classes at reduced size (backbone 2 blocks,
text transformer 2 layers of width 256; the vision head as published), loaded with the
splitmix64 weights of the case and run on its generated images and token ids
(minidino.conformance.golden_text.make_case). The case is then written (or replaced) in index.json.
"""

import json
from pathlib import Path

from minidino.conformance import golden
from minidino.conformance.golden_text import make_case
from minidino.conformance.reference import official_dinotxt

HERE = Path(__file__).resolve().parent
CASE = {"model": "dinotxt", "depth": 2, "text_width": 256, "text_num_heads": 4, "text_layers": 2, "weight_seed": 11,
        "file": "dinotxt_depth2_text2x256.safetensors",
        "inputs": [{"tag": "r112x140", "shape": [2, 3, 112, 140], "image_stream": 1000, "token_stream": 3000,
                    "text_lengths": [5, 40, 76], "context_length": 77},
                   {"tag": "r70x98_ctx16", "shape": [1, 3, 70, 98], "image_stream": 1001, "token_stream": 3001,
                    "text_lengths": [1, 9, 15], "context_length": 16}]}

if __name__ == "__main__":
    official = official_dinotxt(depth=CASE["depth"], text_width=CASE["text_width"],
                                text_num_heads=CASE["text_num_heads"], text_layers=CASE["text_layers"])
    case = make_case(HERE, official, CASE)
    index = json.loads((HERE / "index.json").read_text())
    index["cases"] = [c for c in index["cases"] if c["model"] != "dinotxt"] + [case]
    (HERE / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    worst = max(r.max_abs for r in golden.run_case(case, HERE))
    print(f"wrote {case['file']}; minidino against it: max abs {worst:.3e}")
