"""Measured peak memory of one call: what `minidino info --measure` and the benchmarks report.

CUDA: growth of torch.cuda.max_memory_allocated over the call (the caching allocator's own
count of live tensors). CPU (Linux only): growth of the process's resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs). PyTorch's CPU allocator hands large blocks to
glibc malloc, which keeps freed heap memory resident; `prefer_mmap()` makes blocks of 64 KiB
and more come from mmap and go back on free, so RSS follows the live tensors. It changes the
whole process's malloc behaviour: call it in a process of its own (a CLI run, a benchmark
probe), not inside an application.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["prefer_mmap", "peak_growth", "cpu_peak_supported", "proc_status_kib", "available_memory"]


def prefer_mmap(threshold: int = 64 * 1024) -> bool:
    """glibc: serve blocks >= threshold by mmap (M_MMAP_THRESHOLD = -3). False where unavailable.

    Examples:
        >>> isinstance(prefer_mmap(), bool)                  # True on glibc Linux
        True
    """
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))
    except (OSError, AttributeError):
        return False


def proc_status_kib(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, VmHWM, ...).

    Examples:
        >>> proc_status_kib("VmRSS") > 0                     # Linux only
        True
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_peak_supported() -> bool:
    """True where the CPU figure can be measured (Linux /proc with a resettable VmHWM).

    Examples:
        >>> isinstance(cpu_peak_supported(), bool)
        True
    """
    try:
        proc_status_kib("VmHWM")
        return Path("/proc/self/clear_refs").exists()
    except (OSError, KeyError):
        return False


def peak_growth(fn: Callable[[], Any], device: torch.device | str) -> int | None:
    """Bytes by which memory peaked above its level before `fn()` (the result is kept alive
    until the figure is taken, as a caller's would be). None where it cannot be measured.

    Examples:
        >>> grew = peak_growth(lambda: torch.ones(1024, 1024), "cpu")   # 4 MiB tensor
        >>> grew is None or grew >= 0                                   # bytes, or None where unmeasurable
        True
    """
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak
    if device.type != "cpu" or not cpu_peak_supported():
        return None
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = proc_status_kib("VmRSS")
    out = fn()
    peak = (proc_status_kib("VmHWM") - before) * 1024
    del out
    return peak


def available_memory(device: Any) -> int | None:
    """Bytes free for a new allocation: MemAvailable (Linux) and the cgroup limit on CPU, free memory on CUDA.

    Examples:
        >>> free = available_memory(torch.device("cpu"))
        >>> free is None or free > 0                             # None where the machine does not say
        True
    """
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    avail = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = open(limit_file).read().strip()
            usage = int(open(usage_file).read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            room = int(limit) - usage
            avail = room if avail is None else min(avail, room)
        break
    return avail
