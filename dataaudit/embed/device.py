"""Where and in which precision embedding work runs: one policy for inference and kNN.

The decision rules are pure functions of what the hardware offers, so they are tested
without a GPU; :func:`choose_device` and :func:`resolve_precision` ask the hardware.
"""

from __future__ import annotations

import torch

from dataaudit.errors import DataAuditError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def decide_device(requested: str | None, cuda_available: bool, mps_available: bool) -> str:
    """Pure decision rule (testable without a GPU): CUDA, then MPS, then CPU; a request wins."""
    if requested is None or requested.strip().lower() in ("", "auto"):
        if cuda_available:
            return "cuda"
        if mps_available:
            return "mps"
        return "cpu"
    req = requested.strip().lower()
    kind = req.split(":", 1)[0]
    if kind == "cpu" and req == "cpu":
        return "cpu"
    if kind == "cuda":
        if not cuda_available:
            raise DataAuditError(
                f"device {requested!r} was requested but CUDA is not available",
                hint="install a CUDA build of torch, check nvidia-smi, or use --device cpu",
            )
        return req
    if kind == "mps" and req == "mps":
        if not mps_available:
            raise DataAuditError(
                "device 'mps' was requested but Apple MPS is not available",
                hint="MPS needs macOS 12.3+ on Apple silicon; use --device cpu",
            )
        return "mps"
    raise DataAuditError(f"unknown device {requested!r}", hint="use auto, cpu, cuda, cuda:N or mps")


def choose_device(requested: str | None = None) -> str:
    """The device to embed on: "cuda" when available, then "mps", else "cpu"."""
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps is not None and mps.is_available())
    return decide_device(requested, torch.cuda.is_available(), mps_available)


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions natively.

    Elsewhere bf16 is emulated and slower than fp32 (bench/bench_embed.py measures both).
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        return False
    return False


def decide_precision(requested: str, device: str, native_bf16: bool, cuda_bf16: bool) -> str:
    """Pure rule for the compute dtype; "auto" picks the fastest one that keeps accuracy."""
    if requested not in PRECISIONS:
        raise DataAuditError(
            f"unknown precision {requested!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    kind = device.split(":", 1)[0]
    if requested != "auto":
        if kind == "cpu" and requested == "fp16":
            raise DataAuditError("fp16 is not supported on CPU", hint="use bf16 or fp32")
        return requested
    if kind == "cuda":
        return "bf16" if cuda_bf16 else "fp16"
    if kind == "cpu":
        return "bf16" if native_bf16 else "fp32"
    return "fp32"  # mps: keep it simple and exact


def resolve_precision(requested: str, device: str) -> str:
    """:func:`decide_precision` with the hardware's answers filled in."""
    kind = device.split(":", 1)[0]
    return decide_precision(
        requested,
        device,
        native_bf16=kind == "cpu" and cpu_has_native_bf16(),
        cuda_bf16=kind == "cuda" and torch.cuda.is_bf16_supported(),
    )


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for a resolved precision (None: plain fp32)."""
    return _DTYPES.get(precision)
