"""Time F.scaled_dot_product_attention per backend at the shapes of the DINOv2 benchmark rows.

    python benchmarks/attention_backends.py                 # CUDA when present (bf16), else CPU (float32)
    python benchmarks/attention_backends.py --device cpu

Attention is a fifth of the FLOPs of ViT-L at 518 px and runs further from the hardware peak
than the matrix products; which SDPA backend PyTorch picks (flash, cuDNN, memory-efficient,
math) decides much of what a fast mode can gain. Prints, per shape, ms per call, TFLOP/s and
the max abs difference to the math backend, and which backend the default dispatch matches
in speed. Writes benchmarks/results/attention_backends_<device>.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import minidino

# (model, image side, batch): the rows of bench.py
ROWS = {"cuda": [("dinov2_vits14", 224, 512), ("dinov2_vitl14", 518, 32), ("dinov2_vitg14", 518, 16)],
        "cpu": [("dinov2_vits14", 224, 8), ("dinov2_vits14", 518, 2)]}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def timed(fn, device: str, repeats: int) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn(), fn()
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    dev = args.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    lines = [f"# SDPA backends on {name}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}", "",
             "| model, side, batch | (B, nh, N, hd) | backend | ms / call | TFLOP/s | max abs vs math |",
             "|---|---|---|---|---|---|"]
    for model, side, batch in ROWS["cuda" if dev == "cuda" else "cpu"]:
        c = minidino.get_config(model)
        N = 1 + c.num_register_tokens + (side // c.patch_size) ** 2
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(batch, c.num_heads, N, c.head_dim, device=dev, dtype=dtype, generator=g) for _ in range(3))
        flops = 4 * batch * c.num_heads * N * N * c.head_dim  # q k^T and a v, 2 per multiply-add
        with sdpa_kernel([SDPBackend.MATH]):
            ref = F.scaled_dot_product_attention(q, k, v).float()
        for label, backend in [("default", None)] + list(BACKENDS.items()):
            def call(backend=backend):
                if backend is None:
                    return F.scaled_dot_product_attention(q, k, v)
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v)
            try:
                with torch.inference_mode():
                    diff = (call().float() - ref).abs().max().item()
                    s = timed(call, dev, args.repeats)
            except RuntimeError as e:  # this backend does not support the shape / dtype / device
                lines.append(f"| {model} {side} b{batch} | ({batch}, {c.num_heads}, {N}, {c.head_dim}) | {label} | "
                             f"not available ({str(e).splitlines()[0][:60]}) | - | - |")
                continue
            lines.append(f"| {model} {side} b{batch} | ({batch}, {c.num_heads}, {N}, {c.head_dim}) | {label} | "
                         f"{1000 * s:.3f} | {flops / s / 1e12:.3g} | {diff:.2e} |")
        print("\n".join(lines[-(len(BACKENDS) + 1):]), flush=True)
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"attention_backends_{dev}.md").write_text(text)
    print(f"wrote {out / f'attention_backends_{dev}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
