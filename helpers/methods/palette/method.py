"""The palette methods ``liq`` and ``kmeans`` and the raw 8-bit latents, as :class:`~helpers.methods.base.LatentMethod`.

Encoder: the latent is quantized to 8 bits (:func:`.quantize.quantize_8bit`), a palette of K colours + dithered
index map is fitted (:func:`quantize_latents`) and the lossless coder packs both (:func:`pack_payload`). Rate
control searches K (2..``colors``; libimagequant stops at 256) for the largest palette whose file fits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ...bitstream import Header, Limits
from ...errors import BitstreamError, BudgetError, SDCError
from ..base import EncodeJob, LatentMethod, Output, fit_budget
from . import entropy
from .quantize import apply_palette, palette_kmeans, palette_libimagequant, quantize_8bit, unquantize_8bit

#: smallest payload each coder can produce (zlib: 2-byte header + empty block + adler32; others: 4-byte CRC)
MIN_PAYLOAD = {"zlib": 8, "arith": 4, "lzma": 5}


# ------------------------------------------------------------------------------------------
# stages (the notebooks show them one by one)
# ------------------------------------------------------------------------------------------


def quantize_latents(
    q8: np.ndarray, method: str, colors: int, dither: float, seed: int = 0, kmeans_iters: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """8-bit latent -> (palette, indices) with libimagequant ('liq') or latent k-means ('kmeans')."""
    if method == "liq":
        return palette_libimagequant(q8, colors=colors, dither=dither)
    if method == "kmeans":
        return palette_kmeans(q8, colors=colors, dither=dither, iters=kmeans_iters, seed=seed)
    raise SDCError(f"quantize_latents: unknown palette method '{method}'")


def pack_payload(
    palette: np.ndarray | None, indices: np.ndarray | None, coder: str, q8: np.ndarray | None = None
) -> bytes:
    """Lossless stage. Raw 8-bit latents (no palette) are always zlib level 9."""
    if palette is None:
        return zlib.compress(np.ascontiguousarray(q8).tobytes(), 9)
    if coder not in entropy.CODERS:
        raise SDCError(f"unknown coder '{coder}': use one of {', '.join(entropy.CODERS)}")
    return entropy.CODERS[coder][0](palette, indices)


def bounded_zlib(payload: bytes, want: int, what: str) -> bytes:
    """``zlib.decompress`` that produces at most ``want`` bytes and insists on exactly that many."""
    dec = zlib.decompressobj()
    try:
        raw = dec.decompress(bytes(payload), want + 1)
    except zlib.error as e:
        raise BitstreamError(f"corrupted {what} (zlib stream invalid: {e}): re-copy the file") from None
    if len(raw) != want or not dec.eof or dec.unused_data or dec.unconsumed_tail:
        raise BitstreamError(
            f"corrupted {what}: expected {want} bytes from a complete zlib stream, got "
            f"{len(raw)}{'+' if len(raw) > want else ''}; re-copy the file"
        )
    return raw


@dataclass
class PaletteCoded:
    """A palette (or raw) encoding: the 8-bit latent, the palette and index map (None for raw), the payload."""

    payload: bytes
    q8: np.ndarray  # 8-bit latent (C, h, w) before the palette
    palette: np.ndarray | None
    indices: np.ndarray | None
    coder: str
    dithered: bool
    quant_span: float

    @property
    def q_palette(self) -> np.ndarray:
        """The 8-bit latent the decoder will see (after palette + dithering)."""
        return self.q8 if self.palette is None else apply_palette(self.palette, self.indices)

    def latent(self) -> np.ndarray:
        return unquantize_8bit(self.q_palette, self.quant_span)

    def header_fields(self) -> dict:
        return {
            "coder": self.coder,
            "colors": 0 if self.palette is None else len(self.palette),
            "dithered": self.dithered,
        }


class _EightBit(LatentMethod):
    def dequantize(self, header: Header, stored: np.ndarray) -> np.ndarray:
        return unquantize_8bit(stored, header.quant_span)


class PaletteMethod(_EightBit):
    """libimagequant ('liq': the latent as an RGBA picture, 4 channels) or latent k-means ('kmeans', any C)."""

    coders = entropy.CODER_IDS

    def __init__(self, name: str, method_id: int):
        self.name, self.id = name, method_id

    def dither(self, params) -> float:
        """``params.dither``, or per method: 1.0 for 'liq' (the original), 0.0 for 'kmeans'."""
        if params.dither is not None:
            if not 0 <= params.dither <= 1:
                raise SDCError(f"dither must be between 0 and 1, got {params.dither}")
            return float(params.dither)
        return 1.0 if self.name == "liq" else 0.0

    def check_channels(self, channels: int) -> None:
        if self.name == "liq" and channels != 4:
            raise SDCError(
                f"method 'liq' treats the latent as RGBA and needs 4 channels; this model has {channels}: "
                f"use --method kmeans"
            )

    def check(self, h: Header, payload_len: int, limits: Limits) -> None:
        kmax = min(limits.max_colors, h.latent_positions)
        if self.name == "liq":
            if h.channels != 4:
                raise BitstreamError(
                    f"corrupted .sdc header: libimagequant palettes are RGBA (4 channels), this "
                    f"file says {h.channels}; re-encode the image"
                )
            kmax = min(kmax, 256)
        if not 1 <= h.colors <= kmax:
            raise BitstreamError(
                f"corrupted .sdc header: palette size K={h.colors} outside 1..{kmax} (at most "
                f"{limits.max_colors} colours and one per latent position, "
                f"{h.latent_height}x{h.latent_width}); re-encode or re-copy the file"
            )
        if h.coder not in MIN_PAYLOAD:
            raise BitstreamError(f"unsupported coder '{h.coder}' for the palette method: upgrade sdcomp-notebooks")
        if payload_len < MIN_PAYLOAD[h.coder]:
            raise BitstreamError(
                f"truncated .sdc payload: {payload_len} bytes cannot hold a {h.coder} stream; re-copy the file"
            )

    def unpack(self, h: Header, payload: bytes, limits: Limits):
        palette, indices = entropy.CODERS[h.coder][1](payload, h.colors, h.channels, h.latent_height, h.latent_width)
        if self.name == "kmeans" and len(np.unique(palette, axis=0)) != len(palette):
            # the k-means encoder always writes distinct colours (np.unique after rounding): a repeated one means
            # the stream decoded to something no encoder wrote (e.g. a truncated arith payload read as zeros)
            raise BitstreamError("corrupted .sdc payload: the k-means palette repeats a colour; re-copy the file")
        return palette, indices, apply_palette(palette, indices)

    def encode(self, latent: np.ndarray, job: EncodeJob) -> Output:
        params, st = job.params, job.stages
        self.check_channels(latent.shape[0])
        with st.timed("quantize8"):
            q8 = quantize_8bit(latent, job.quant_span)
        dither = self.dither(params)
        qkey = (zlib.crc32(np.ascontiguousarray(q8).tobytes()), q8.shape, self.name) if st.cache is not None else None
        trials: list[tuple[int, int]] = []

        def attempt(colors: int) -> tuple[PaletteCoded, int]:
            pkey = (qkey, "palette", int(colors), dither, params.seed, params.kmeans_iters)
            palette, indices = st.cached(
                pkey if qkey else None,
                "palette",
                lambda: quantize_latents(q8, self.name, colors, dither, params.seed, params.kmeans_iters),
            )
            payload = st.cached(
                (pkey, "pack", params.coder) if qkey else None,
                "pack",
                lambda: pack_payload(palette, indices, params.coder),
            )
            coded = PaletteCoded(payload, q8, palette, indices, params.coder, dither > 0, job.quant_span)
            trials.append((colors, job.overhead + len(payload)))
            return coded, trials[-1][1]

        if job.target_bytes is None:
            return Output(attempt(params.colors)[0], trials, latent)
        # libimagequant palettes stop at 256 colours; latent k-means may go beyond (uint16 indices)
        hi = max(2, min(params.colors, 256) if self.name == "liq" else params.colors)
        best = fit_budget(attempt, 1, hi + 1, job.target_bytes)  # the largest palette size 2..hi that fits
        if best is None:
            smallest = min(n for _, n in trials)
            raise BudgetError(
                f"cannot meet {job.target_bytes} bytes: the smallest file (2 colours) is {smallest} "
                f"bytes; raise --target-bytes or use a model with fewer latent channels"
            )
        return Output(best, trials, latent)


class RawMethod(_EightBit):
    """The 8-bit latents themselves, zlib level 9 (the baseline the palette improves on)."""

    name, id = "raw", 2
    coders = {"zlib": entropy.CODER_IDS["zlib"]}

    def check(self, h: Header, payload_len: int, limits: Limits) -> None:
        if h.colors != 0 or h.coder != "zlib":
            raise BitstreamError(
                f"corrupted .sdc header: raw latents are zlib-coded without a palette, this file "
                f"says coder {h.coder}, K={h.colors}; re-encode the image"
            )
        if payload_len < MIN_PAYLOAD["zlib"]:
            raise BitstreamError(
                f"truncated .sdc payload: {payload_len} bytes cannot hold a zlib stream; re-copy the file"
            )

    def unpack(self, h: Header, payload: bytes, limits: Limits):
        c, lh, lw = h.channels, h.latent_height, h.latent_width
        raw = bounded_zlib(payload, c * lh * lw, ".sdc payload (raw 8-bit latents)")
        return None, None, np.frombuffer(raw, np.uint8).reshape(c, lh, lw).copy()

    def encode(self, latent: np.ndarray, job: EncodeJob) -> Output:
        st = job.stages
        with st.timed("quantize8"):
            q8 = quantize_8bit(latent, job.quant_span)
        key = (
            (zlib.crc32(np.ascontiguousarray(q8).tobytes()), q8.shape, self.name, "raw")
            if st.cache is not None
            else None
        )
        payload = st.cached(key, "pack", lambda: pack_payload(None, None, "zlib", q8))
        nbytes = job.overhead + len(payload)
        if job.target_bytes is not None and nbytes > job.target_bytes:
            raise BudgetError(
                f"raw 8-bit latents need {nbytes} bytes > budget {job.target_bytes}: use a palette method"
            )
        return Output(
            PaletteCoded(payload, q8, None, None, "zlib", False, job.quant_span), [(job.params.colors, nbytes)], latent
        )


LIQ = PaletteMethod("liq", 0)
KMEANS = PaletteMethod("kmeans", 1)
RAW = RawMethod()
