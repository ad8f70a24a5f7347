"""Loading a PyTorch backend for a model spec: ``--model auto``, ``taef2``, a TAEF2 folder, an SD1.x folder or
hub id. What a spec names is worked out without torch in :mod:`helpers.backends.resolve`; the ONNX Runtime
backend loads through :func:`helpers.backends.onnx_runtime.load_taef2_onnx`."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..errors import ModelNotFoundError, SDCError
from .resolve import DEFAULT_SD_MODEL, check_model_spec, taef2_dir_of
from .sd import load_sd
from .taef2 import load_taef2
from .taef2_spec import TAEF2_MODEL_ID
from .torch_base import TorchBackend


def load_backend(spec: str | None = "auto", device: str | torch.device | None = None) -> TorchBackend:
    """Resolve a model spec to a backend.

    ``"auto"``/None: SD v1.4 when its weights are cached or downloadable, else TAEF2 (offline path).
    ``"taef2"``: TAEF2 from the default folder. A directory holding taef2_*.pth: TAEF2 from there.
    Any other directory or string: an SD1.x diffusers directory or hub id.
    """
    # the cheap decision first (no diffusers import, ~5 s, where the answer is TAEF2, e.g. auto offline)
    taef2_dir = taef2_dir_of(spec)
    if taef2_dir is not None:
        return load_taef2(taef2_dir, device=device)
    if spec in (None, "", "auto"):
        try:
            return load_sd(DEFAULT_SD_MODEL, device=device)
        except ModelNotFoundError:
            return load_taef2(device=device)
    return load_sd(check_model_spec(spec), device=device)


def load_with_fallback(
    spec: str | None, fallback: str | None = TAEF2_MODEL_ID, device: str | torch.device | None = None
) -> tuple[TorchBackend, str | None]:
    """``load_backend(spec)``, or ``load_backend(fallback)`` when that fails; returns (backend, why it fell back)."""
    try:
        return load_backend(spec, device=device), None
    except SDCError as exc:
        if not fallback or fallback == spec:
            raise
        return load_backend(fallback, device=device), str(exc)


def load_labelled(specs: Sequence[str], device) -> list[tuple[str, TorchBackend]]:
    """Load each --model once; label = the backend kind (``taef2``, ``sd``), or the model's name when two
    backends share a kind."""
    loaded = [(spec, load_backend(spec, device=device)) for spec in specs]
    kinds = [b.kind for _, b in loaded]
    out: list[tuple[str, TorchBackend]] = []
    for spec, b in loaded:
        if kinds.count(b.kind) == 1:
            label = b.kind
        else:
            label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(b.model_id).rstrip("/").split("/")[-1]) or b.kind
        if label in [lbl for lbl, _ in out]:
            raise SDCError(f"--model {spec} duplicates a backend already given; pass each model once")
        out.append((label, b))
    return out
