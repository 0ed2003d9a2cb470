"""Does this CPU have the instructions that make a reduced-precision mode fast?

bfloat16 matrix products run fast on x86 CPUs with AMX (amx_bf16) or AVX512-BF16
(avx512_bf16), and on ARM CPUs with the BF16 extension (bf16). Without them PyTorch has to
convert to float32 and back inside its kernels, which is SLOWER than plain float32: on a CPU
without AMX or AVX512-BF16, `optimize(model, dtype=torch.bfloat16)` ran ViT-S/14 (224 px,
batch 8) at 3.8 img/s against 11.7 img/s for eager float32 (issue 13). `optimize` and the
command line warn then.

The flags come from /proc/cpuinfo (Linux); elsewhere the answer is "unknown" and nothing is said.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["cpu_flags", "cpu_has_fast", "slow_dtype_message"]

_FAST = {
    torch.bfloat16: ("amx_bf16", "avx512_bf16", "bf16"),  # float16 is not judged: not measured here
}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (Linux /proc/cpuinfo 'flags' or 'Features'), or None where unknown.

    Examples:
        >>> flags = cpu_flags()
        >>> flags is None or isinstance(flags, frozenset)
        True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_has_fast(dtype: torch.dtype) -> bool | None:
    """True / False: this CPU has / lacks the instructions for fast `dtype` matmuls; None: unknown.

    Examples:
        >>> cpu_has_fast(torch.float32)
        True
        >>> cpu_has_fast(torch.bfloat16) in (True, False, None)
        True
    """
    if dtype not in _FAST:
        return True
    flags = cpu_flags()
    if flags is None:
        return None
    return any(f in flags for f in _FAST[dtype])


def slow_dtype_message(dtype: torch.dtype, device: torch.device | str = "cpu") -> str | None:
    """A one-line warning when `dtype` on `device` will be slower than float32 here, else None.

    Examples:
        >>> slow_dtype_message(torch.float32) is None, slow_dtype_message(torch.bfloat16, "cuda") is None
        (True, True)
    """
    if torch.device(device).type != "cpu" or cpu_has_fast(dtype) is not False:
        return None
    name = str(dtype).removeprefix("torch.")
    return (f"{name} on this CPU is emulated (no AMX-BF16 or AVX512-BF16 instructions; torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}): it runs SLOWER than float32 here (about 3x slower for ViT-S/14 "
            "on such a CPU); use float32 on this machine, or a CPU or GPU with bfloat16 support")
