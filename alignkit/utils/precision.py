"""The precision a command computes in, and the one autocast context every caller uses for it.

`auto` is bf16 autocast where the hardware runs bf16 fast (a GPU that supports it; a CPU with AMX or AVX512-BF16),
else fp32. Training, sampling and evaluation resolve it here alike, so a run samples in the precision it trains in.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bf16 and it is slower than fp32 (measured on an AVX512 Xeon without them: bf16 matmul
    38 GFLOP/s vs fp32 104 GFLOP/s; with AMX, bf16 is ~4x fp32).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 autocast where the hardware runs it fast, else fp32; `fp32` and `bf16` as they are."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """bf16 autocast for `precision` bf16 (weights stay fp32, matrix products run in bf16); else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
