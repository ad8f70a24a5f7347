"""The latent-method interface: what every way of coding a latent into an ``.sdc`` payload provides.

A method is one :class:`LatentMethod` object with

* ``name`` and ``id`` (the header's method byte; ids are stable and never reused) and ``coders`` (the coder
  names it writes, with their stable header ids; the container maps the coder byte through them);
* ``check(header, payload_len, limits)``: the checks of its own header fields (palette size, coder, minimum
  payload), run by the container after the generic checks and before anything is allocated;
* ``encode(latent, job) -> Output``: a float latent (C, h, w) to a payload, under the one rate-control contract
  below;
* ``unpack(header, payload, limits)``: the entropy decoder's output ``(palette or None, indices or None, the
  stored latent)`` (the 8-bit latent of the palette methods, the float latent of tc), bounded by the header's
  sizes; ``dequantize(header, stored)`` turns the stored latent into the float latent the decoder sees;
  ``decode(payload, header)`` does both.

**Rate control** (one contract for every method): ``job.target_bytes`` is a cap on the whole file (container
overhead ``job.overhead`` included). A method searches its own quality knob (palette size, quantization step)
with :func:`fit_budget` for the best setting whose file fits, reports every try in ``Output.trials`` as
``(setting, file bytes)`` and raises :class:`helpers.errors.BudgetError` when even its cheapest file does not
fit. Without a budget it codes at the setting the parameters name (or its own default rate).

A new method is a folder under ``helpers/methods/`` with a :class:`LatentMethod` and one line in
:mod:`helpers.methods.registry`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..bitstream import Header, Limits, unpack_with


class Coded(Protocol):
    """What a method's encoder returns: the payload and the float latent the decoder will see."""

    payload: bytes

    def header_fields(self) -> dict[str, Any]:
        """The method's own header fields: ``coder``, ``colors``, ``dithered``."""

    def latent(self) -> np.ndarray:
        """The float latent (C, h, w) a decoder reconstructs from the payload (before optional denoising)."""


@dataclass
class Output:
    coded: Any  # the method's Coded object
    trials: list[tuple[int, int]]  # rate control: (setting, whole-file bytes) per try
    latents: np.ndarray  # the float latent that was coded (tc with --effort: the refined one)


@dataclass
class Stages:
    """Per-stage wall and process-CPU seconds, and an optional memo shared across encodes of one image."""

    timings: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    cache: dict | None = None

    @contextmanager
    def timed(self, key: str, backend=None):
        """Add the block's wall seconds to ``timings[key]`` and its process CPU seconds to ``cpu[key]``;
        ``backend``'s queued GPU work is waited for on both sides (a no-op on the CPU)."""
        if backend is not None:
            backend.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        if backend is not None:
            backend.synchronize()
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0
        self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c0

    def cached(self, key: tuple | None, stage: str, compute: Callable[[], Any]):
        """Run ``compute()`` once per key. Timings always get the stage's standalone cost (a hit adds the
        seconds the cached computation took), so reported stage times do not depend on caching."""
        cache = self.cache if key is not None else None
        if cache is not None and key in cache:
            value, seconds, cpu_seconds = cache[key]
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            value = compute()
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            if cache is not None:
                cache[key] = (value, seconds, cpu_seconds)
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu_seconds
        return value


@dataclass
class EncodeJob:
    """Everything a method's encoder may use besides the latent."""

    params: Any  # helpers.codec.CodecParams (the method reads its own knobs)
    fingerprint: int | None  # the decoder weights' fingerprint (tc: which trained tables)
    quant_span: float  # the model's latent range for 8-bit quantization
    overhead: int  # container bytes around the payload (header + CRC)
    target_bytes: int | None = None  # rate control: cap on the whole file, or None
    stages: Stages = field(default_factory=Stages)
    backend: Any = None  # the model (tc's refinement decodes through it)
    image: Any = None  # the model input image (tc's refinement compares against it)


def fit_budget(
    attempt: Callable[[int], tuple[Any, int]], fits_at: int, fails_at: int, budget: int, best: Any = None
) -> Any:
    """The rate-control search every method uses: bisection between a setting known (or assumed) to fit the
    budget and one known (or assumed) not to, moving towards ``fails_at`` (the better quality). ``attempt(s)``
    codes at setting ``s`` and returns ``(result, file bytes)``; ``best`` is the result at ``fits_at`` when it
    was coded (None when assumed). Returns the result at the best setting that fits, or ``best``."""
    while abs(fails_at - fits_at) > 1:
        mid = (fits_at + fails_at) // 2
        result, nbytes = attempt(mid)
        if nbytes <= budget:
            best, fits_at = result, mid
        else:
            fails_at = mid
    return best


class LatentMethod(ABC):
    """A latent coding method (see the module docstring); register instances in :mod:`helpers.methods.registry`."""

    name: str
    id: int
    coders: Mapping[str, int]
    versions: frozenset = frozenset({1})  # format versions that may carry it
    #: the encoder it prefers where the model offers it (:meth:`helpers.backends.base.Backend.encoder_names`):
    #: ``stock``, or a variant trained for this method (``helpers.backends.taef2_spec.ENCODER_VARIANTS``)
    encoder: str = "stock"

    def refine_label(self, effort: int, precision: str = "auto") -> str | None:
        """The recipe of the encoder-side refinement this method runs at ``effort`` (with ``precision``, as
        :attr:`helpers.codec.CodecParams.precision`) as text, None without one: what a benchmark record stores, so
        that records refined another way are made again."""
        return None

    def payload_label(self) -> str | None:
        """The revision of this method's payload as the encoder writes it today (text), None for a method whose
        payload never changed: a benchmark record stores it, so that records coded by an earlier revision (which
        still decode) are made again."""
        return None

    def check_channels(self, channels: int) -> None:
        """Raise :class:`helpers.errors.SDCError` when the method cannot code a latent of this many channels."""

    @abstractmethod
    def check(self, header: Header, payload_len: int, limits: Limits) -> None:
        """Raise :class:`helpers.errors.BitstreamError` (one line) for any own field the method cannot decode."""

    @abstractmethod
    def encode(self, latent: np.ndarray, job: EncodeJob) -> Output:
        """Code a float latent (C, h, w) under the rate-control contract."""

    @abstractmethod
    def unpack(self, header: Header, payload: bytes, limits: Limits) -> tuple:
        """Entropy-decode a checked payload: ``(palette or None, indices or None, stored latent (C, h, w))``."""

    @abstractmethod
    def dequantize(self, header: Header, stored: np.ndarray) -> np.ndarray:
        """The stored latent of :meth:`unpack` -> float32 latent (C, h, w)."""

    def decode(self, payload: bytes, header: Header, limits: Limits | None = None) -> np.ndarray:
        """Payload of a checked header -> float32 latent (C, h, w)."""
        return self.dequantize(header, unpack_with(self, header, payload, limits)[2])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}' id {self.id}>"
