"""The latent codec: image -> latents -> 8-bit -> palette + dithering -> lossless coder -> .sdc bytes, and back.

Each stage is its own function so notebooks can show them one by one:
:func:`encode_latents`, :func:`helpers.quantize.quantize_8bit`, :func:`quantize_latents` (palette),
:func:`pack_payload`, :func:`decode_latents`. :func:`encode` and :func:`decode` run the whole chain,
:func:`encode` optionally under a byte budget (rate control over the palette size).
"""

from __future__ import annotations

import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

from . import bitstream, entropy
from .errors import BudgetError, SDCError
from .images import apply_policy, as_pil, signed_to_uint8, to_nchw
from .quantize import apply_palette, palette_kmeans, palette_libimagequant, quantize_8bit, unquantize_8bit


@dataclass
class CodecParams:
    """Knobs of the codec. Defaults reproduce the 2022 notebook (for a 4-channel SD latent)."""

    #: tc (transform coding, helpers.tcoder), palette = auto (the 2022 method: liq for 4 channels, kmeans
    #: otherwise), liq, kmeans, raw. The library default stays the 2022 palette method; the CLI defaults to tc.
    method: str = "auto"
    colors: int = 256
    #: None = per method: 1.0 for 'liq' (the original), 0.0 for 'kmeans'. On TAEF2 (kodim23, 512x512) dithering
    #: the k-means palette cost PSNR and bytes at every size: K=64 21.45 dB / 4630 B dithered vs 21.65 dB / 4155 B.
    dither: float | None = None
    coder: str = "zlib"  # see helpers.entropy.CODERS
    policy: str = "pad8"  # see helpers.images
    denoise: bool = False
    denoise_strength: float = 0.04
    denoise_steps: int = 66
    seed: int = 0
    kmeans_iters: int = 25
    #: pixel cap for the input image (None: bitstream.Limits.default(), i.e. SDCOMP_MAX_PIXELS or 8192 x 8192)
    max_pixels: int | None = None
    #: tc only: encoder-side refinement against decoded pixels (helpers.refine: 0 = none, 1 = 3 steps, 2 = 10)
    effort: int = 0
    #: tc only, without a byte budget: the quantization step (None: the tables' default)
    step: float | None = None

    def limits(self) -> bitstream.Limits:
        return bitstream.Limits.default(self.max_pixels)

    def resolved_dither(self, method: str) -> float:
        if self.dither is not None:
            if not 0 <= self.dither <= 1:
                raise SDCError(f"dither must be between 0 and 1, got {self.dither}")
            return float(self.dither)
        return 1.0 if method == "liq" else 0.0

    def resolved_method(self, channels: int) -> str:
        if self.method in ("auto", "palette"):
            return "liq" if channels == 4 else "kmeans"
        if self.method not in bitstream.METHODS:
            raise SDCError(f"unknown method '{self.method}': use tc, palette, liq, kmeans or raw")
        if self.method == "liq" and channels != 4:
            raise SDCError(f"method 'liq' treats the latent as RGBA and needs 4 channels; this model has {channels}: "
                           f"use --method kmeans")
        return self.method


@dataclass
class Encoded:
    data: bytes
    header: bitstream.Header
    latents: np.ndarray  # raw float latents (C, h, w)
    q8: np.ndarray | None  # 8-bit latents (C, h, w); None for the tc method
    palette: np.ndarray | None
    indices: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    #: rate control: (palette size, bytes) for palette methods, (step index k, bytes) for tc
    trials: list[tuple[int, int]] = field(default_factory=list)
    cpu_timings: dict[str, float] = field(default_factory=dict)  # process CPU seconds per stage (all threads)
    coded: object | None = None  # tc: the helpers.tcoder.Coded (quantized coefficients, step, tables)

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @property
    def q_palette(self) -> np.ndarray:
        """The 8-bit latent the decoder will see (after palette + dithering); palette and raw methods only."""
        if self.q8 is None:
            raise SDCError("a tc file has no 8-bit latent: use Encoded.decoder_latent()")
        return self.q8 if self.palette is None else apply_palette(self.palette, self.indices)

    def decoder_latent(self) -> np.ndarray:
        """The float latent the decoder will see (before optional UNet denoising)."""
        if self.coded is not None:
            return self.coded.latent()
        return unquantize_8bit(self.q_palette, self.header.quant_span)


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W, 3) uint8, the decoded image (a view when the latent grid was cropped)
    header: bitstream.Header
    latents: np.ndarray  # latents fed to the decoder (after unquantize and optional denoising)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)  # process CPU seconds per stage (all threads)

    @cached_property
    def image(self) -> Image.Image:
        """The pixels as an RGB PIL image (a copy, made on first use: the CLI writes ``pixels`` directly)."""
        return Image.fromarray(np.ascontiguousarray(self.pixels))


def _sync(backend) -> None:
    if backend is not None:
        backend.synchronize()  # waits for a GPU's queued work; a no-op on the CPU


@contextmanager
def _timed(timings: dict, key: str, backend=None, cpu: dict | None = None):
    """Add the block's wall seconds to ``timings[key]`` (and its process CPU seconds to ``cpu[key]``)."""
    _sync(backend)
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    _sync(backend)
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
    if cpu is not None:
        cpu[key] = cpu.get(key, 0.0) + time.process_time() - c0


# ------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------

def encode_latents(backend, img: Image.Image, seed: int = 0) -> np.ndarray:
    """Model input image (multiple of 8) -> raw latents (C, h, w) float32 (SD: posterior sample, fixed seed).

    Any runtime: the backend's ``encode_array`` (:class:`helpers.backends.base.Backend`: PyTorch or ONNX
    Runtime) gets the same float32 array."""
    img = as_pil(img)
    if img.size[0] % backend.downsample or img.size[1] % backend.downsample:
        raise SDCError(f"image {img.size[0]}x{img.size[1]} is not a multiple of {backend.downsample}: "
                       f"pass it through helpers.images.apply_policy first")
    return np.asarray(backend.encode_array(to_nchw(img), seed)[0], dtype=np.float32)


def decode_latents(backend, z: np.ndarray) -> Image.Image:
    """Raw latents (C, h, w) -> RGB image."""
    return Image.fromarray(decode_pixels(backend, z))


def decode_pixels(backend, z: np.ndarray) -> np.ndarray:
    """Raw latents (C, h, w) -> (H, W, 3) uint8. Backends with ``decode_uint8`` (TAEF2 on either runtime) write
    each decoded tile straight into the 8-bit result; others convert their float output at once."""
    z = np.ascontiguousarray(z, dtype=np.float32)[None]
    if hasattr(backend, "decode_uint8"):
        return backend.decode_uint8(z)
    return signed_to_uint8(backend.decode_array(z))


def quantize_latents(q8: np.ndarray, method: str, colors: int, dither: float, seed: int = 0,
                     kmeans_iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """8-bit latent -> (palette, indices) with libimagequant ('liq') or latent k-means ('kmeans')."""
    if method == "liq":
        return palette_libimagequant(q8, colors=colors, dither=dither)
    if method == "kmeans":
        return palette_kmeans(q8, colors=colors, dither=dither, iters=kmeans_iters, seed=seed)
    raise SDCError(f"quantize_latents: unknown palette method '{method}'")


def pack_payload(palette: np.ndarray | None, indices: np.ndarray | None, coder: str,
                 q8: np.ndarray | None = None) -> bytes:
    """Lossless stage. Raw 8-bit latents (no palette) are always zlib level 9."""
    if palette is None:
        return zlib.compress(np.ascontiguousarray(q8).tobytes(), 9)
    if coder not in entropy.CODERS:
        raise SDCError(f"unknown coder '{coder}': use one of {', '.join(entropy.CODERS)}")
    return entropy.CODERS[coder][0](palette, indices)


def unpack_payload(header: bitstream.Header, payload: bytes, limits: bitstream.Limits | None = None):
    """Entropy-decode a payload (header already checked by :func:`bitstream.unpack`): (palette, indices, q8).

    Delegates to the method registered in :data:`helpers.bitstream.METHOD_SPECS`; every decoder bounds its
    memory and work by the header's sizes.
    """
    return bitstream.decode_payload(header, payload, limits)


# ------------------------------------------------------------------------------------------
# whole chain
# ------------------------------------------------------------------------------------------

def _cached(cache: dict | None, key: tuple, timings: dict, stage: str, compute, cpu: dict | None = None):
    """Run ``compute()`` once per key. Timings always get the stage's standalone cost (a hit adds the
    seconds the cached computation took), so reported stage times do not depend on caching."""
    if cache is not None and key in cache:
        value, seconds, cpu_seconds = cache[key]
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        value = compute()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        if cache is not None:
            cache[key] = (value, seconds, cpu_seconds)
    timings[stage] = timings.get(stage, 0.0) + seconds
    if cpu is not None:
        cpu[stage] = cpu.get(stage, 0.0) + cpu_seconds
    return value


def _build(backend, params: CodecParams, method: str, size: tuple[int, int], q8: np.ndarray,
           colors: int, timings: dict, cache: dict | None = None, cpu: dict | None = None
           ) -> tuple[bytes, bitstream.Header, np.ndarray | None, np.ndarray | None]:
    c, h, w = q8.shape
    palette = indices = None
    dither = params.resolved_dither(method)
    qkey = (zlib.crc32(np.ascontiguousarray(q8).tobytes()), q8.shape, method) if cache is not None else None
    if method != "raw":
        pkey = (qkey, "palette", int(colors), dither, params.seed, params.kmeans_iters)
        palette, indices = _cached(cache, pkey, timings, "palette", lambda: quantize_latents(
            q8, method, colors, dither, params.seed, params.kmeans_iters), cpu)
        ckey = (pkey, "pack", params.coder)
    else:
        ckey = (qkey, "raw")
    payload = _cached(cache, ckey, timings, "pack", lambda: pack_payload(palette, indices, params.coder, q8),
                      cpu)
    header = bitstream.Header(
        method=method, coder="zlib" if method == "raw" else params.coder, model_id=backend.model_id,
        fingerprint=backend.fingerprint, width=size[0], height=size[1], channels=c, latent_height=h,
        latent_width=w, quant_span=float(backend.quant_span), colors=0 if palette is None else len(palette),
        policy=params.policy, dithered=method != "raw" and dither > 0, denoise=params.denoise,
        denoise_strength=params.denoise_strength if params.denoise else 0.0,
        denoise_steps=params.denoise_steps if params.denoise else 0)
    return bitstream.pack(header, payload, params.limits()), header, palette, indices


def check_params(params: CodecParams, backend) -> None:
    """What :func:`encode` refuses before any work: denoising without a UNet, a palette size out of range."""
    if params.denoise and not getattr(backend, "has_unet", False):
        raise SDCError(f"--denoise needs a Stable Diffusion backend with a UNet; '{backend.model_id}' has none: "
                       f"drop --denoise or pass --model an SD1.x id/folder")
    if not 1 <= params.colors <= bitstream.MAX_COLORS:
        raise SDCError(f"palette size must be 1..{bitstream.MAX_COLORS} (libimagequant: 2..256), got {params.colors}")


def encode(img, backend, params: CodecParams | None = None, target_bytes: int | None = None,
           latents: np.ndarray | None = None, cache: dict | None = None) -> Encoded:
    """Compress an image into .sdc bytes.

    With ``target_bytes``, the palette size is searched (binary search over 2..``params.colors``, at most 256
    for libimagequant; pass e.g. ``colors=1024`` to let larger budgets buy larger k-means palettes) for the
    largest palette whose complete file (header included) fits the budget; the file never exceeds it.
    ``latents`` lets callers reuse a cached VAE encoding of the same (policy-applied) image; ``cache`` (a dict
    the caller keeps, e.g. one per image) memoises palettes and packed payloads across calls, so several
    budgets and coders share their work. Results are identical with or without it, and ``timings`` report
    each stage's standalone cost either way.
    """
    params = params or CodecParams()
    check_params(params, backend)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    model_img, size = apply_policy(img, params.policy, backend.downsample, params.max_pixels)
    if latents is None:
        with _timed(timings, "vae_encode", backend, cpu):
            latents = encode_latents(backend, model_img, params.seed)
    method = params.resolved_method(latents.shape[0])
    if method == "tc":
        return _encode_tc(backend, params, model_img, size, latents, target_bytes, timings, cpu, cache)
    with _timed(timings, "quantize8", cpu=cpu):
        q8 = quantize_8bit(latents, backend.quant_span)
    trials: list[tuple[int, int]] = []

    def attempt(colors: int):
        out = _build(backend, params, method, size, q8, colors, timings, cache, cpu)
        trials.append((colors, len(out[0])))
        return out

    if target_bytes is None or method == "raw":
        data, header, palette, indices = attempt(params.colors)
        if target_bytes is not None and len(data) > target_bytes:
            raise BudgetError(f"raw 8-bit latents need {len(data)} bytes > budget {target_bytes}: use a palette method")
    else:
        best = None
        # libimagequant palettes stop at 256 colours; latent k-means may go beyond (uint16 indices)
        lo, hi = 2, max(2, min(params.colors, 256) if method == "liq" else params.colors)
        while lo <= hi:  # largest palette size that fits
            mid = (lo + hi) // 2
            out = attempt(mid)
            if len(out[0]) <= target_bytes:
                best, lo = out, mid + 1
            else:
                hi = mid - 1
        if best is None:
            smallest = min(n for _, n in trials)
            raise BudgetError(f"cannot meet {target_bytes} bytes: the smallest file (2 colours) is {smallest} bytes; "
                              f"raise --target-bytes or use a model with fewer latent channels")
        data, header, palette, indices = best
    return Encoded(data=data, header=header, latents=latents, q8=q8, palette=palette, indices=indices,
                   timings=timings, trials=trials, cpu_timings=cpu)


def _tc_header(backend, params: CodecParams, size: tuple[int, int], shape: tuple[int, ...]) -> bitstream.Header:
    c, h, w = shape
    return bitstream.Header(
        method="tc", coder="range", model_id=backend.model_id, fingerprint=backend.fingerprint, width=size[0],
        height=size[1], channels=c, latent_height=h, latent_width=w, quant_span=float(backend.quant_span), colors=0,
        policy=params.policy, dithered=False, denoise=params.denoise,
        denoise_strength=params.denoise_strength if params.denoise else 0.0,
        denoise_steps=params.denoise_steps if params.denoise else 0)


def _encode_tc(backend, params: CodecParams, model_img, size, latents, target_bytes, timings, cpu, cache) -> Encoded:
    """The transform coder: optional refinement against decoded pixels, then helpers.tcoder under the budget."""
    from . import tcoder

    header = _tc_header(backend, params, size, latents.shape)
    overhead = len(bitstream.pack(header, bytes(16), params.limits())) - 16
    if target_bytes is None and params.step is None:
        target_bytes = tcoder.default_budget(latents, backend.fingerprint, overhead)

    def code(z):
        return tcoder.encode_latent(z, backend.fingerprint, step=params.step, budget=target_bytes, overhead=overhead)

    z = latents
    if params.effort:
        from .refine import refine_latents

        def quantizer_for(zz):
            c, _ = code(zz)
            return lambda x: tcoder.synthesize(tcoder.dequantize(tcoder.quantize(
                tcoder.analyze(x, c.tables, c.levels), c.k), c.k), c.tables, c.levels)

        key = ("refine", params.effort, target_bytes, params.step,
               zlib.crc32(np.ascontiguousarray(latents).tobytes()), latents.shape)
        z = _cached(cache, key, timings, "refine",
                    lambda: refine_latents(backend, model_img, latents, params.effort, quantizer_for), cpu)
    with _timed(timings, "pack", cpu=cpu):
        coded, trials = code(z)
    data = bitstream.pack(header, coded.payload, params.limits())
    return Encoded(data=data, header=header, latents=z, q8=None, palette=None, indices=None, timings=timings,
                   trials=trials, cpu_timings=cpu, coded=coded)


def check_model(header: bitstream.Header, backend) -> None:
    """Refuse to decode with weights other than those the file was made with, or a latent whose size does not
    match the image for this model's downsampling factor (no silent padding or cropping)."""
    if header.fingerprint != backend.fingerprint or header.channels != backend.latent_channels:
        raise SDCError(f"this file was encoded with model '{header.model_id}' (weights {header.fingerprint:08x}, "
                       f"{header.channels} latent channels) but the loaded model is '{backend.model_id}' "
                       f"({backend.fingerprint:08x}, {backend.latent_channels} channels): pass --model with the "
                       f"same weights")
    bitstream.check_geometry(header, backend.downsample)


#: decoder CPU seconds per megapixel for the work estimate: TAEF2 on ONNX Runtime, measured on this project's
#: CPU machine (results/decode_memory/); PyTorch takes about the same per megapixel once started
DECODE_CPU_S_PER_MP = 8.0
#: above this many pixels (2048 x 2048) the CLI prints the work estimate and shows a tile progress bar
LARGE_DECODE_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class DecodeWork:
    """What decoding a file will cost, known from its header before any model runs."""

    width: int
    height: int
    tiles: int
    cpus: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def seconds(self) -> float:
        """Estimated wall seconds of decoder work on ``cpus`` CPUs (an idle machine)."""
        return self.pixels / 1e6 * DECODE_CPU_S_PER_MP / max(1, self.cpus)

    @property
    def large(self) -> bool:
        return self.pixels > LARGE_DECODE_PIXELS

    def describe(self) -> str:
        s = self.seconds
        eta = f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
        return (f"decoding {self.width}x{self.height} ({self.pixels / 1e6:.1f} megapixels, {self.tiles} tiles) takes "
                f"about {eta} on {self.cpus} CPUs; --max-pixels N refuses files larger than N pixels")


def decode_work(header: bitstream.Header, tile: int, cpus: int | None = None) -> DecodeWork:
    """The work a (checked) header asks for: image size, decoder tiles of ``tile`` pixels, estimated time."""
    import os

    from .backends.tiling import tile_grid

    tiles = len(tile_grid(header.latent_height, header.latent_width, max(1, tile // 8)))
    return DecodeWork(header.width, header.height, tiles, cpus or os.cpu_count() or 1)


def decode(data: bytes, backend, denoise: bool | None = None, progress: bool = False,
           limits: bitstream.Limits | None = None, release_denoiser: bool = False) -> Decoded:
    """Decode .sdc bytes to an image. ``denoise`` overrides the file's request (None = follow the file);
    ``release_denoiser`` frees the UNet and text encoder after denoising, before the VAE decoder runs (the CLI's
    one-shot decode: at SD v1.4's size that keeps 3.9 GB of fp32 weights out of the VAE decoder's peak).

    The whole header is checked (:func:`bitstream.unpack`, then against the model) before anything is
    allocated or the model runs; ``limits`` (default: :meth:`bitstream.Limits.default`) sets the pixel cap.
    """
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    header, payload = bitstream.unpack(data, limits)
    check_model(header, backend)
    with _timed(timings, "unpack", cpu=cpu):
        _, _, q = unpack_payload(header, payload, limits)
        z = q if q.dtype.kind == "f" else unquantize_8bit(q, header.quant_span)  # tc decodes to float latents
    do_denoise = header.denoise if denoise is None else denoise
    if do_denoise:
        import torch

        from .backends.denoise import DEFAULT_STEPS, DEFAULT_STRENGTH, denoise_latents

        with _timed(timings, "denoise", backend, cpu):
            strength = header.denoise_strength if header.denoise else DEFAULT_STRENGTH
            steps = header.denoise_steps if header.denoise else DEFAULT_STEPS
            z = denoise_latents(backend, torch.from_numpy(z)[None], strength, steps, progress)[0].cpu().numpy()
            if release_denoiser:
                backend.release_denoiser()
    with _timed(timings, "vae_decode", backend, cpu):
        pixels = decode_pixels(backend, z)
    if pixels.shape[:2] != (header.height, header.width):
        pixels = pixels[:header.height, :header.width]
    return Decoded(pixels=pixels, header=header, latents=z, timings=timings, cpu_timings=cpu)


def roundtrip(img, backend, params: CodecParams | None = None, target_bytes: int | None = None,
              latents: np.ndarray | None = None) -> tuple[Encoded, Decoded]:
    """encode then decode (from the bytes alone); the model input image is ``apply_policy(img)``."""
    enc = encode(img, backend, params, target_bytes, latents)
    return enc, decode(enc.data, backend)
