"""The codec pipeline: image -> (policy) -> model input -> (backend) latents -> (method) payload -> (container)
.sdc bytes, and back. Method-agnostic: the latent coding methods live in :mod:`helpers.methods` (the 2022
palette method, transform coding, raw 8-bit latents), looked up by name in :mod:`helpers.methods.registry`;
the container is :mod:`helpers.bitstream`.

Each stage is its own function so notebooks can show them one by one: :func:`encode_latents`,
:func:`quantize_latents` and :func:`pack_payload` (the palette method's stages), :func:`unpack_payload`,
:func:`decode_latents`. :func:`encode` and :func:`decode` run the whole chain, :func:`encode` optionally under a
byte budget (each method's rate control: the largest palette, the finest tc step).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from . import bitstream
from .errors import SDCError
from .images import apply_policy, as_pil, signed_to_uint8, to_nchw
from .methods import registry
from .methods.base import EncodeJob, Stages
from .methods.palette.method import pack_payload, quantize_latents

__all__ = [
    "CodecParams",
    "Decoded",
    "Encoded",
    "check_model",
    "check_params",
    "decode",
    "decode_latents",
    "decode_pixels",
    "decode_work",
    "encode",
    "encode_latents",
    "pack_payload",
    "quantize_latents",
    "roundtrip",
    "unpack_payload",
]


@dataclass
class CodecParams:
    """Knobs of the codec. Each method reads its own: the palette ones ``colors``, ``dither``, ``coder``,
    ``seed``, ``kmeans_iters``; tc ``effort``, ``detail`` and ``step``."""

    #: a registered method or alias (helpers.methods.registry): tc (transform coding, the default: the best);
    #: palette = auto (the 2022 method: liq for 4 channels, kmeans otherwise), liq, kmeans, raw
    method: str = registry.DEFAULT
    colors: int = 256
    #: None = per method: 1.0 for 'liq' (the original), 0.0 for 'kmeans'. On TAEF2 (kodim23, 512x512) dithering
    #: the k-means palette cost PSNR and bytes at every size: K=64 21.45 dB / 4630 B dithered vs 21.65 dB / 4155 B.
    dither: float | None = None
    coder: str = "zlib"  # the palette methods' lossless coder: see helpers.methods.palette.entropy.CODERS
    policy: str = "pad8"  # see helpers.images
    denoise: bool = False
    denoise_strength: float = 0.04
    denoise_steps: int = 66
    seed: int = 0
    kmeans_iters: int = 25
    #: pixel cap for the input image (None: bitstream.Limits.default(), i.e. SDCOMP_MAX_PIXELS or 8192 x 8192)
    max_pixels: int | None = None
    #: tc only: encoder-side refinement against decoded pixels (helpers.methods.tc.refine.SCHEDULES: 0 = none,
    #: 1 = 3 steps in two stages, 2 = 8 in four, 3 = 30 in ten)
    effort: int = 0
    #: tc with effort only: weight of the refinement's per-tile detail term (None: the effort's own,
    #: helpers.methods.tc.refine.DETAIL_BETAS; 0 = pixel error and rate only, which smooths texture away)
    detail: float | None = None
    #: tc with effort only: the precision of the refinement's decoder passes on the CPU (fp32, bf16, or auto: bf16
    #: where the CPU runs it natively, AVX512-BF16 / AMX; helpers.methods.tc.precision; a GPU decoder runs float32).
    #: bf16 is about 3x faster and refines as well (3 training photos at 5000 B: effort 1 +0.04 dB / +0.014 JOD,
    #: effort 2 +0.02 dB / -0.002 JOD)
    precision: str = "auto"
    #: tc only, without a byte budget: the quantization step (None: the tables' default)
    step: float | None = None
    #: the encoder (``stock`` or a variant the model offers, e.g. ``tc``); None: the method's preference where the
    #: model offers it (tc: the trained ``tc`` encoder on the stock TAEF2), else the model's own
    encoder: str | None = None

    def limits(self) -> bitstream.Limits:
        return bitstream.Limits.default(self.max_pixels)

    def resolved_method(self, channels: int) -> str:
        """The registered method's name that codes a ``channels``-channel latent (aliases resolved)."""
        return registry.resolve(self.method, channels).name


@dataclass
class Encoded:
    data: bytes
    header: bitstream.Header
    latents: np.ndarray  # the float latents (C, h, w) that were coded (tc with effort: after refinement)
    #: the method's result: helpers.methods.palette.method.PaletteCoded (q8, palette, indices) or
    #: helpers.methods.tc.tcoder.Coded (quantized coefficients, step, tables)
    coded: Any
    timings: dict[str, float] = field(default_factory=dict)
    #: rate control: (palette size, bytes) for palette methods, (step index k, bytes) for tc
    trials: list[tuple[int, int]] = field(default_factory=list)
    cpu_timings: dict[str, float] = field(default_factory=dict)  # process CPU seconds per stage (all threads)

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def decoder_latent(self) -> np.ndarray:
        """The float latent the decoder will see (before optional UNet denoising)."""
        return self.coded.latent()


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


# ------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------


def encode_latents(backend, img: Image.Image, seed: int = 0) -> np.ndarray:
    """Model input image (multiple of 8) -> raw latents (C, h, w) float32 (SD: posterior sample, fixed seed).

    Any runtime: the backend's ``encode_array`` (:class:`helpers.backends.base.Backend`: PyTorch or ONNX
    Runtime) gets the same float32 array."""
    img = as_pil(img)
    if img.size[0] % backend.downsample or img.size[1] % backend.downsample:
        raise SDCError(
            f"image {img.size[0]}x{img.size[1]} is not a multiple of {backend.downsample}: "
            f"pass it through helpers.images.apply_policy first"
        )
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


def unpack_payload(header: bitstream.Header, payload: bytes, limits: bitstream.Limits | None = None):
    """Entropy-decode a payload (header already checked by :func:`bitstream.unpack`): (palette or None, indices
    or None, the stored latent: 8-bit for the palette methods, float for tc).

    The container hands it to the method registered under the header's method; every decoder bounds its
    memory and work by the header's sizes.
    """
    return bitstream.decode_payload(header, payload, limits)


# ------------------------------------------------------------------------------------------
# whole chain
# ------------------------------------------------------------------------------------------


def check_params(params: CodecParams, backend) -> None:
    """What :func:`encode` refuses before any work: denoising without a UNet, a palette size out of range."""
    if params.denoise and not getattr(backend, "has_unet", False):
        raise SDCError(
            f"--denoise needs a Stable Diffusion backend with a UNet; '{backend.model_id}' has none: "
            f"drop --denoise or pass --model an SD1.x id/folder"
        )
    if not 1 <= params.colors <= bitstream.MAX_COLORS:
        raise SDCError(f"palette size must be 1..{bitstream.MAX_COLORS} (libimagequant: 2..256), got {params.colors}")


def encoder_name(params: CodecParams, backend) -> str:
    """The encoder that codes for ``params`` on ``backend``: ``params.encoder``; else a backend made with another
    encoder than the stock one (a variant, a training checkpoint) keeps it; else the method's preference where the
    backend offers it (tc on the stock TAEF2: ``tc``), else ``stock``. An explicit encoder the backend lacks is a
    one-line error."""
    if params.encoder is not None:
        if params.encoder != backend.encoder_name and params.encoder not in backend.encoder_names():
            backend.with_encoder(params.encoder)  # raises the one-line reason (unknown, other decoder, missing file)
            raise SDCError(f"--encoder {params.encoder} is not offered by '{backend.model_id}': pass --encoder stock")
        return params.encoder
    if backend.encoder_name != "stock":
        return backend.encoder_name
    return preferred_encoder(params.method, backend.latent_channels, backend.encoder_names())


def preferred_encoder(method: str, channels: int, offered) -> str:
    """The encoder ``method`` (coding ``channels``-channel latents) prefers if it is among ``offered``, else ``stock``."""
    preferred = registry.resolve(method, channels).encoder
    return preferred if preferred in offered else "stock"


def encoder_backend(backend, params: CodecParams):
    """``backend`` with the encoder :func:`encoder_name` picks (the same decoder and fingerprint)."""
    return backend.with_encoder(encoder_name(params, backend))


def encode(
    img,
    backend,
    params: CodecParams | None = None,
    target_bytes: int | None = None,
    latents: np.ndarray | None = None,
    cache: dict | None = None,
) -> Encoded:
    """Compress an image into .sdc bytes: policy, the backend's encoder, the method, the container.

    With ``target_bytes`` the method's rate control picks its best setting whose complete file (header
    included) fits the budget; the file never exceeds it (palette methods: the largest palette size in
    2..``params.colors``, at most 256 for libimagequant: pass e.g. ``colors=1024`` to let larger budgets buy
    larger k-means palettes; tc: the finest quantization step). ``latents`` lets callers reuse a cached VAE
    encoding of the same (policy-applied) image (by :func:`encoder_backend`'s encoder); ``cache`` (a dict the caller keeps, e.g. one per image)
    memoises a method's intermediate results across calls, so several budgets and coders share their work.
    Results are identical with or without it, and ``timings`` report each stage's standalone cost either way.
    """
    params = params or CodecParams()
    check_params(params, backend)
    stages = Stages(cache=cache)
    model_img, size = apply_policy(img, params.policy, backend.downsample, params.max_pixels)
    if latents is None:
        with stages.timed("vae_encode", backend):
            latents = encode_latents(encoder_backend(backend, params), model_img, params.seed)
    method = registry.resolve(params.method, latents.shape[0])
    c, h, w = latents.shape
    header = bitstream.Header(
        method=method.name,
        coder="",
        model_id=backend.model_id,
        fingerprint=backend.fingerprint,
        width=size[0],
        height=size[1],
        channels=c,
        latent_height=h,
        latent_width=w,
        quant_span=float(backend.quant_span),
        colors=0,
        policy=params.policy,
        dithered=False,
        denoise=params.denoise,
        denoise_strength=params.denoise_strength if params.denoise else 0.0,
        denoise_steps=params.denoise_steps if params.denoise else 0,
    )
    job = EncodeJob(
        params=params,
        fingerprint=backend.fingerprint,
        quant_span=float(backend.quant_span),
        overhead=bitstream.header_size(header),
        target_bytes=target_bytes,
        stages=stages,
        backend=backend,
        image=model_img,
    )
    out = method.encode(latents, job)
    header = replace(header, **out.coded.header_fields())
    data = bitstream.pack(header, out.coded.payload, params.limits())
    return Encoded(
        data=data,
        header=header,
        latents=out.latents,
        coded=out.coded,
        timings=stages.timings,
        trials=out.trials,
        cpu_timings=stages.cpu,
    )


def check_model(header: bitstream.Header, backend) -> None:
    """Refuse to decode with weights other than those the file was made with, or a latent whose size does not
    match the image for this model's downsampling factor (no silent padding or cropping)."""
    if header.fingerprint != backend.fingerprint or header.channels != backend.latent_channels:
        raise SDCError(
            f"this file was encoded with model '{header.model_id}' (weights {header.fingerprint:08x}, "
            f"{header.channels} latent channels) but the loaded model is '{backend.model_id}' "
            f"({backend.fingerprint:08x}, {backend.latent_channels} channels): pass --model with the "
            f"same weights"
        )
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
        return (
            f"decoding {self.width}x{self.height} ({self.pixels / 1e6:.1f} megapixels, {self.tiles} tiles) takes "
            f"about {eta} on {self.cpus} CPUs; --max-pixels N refuses files larger than N pixels"
        )


def decode_work(header: bitstream.Header, tile: int, cpus: int | None = None) -> DecodeWork:
    """The work a (checked) header asks for: image size, decoder tiles of ``tile`` pixels, estimated time."""
    import os

    from .backends.tiling import tile_grid

    tiles = len(tile_grid(header.latent_height, header.latent_width, max(1, tile // 8)))
    return DecodeWork(header.width, header.height, tiles, cpus or os.cpu_count() or 1)


def decode(
    data: bytes,
    backend,
    denoise: bool | None = None,
    progress: bool = False,
    limits: bitstream.Limits | None = None,
    release_denoiser: bool = False,
) -> Decoded:
    """Decode .sdc bytes to an image. ``denoise`` overrides the file's request (None = follow the file);
    ``release_denoiser`` frees the UNet and text encoder after denoising, before the VAE decoder runs (the CLI's
    one-shot decode: at SD v1.4's size that keeps 3.9 GB of fp32 weights out of the VAE decoder's peak).

    The whole header is checked (:func:`bitstream.unpack`, then against the model) before anything is
    allocated or the model runs; ``limits`` (default: :meth:`bitstream.Limits.default`) sets the pixel cap.
    """
    stages = Stages()
    header, payload = bitstream.unpack(data, limits)
    check_model(header, backend)
    with stages.timed("unpack"):
        z = registry.get(header.method).decode(payload, header, limits)
    do_denoise = header.denoise if denoise is None else denoise
    if do_denoise:
        import torch

        from .backends.denoise import DEFAULT_STEPS, DEFAULT_STRENGTH, denoise_latents

        with stages.timed("denoise", backend):
            strength = header.denoise_strength if header.denoise else DEFAULT_STRENGTH
            steps = header.denoise_steps if header.denoise else DEFAULT_STEPS
            z = denoise_latents(backend, torch.from_numpy(z)[None], strength, steps, progress)[0].cpu().numpy()
            if release_denoiser:
                backend.release_denoiser()
    with stages.timed("vae_decode", backend):
        pixels = decode_pixels(backend, z)
    if pixels.shape[:2] != (header.height, header.width):
        pixels = pixels[: header.height, : header.width]
    return Decoded(pixels=pixels, header=header, latents=z, timings=stages.timings, cpu_timings=stages.cpu)


def roundtrip(
    img, backend, params: CodecParams | None = None, target_bytes: int | None = None, latents: np.ndarray | None = None
) -> tuple[Encoded, Decoded]:
    """encode then decode (from the bytes alone); the model input image is ``apply_policy(img)``."""
    enc = encode(img, backend, params, target_bytes, latents)
    return enc, decode(enc.data, backend)
