"""The transform coder (:mod:`.tcoder`) as a :class:`~helpers.methods.base.LatentMethod`: optional refinement
against decoded pixels (``effort``, :mod:`helpers.methods.tc.refine`), then the finest quantization step whose file fits
the budget (without one: ``params.step``, or the default rate of :func:`.tcoder.default_budget`)."""

from __future__ import annotations

import zlib

import numpy as np

from ...bitstream import Header, Limits
from ...errors import BitstreamError
from ..base import EncodeJob, LatentMethod, Output
from . import tcoder


class TcMethod(LatentMethod):
    name, id = "tc", 3
    coders = {"range": 3}
    encoder = "tc"  # TAEF2's encoder trained for this coder (helpers.methods.tc.enc_train), where the model has it

    def refine_label(self, effort: int, precision: str = "auto") -> str | None:
        from .precision import resolve_precision
        from .refine import schedule_label

        return schedule_label(effort, resolve_precision(precision)) if effort else None

    def payload_label(self) -> str | None:
        return f"tc payload {tcoder.PAYLOAD_VERSION}"

    def check(self, h: Header, payload_len: int, limits: Limits) -> None:
        if h.coder != "range" or h.colors != 0:
            raise BitstreamError(
                f"corrupted .sdc header: transform-coded latents use the range coder and no "
                f"palette, this file says coder {h.coder}, K={h.colors}; re-encode the image"
            )
        if payload_len < 9:
            raise BitstreamError(
                f"truncated .sdc payload: {payload_len} bytes cannot hold a tc stream; re-copy the file"
            )

    def unpack(self, h: Header, payload: bytes, limits: Limits):
        return None, None, tcoder.decode_payload(payload, h.channels, h.latent_height, h.latent_width, h.fingerprint)

    def dequantize(self, header: Header, stored: np.ndarray) -> np.ndarray:
        return stored  # the payload decodes to float latents

    def encode(self, latent: np.ndarray, job: EncodeJob) -> Output:
        params, st = job.params, job.stages
        target = job.target_bytes
        if target is None and params.step is None:
            target = tcoder.default_budget(latent, job.fingerprint, job.overhead)

        def code(z):
            return tcoder.encode_latent(z, job.fingerprint, step=params.step, budget=target, overhead=job.overhead)

        z = latent
        if params.effort:
            from .refine import refine_latents

            def quantizer_for(zz):
                c, _ = code(zz)
                return lambda x: tcoder.synthesize(
                    tcoder.dequantize(tcoder.quantize(tcoder.analyze(x, c.tables, c.levels), c.k), c.k),
                    c.tables,
                    c.levels,
                )

            key = (
                (
                    "refine",
                    params.effort,
                    params.detail,
                    params.precision,
                    target,
                    params.step,
                    zlib.crc32(np.ascontiguousarray(latent).tobytes()),
                    latent.shape,
                )
                if st.cache is not None
                else None
            )
            z = st.cached(
                key,
                "refine",
                lambda: refine_latents(
                    job.backend,
                    job.image,
                    latent,
                    params.effort,
                    quantizer_for,
                    beta=params.detail,
                    precision=params.precision,
                ),
            )
        with st.timed("pack"):
            coded, trials = code(z)
        return Output(coded, trials, z)


TC = TcMethod()
