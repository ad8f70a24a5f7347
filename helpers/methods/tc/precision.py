"""The precision of the networks' passes in encoder-side optimisation (:mod:`.enc_train`, :mod:`.refine`).

On CPUs with native bf16 (AVX512-BF16 or AMX: oneDNN's kernels) torch's CPU autocast in bfloat16 with channels-last
(NHWC) tensors runs the TAEF2 decoder's forward and backward passes 3-4x faster than float32; the weights, the latent,
the rate model and the losses stay float32. Elsewhere bf16 would be emulated and slower, hence ``auto``.
"""

from __future__ import annotations


def resolve_precision(precision: str) -> str:
    """``fp32`` or ``bf16`` for ``--precision`` (``auto``: bf16 where oneDNN runs it natively on this CPU, AVX512-BF16
    or AMX, else fp32). Measured on this project's Xeon with AMX, one enc_train step (batch 4, 192x192, one thread):
    fp32 5.3-5.9 s, bf16 autocast 3.1-3.8 s, bf16 + channels-last 1.4-1.5 s."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return precision


def native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (torch's own probe, a private one: False where it is missing)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(precision: str):
    """The context a network's forward pass runs in for ``precision`` (bf16: torch's CPU autocast; the weights, the
    rate model and the losses stay float32)."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
