"""The PyTorch side shared by SD and TAEF2: device and precision choice, the weights' fingerprint, and
:class:`TorchBackend`, the :class:`helpers.backends.base.Backend` on torch tensors."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import SDCError
from .base import Backend
from .resolve import STANDIN_MODEL_ID, TINY_MODEL_ID


def select_device(preference: str | None = None) -> torch.device:
    """Pick the device once: an explicit preference, else cuda > mps > cpu."""
    if preference and preference != "auto":
        try:
            dev = torch.device(preference)
        except RuntimeError as exc:
            raise SDCError(f"unknown device '{preference}': use cpu, cuda, cuda:N, mps or auto") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SDCError(f"device '{preference}' requested but CUDA is not available here: use --device cpu")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise SDCError(f"device '{preference}' requested but MPS is not available here: use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPU, fp32 on CPU (CPU fp16 convolutions are slow and less accurate)."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def weights_fingerprint(module: torch.nn.Module) -> int:
    """CRC32 over a dtype-independent sample of every parameter (first/last 64 values in fp16)."""
    crc = 0
    for name, p in sorted(module.state_dict().items()):
        flat = p.detach().reshape(-1)
        sample = torch.cat([flat[:64], flat[-64:]]).float().cpu().half().numpy().tobytes()
        crc = zlib.crc32(name.encode() + sample, crc)
    return crc & 0xFFFFFFFF


@dataclass
class TorchBackend(Backend):
    """A :class:`~helpers.backends.base.Backend` on PyTorch modules: ``device`` / ``dtype`` are torch's, and
    ``encode`` / ``decode`` take and return tensors (the array methods wrap them)."""

    model_id: str
    kind: str  # "sd" or "taef2"
    device: torch.device
    dtype: torch.dtype
    latent_channels: int
    quant_span: float
    downsample: int = 8
    fingerprint: int = 0
    load_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    runtime = "torch"

    @property
    def device_name(self) -> str:
        return str(self.device)

    @property
    def random_weights(self) -> bool:
        """True for the tiny random test pipeline and the full-size random SD v1.4 stand-in
        (:mod:`helpers.backends.sd14`): real classes and code path, meaningless pictures."""
        return self.model_id in (TINY_MODEL_ID, STANDIN_MODEL_ID)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def components(self) -> dict[str, torch.nn.Module]:  # pragma: no cover - overridden
        return {}

    def describe(self) -> str:
        return f"{self.kind}:{self.model_id} on {self.device} ({str(self.dtype).replace('torch.', '')})"

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def encode_array(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return (
            self.encode(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), generator=gen)
            .float()
            .cpu()
            .numpy()
        )

    def decode_array(self, z: np.ndarray) -> np.ndarray:
        return self.decode(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))).float().cpu().numpy()


def memory_usage(device: torch.device | None = None) -> dict[str, float]:
    """This process's resident memory (MiB) and its peak, from the one memory probe
    (:func:`helpers.memory.process_memory`), plus CUDA tensors on a GPU."""
    from ..memory import process_memory

    mem = process_memory()
    out = {"peak_rss_MiB": mem["hwm_MiB"]}
    if mem["rss_MiB"] is not None:
        out["rss_MiB"] = mem["rss_MiB"]
    if device is not None and device.type == "cuda":
        out["cuda_MiB"] = torch.cuda.memory_allocated(device) / 2**20
    return out


def parameter_count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
