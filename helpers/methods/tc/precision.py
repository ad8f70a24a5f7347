"""The precision of the networks' passes in encoder-side optimisation (:mod:`.enc_train`, :mod:`.refine`).

On CPUs with native bf16 (AVX512-BF16 or AMX: oneDNN's kernels) torch's CPU autocast in bfloat16 with channels-last
(NHWC) tensors runs the TAEF2 decoder's forward and backward passes 3-4x faster than float32; the weights, the latent,
the rate model and the losses stay float32. Elsewhere bf16 would be emulated and slower, hence ``auto``.
"""

from __future__ import annotations

#: the values of ``--precision`` (CLI and enc_train) and :attr:`helpers.codec.CodecParams.precision`
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str) -> str:
    """``fp32`` or ``bf16`` for ``--precision`` (``auto``: bf16 where oneDNN runs it natively on this CPU, AVX512-BF16
    or AMX, else fp32). Measured on this project's Xeon with AMX, one enc_train step (batch 4, 192x192, one thread):
    fp32 5.3-5.9 s, bf16 autocast 3.1-3.8 s, bf16 + channels-last 1.4-1.5 s."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in PRECISIONS:
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


def run(net, x, precision: str):
    """``net(x)`` at ``precision``: in bf16 under :func:`autocast` with ``x`` channels-last (oneDNN's bf16 kernels
    want NHWC: 3-4x faster than bf16 in NCHW here); the result float32 and contiguous either way."""
    import torch

    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format
    with autocast(precision):
        out = net(x.contiguous(memory_format=layout))
    return out.float().contiguous()
