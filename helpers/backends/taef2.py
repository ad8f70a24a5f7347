"""TAEF2: the tiny autoencoder for the FLUX.2 latent space (TAESD family), as a small torch module.

Architecture (matches the state-dict keys of ``taef2_encoder.pth`` / ``taef2_decoder.pth``):
3x3 convs and residual blocks of three convs with ReLU; the encoder has three stride-2 stages,
the decoder starts with a ``tanh(x/3)*3`` clamp and upsamples with nearest x2. The deepest three
blocks of each side carry a 1x1-conv + GroupNorm(4) branch added to the block input.
Images are RGB in [0, 1]; latents have 32 channels at 1/8 resolution.

diffusers' ``AutoencoderTiny`` cannot express the GroupNorm branch, so the module lives here, with
:class:`TAEF2Backend` (the PyTorch backend, tiled) and :func:`load_taef2`. Facts every runtime shares (weight
files, latent channels, quantization span, tile side, streaming threshold) are in
:mod:`helpers.backends.taef2_spec`.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelNotFoundError
from . import taef2_spec as spec
from .taef2_spec import (
    BLOCK_HALO,
    HEAD_HALO,
    TAEF2_LATENT_CHANNELS,
    TAEF2_MODEL_ID,
    TAEF2_QUANT_SPAN,
    default_taef2_dir,
    taef2_weight_files,
    tile_side,
)
from .tiling import receptive_radius, streamed_global, tiled_apply
from .torch_base import TorchBackend, select_device, weights_fingerprint


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block; ``gn=True`` adds the 1x1-conv + GroupNorm(4) branch of TAEF2."""

    def __init__(self, n_in: int, n_out: int, gn: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if gn:
            hidden = n_in * 4
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, hidden, 1, bias=False),
                nn.GroupNorm(4, hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, n_in, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def make_encoder(latent_channels: int = TAEF2_LATENT_CHANNELS) -> nn.Sequential:
    return nn.Sequential(
        _conv(3, 64),
        Block(64, 64),
        _conv(64, 64, stride=2, bias=False),
        Block(64, 64),
        Block(64, 64),
        Block(64, 64),
        _conv(64, 64, stride=2, bias=False),
        Block(64, 64),
        Block(64, 64),
        Block(64, 64),
        _conv(64, 64, stride=2, bias=False),
        Block(64, 64, True),
        Block(64, 64, True),
        Block(64, 64, True),
        _conv(64, latent_channels),
    )


def make_decoder(latent_channels: int = TAEF2_LATENT_CHANNELS) -> nn.Sequential:
    return nn.Sequential(
        Clamp(),
        _conv(latent_channels, 64),
        nn.ReLU(),
        Block(64, 64, True),
        Block(64, 64, True),
        Block(64, 64, True),
        nn.Upsample(scale_factor=2),
        _conv(64, 64, bias=False),
        Block(64, 64),
        Block(64, 64),
        Block(64, 64),
        nn.Upsample(scale_factor=2),
        _conv(64, 64, bias=False),
        Block(64, 64),
        Block(64, 64),
        Block(64, 64),
        nn.Upsample(scale_factor=2),
        _conv(64, 64, bias=False),
        Block(64, 64),
        _conv(64, 3),
    )


# ------------------------------------------------------------------------------------------
# Split points for tiling: the GroupNorm blocks (global statistics) sit at latent resolution, where
# running untiled is cheap; everything at pixel resolution is local and can be tiled exactly.
# ------------------------------------------------------------------------------------------

ENCODER_SPLIT = 11  # encoder[:11]: pixel-resolution convs down to 1/8 (local); encoder[11:]: GroupNorm blocks
DECODER_SPLIT = 6  # decoder[:6]: clamp, conv, GroupNorm blocks at latent resolution; decoder[6:]: local, x8


def split_encoder(encoder: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """(local part: image -> 64-channel features at 1/8, tileable; global part: features -> latents)."""
    return encoder[:ENCODER_SPLIT], encoder[ENCODER_SPLIT:]


def split_decoder(decoder: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """(global part: latents -> 64-channel features at latent resolution; local part: features -> image, tileable)."""
    return decoder[:DECODER_SPLIT], decoder[DECODER_SPLIT:]


#: within the local halves, the layers at full image resolution (the most memory per pixel): encoder[:3] (conv,
#: block, stride-2 conv: image -> 1/2) and decoder[16:] (x2 upsampling, conv, block, conv: 1/2 -> image)
ENCODER_FULLRES = 3
DECODER_FULLRES = 16


def split_fullres(
    encoder: nn.Sequential, decoder: nn.Sequential
) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Sequential]:
    """The local halves cut once more where the resolution halves: (encoder[:3] image -> 1/2,
    encoder[3:11] 1/2 -> 1/8 features, decoder[6:16] latent features -> 1/2, decoder[16:] 1/2 -> image).
    Running the full-resolution parts in smaller tiles of their own bounds the largest activations
    (:mod:`helpers.backends.onnx_runtime`)."""
    return (
        encoder[:ENCODER_FULLRES],
        encoder[ENCODER_FULLRES:ENCODER_SPLIT],
        decoder[DECODER_SPLIT:DECODER_FULLRES],
        decoder[DECODER_FULLRES:],
    )


def inner_halos() -> tuple[int, int]:
    """Halos for tiling the full-resolution parts of :func:`split_fullres` exactly: (encoder[:3] halo in pixels,
    a multiple of 2; decoder[16:] halo in half-resolution samples)."""
    import math

    first, _, _, last = split_fullres(make_encoder(), make_decoder())
    return 2 * math.ceil(receptive_radius(first) / 2), math.ceil(receptive_radius(last))


def halos() -> tuple[int, int]:
    """Halos that make tiling exact, derived from the architecture (:func:`helpers.backends.tiling.receptive_radius`):
    (encoder halo in pixels, a multiple of 8; decoder halo in latent samples)."""
    import math

    enc_local, _ = split_encoder(make_encoder())
    _, dec_local = split_decoder(make_decoder())
    r_enc = receptive_radius(enc_local)  # pixels
    r_dec = receptive_radius(dec_local)  # latent samples
    return 8 * math.ceil(r_enc / 8), math.ceil(r_dec)


# ------------------------------------------------------------------------------------------
# The decoder's global part in tiles (large images): the GroupNorm statistics are gathered in a first pass
# over tiles, then each block runs tile by tile with those statistics (helpers.backends.tiling.streamed_global),
# above taef2_spec.STREAM_GLOBAL_ABOVE latent positions, with halos taef2_spec.HEAD_HALO / BLOCK_HALO.
# ------------------------------------------------------------------------------------------


class GNHidden(nn.Module):
    """A GroupNorm block's branch up to the GroupNorm: x -> W1 x (the values the statistics are taken over)."""

    def __init__(self, block: Block):
        super().__init__()
        self.conv = block.pool[0]

    def forward(self, x):
        return self.conv(x)


class GNApply(nn.Module):
    """A GroupNorm block with the statistics given: (x, mean, rstd) -> block(x), where mean and rstd are the
    per-channel (N, C, 1, 1) group mean and 1/sqrt(var + eps) of W1 x over the whole image."""

    def __init__(self, block: Block):
        super().__init__()
        self.block = block
        gn = block.pool[1]
        self.register_buffer("weight", gn.weight.detach().clone().reshape(1, -1, 1, 1))
        self.register_buffer("bias", gn.bias.detach().clone().reshape(1, -1, 1, 1))

    def forward(self, x, mean, rstd):
        b = self.block
        h = (b.pool[0](x) - mean) * rstd * self.weight + self.bias
        x = x + b.pool[3](torch.relu(h))
        return b.fuse(b.conv(x) + b.skip(x))


def split_global_decoder(decoder: nn.Sequential) -> tuple[nn.Sequential, list[tuple[GNHidden, GNApply]], float, int]:
    """The decoder's global part (decoder[:6]) cut for streaming: (head = clamp, conv, ReLU; per GroupNorm block
    (hidden, apply); GroupNorm eps; groups)."""
    head = decoder[:3]
    blocks = [decoder[i] for i in range(3, DECODER_SPLIT)]
    gn = blocks[0].pool[1]
    return head, [(GNHidden(b).eval(), GNApply(b).eval()) for b in blocks], float(gn.eps), int(gn.num_groups)


# ------------------------------------------------------------------------------------------
# The PyTorch backend
# ------------------------------------------------------------------------------------------


def _inplace_relu(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    module = copy.deepcopy(module)
    for m in module.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = True
    return module


class TAEF2Backend(TorchBackend):
    """The real pretrained TAEF2 tiny autoencoder (32 latent channels, 8x downsampling).

    Encode and decode run tiled (:mod:`helpers.backends.tiling`) so memory stays bounded for any image size: the
    pixel-resolution layers run on overlapping tiles whose halos cover their receptive field
    (:func:`halos`: 72 pixels for the encoder, 9 latent samples for the decoder), and the
    GroupNorm blocks, whose statistics are global, run untiled at latent resolution. The result equals the
    untiled network's up to float summation order. Images up to one tile run in one piece.
    """

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module, device, dtype, model_id=TAEF2_MODEL_ID):
        super().__init__(
            model_id=model_id,
            kind="taef2",
            device=device,
            dtype=dtype,
            latent_channels=TAEF2_LATENT_CHANNELS,
            quant_span=TAEF2_QUANT_SPAN,
        )
        self.encoder = encoder.to(device=device, dtype=dtype).eval()
        self.decoder = decoder.to(device=device, dtype=dtype).eval()
        self.fingerprint = weights_fingerprint(self.decoder)
        enc_local, self.enc_global = split_encoder(self.encoder)
        self.dec_global, dec_local = split_decoder(self.decoder)
        # the tiled parts run with in-place ReLUs (same numbers, one activation less at the peak); copies, so
        # self.encoder / self.decoder stay as they are for autograd users
        self.enc_local, self.dec_local = _inplace_relu(enc_local), _inplace_relu(dec_local)
        self.enc_halo, self.dec_halo = halos()
        self.tile = tile_side()  # core tile side in pixels (a multiple of 64)
        self.progress: bool | None = None  # tile progress bar: None = on a terminal only
        self._encoders: dict[str, TAEF2Backend] = {self.encoder_name: self}  # shared by this model's variants

    def components(self) -> dict[str, torch.nn.Module]:
        return {"TAEF2 encoder": self.encoder, "TAEF2 decoder": self.decoder}

    def encoder_names(self) -> tuple[str, ...]:
        return spec.encoder_names(self.fingerprint)

    def with_encoder(self, name: str) -> TAEF2Backend:
        """This TAEF2 with encoder ``name``: a backend sharing the decoder module (and its fingerprint), loaded once
        per model and kept."""
        if name not in self._encoders:
            enc = make_encoder()
            _load_state(enc, spec.encoder_variant_file(name, self.fingerprint))
            self.add_encoder(name, enc)
        return self._encoders[name]

    def add_encoder(self, name: str, encoder: torch.nn.Module) -> TAEF2Backend:
        """A backend that encodes with ``encoder`` (a TAEF2 encoder module, e.g. a training checkpoint's) under
        ``name``, sharing this one's decoder and kept among this model's encoders (:meth:`with_encoder` finds it)."""
        other = TAEF2Backend(encoder, self.decoder, self.device, self.dtype, self.model_id)
        other.encoder_name, other._encoders = name, self._encoders
        self._encoders[name] = other
        return other

    def _run(self, module, to_unit: bool = False):
        def fn(t: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(t).to(self.device, self.dtype)
                if to_unit:  # [-1, 1] -> [0, 1] per tile: no second full-size copy of the image
                    x = (x + 1) / 2
                return module(x).float().cpu().numpy()

        return fn

    @torch.inference_mode()
    def encode(self, x, generator=None):
        # TAESD-family models take RGB in [0, 1]; the encoder is deterministic (no sampling).
        if x.shape[-1] * x.shape[-2] <= self.tile**2:
            return self.encoder((x.to(self.device, self.dtype) + 1) / 2).float()
        feats = tiled_apply(
            x.float().cpu().numpy(),
            self._run(self.enc_local, to_unit=True),
            scale=Fraction(1, 8),
            tile=self.tile,
            halo=self.enc_halo,
            align=8,
            progress=self.progress,
            desc="TAEF2 encode tiles",
        )
        return self.enc_global(torch.from_numpy(feats).to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def decode(self, z):
        if z.shape[-1] * z.shape[-2] * 64 <= self.tile**2:
            return self.decoder(z.to(self.device, self.dtype)).float() * 2 - 1
        feats = self.dec_global(z.to(self.device, self.dtype)).float().cpu().numpy()
        y = tiled_apply(
            feats,
            self._run(self.dec_local),
            scale=8,
            tile=self.tile // 8,
            halo=self.dec_halo,
            progress=self.progress,
            desc="TAEF2 decode tiles",
        )
        del feats
        y = torch.from_numpy(y)
        return y.mul_(2).sub_(1)

    def _torch_fn(self, module):
        def fn(*arrays):
            with torch.inference_mode():
                args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype) for a in arrays]
                return module(*args).float().cpu().numpy()

        return fn

    def decode_uint8(self, z: np.ndarray) -> np.ndarray:
        """Raw latents (1, 32, h, w) -> (H, W, 3) uint8, with no full-size float image: each tile's output goes
        straight into the 8-bit result. Up to one tile the pixels are those of :meth:`decode` (the same float
        operations, converted at once); above :data:`helpers.backends.taef2_spec.STREAM_GLOBAL_ABOVE` latent positions the
        GroupNorm blocks run streamed too (:func:`helpers.backends.tiling.streamed_global`), so memory is two
        64-channel feature maps at latent resolution plus one tile, whatever the image size."""
        from ..images import signed_to_uint8

        z = np.ascontiguousarray(z, dtype=np.float32)
        n, _, h, w = z.shape
        if n != 1:
            raise ValueError(f"decode_uint8 takes one latent, got a batch of {n}")
        if h * w * 64 <= self.tile**2:
            return signed_to_uint8(self.decode_array(z))
        if h * w > spec.STREAM_GLOBAL_ABOVE:
            head, blocks, eps, groups = split_global_decoder(self.decoder)
            feats = streamed_global(
                z,
                self._torch_fn(head),
                [(self._torch_fn(a), self._torch_fn(b)) for a, b in blocks],
                tile=self.tile // 8,
                head_halo=HEAD_HALO,
                block_halo=BLOCK_HALO,
                groups=groups,
                eps=eps,
            )
        else:
            with torch.inference_mode():
                feats = self.dec_global(torch.from_numpy(z).to(self.device, self.dtype)).float().cpu().numpy()
        out = np.empty((8 * h, 8 * w, 3), dtype=np.uint8)

        def sink(place, t):
            y0, y1, x0, x1 = place
            t = t * np.float32(2)  # the same float32 operations as decode(): * 2 - 1, then clamp and round
            t -= np.float32(1)
            signed_to_uint8(t, out[y0:y1, x0:x1])

        tiled_apply(
            feats,
            self._run(self.dec_local),
            scale=8,
            tile=self.tile // 8,
            halo=self.dec_halo,
            progress=self.progress,
            desc="TAEF2 decode tiles",
            sink=sink,
        )
        return out


def _load_state(module: nn.Module, f: Path) -> None:
    """Load a TAEF2 weight file (a float16 or float32 state dict) into ``module``, or a one-line error."""
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
        module.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"{f} is not a TAEF2 state dict ({first}); fix: re-download {f.name}") from None


def load_taef2(
    directory: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    encoder: str = spec.STOCK_ENCODER,
) -> TAEF2Backend:
    """Load TAEF2 from a directory holding taef2_encoder.pth and taef2_decoder.pth; ``encoder``: ``stock`` (the
    folder's) or a shipped variant (:data:`helpers.backends.taef2_spec.ENCODER_VARIANTS`)."""
    directory = Path(directory) if directory is not None else default_taef2_dir()
    dev = device if isinstance(device, torch.device) else select_device(device)
    # TAEF2 is tiny: fp32 everywhere except CUDA, where fp16 is safe and fast.
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    t0 = time.perf_counter()
    enc_file, dec_file = taef2_weight_files(directory)
    enc, dec = make_encoder(), make_decoder()
    _load_state(enc, enc_file)
    _load_state(dec, dec_file)
    backend = TAEF2Backend(enc, dec, dev, dtype)
    backend = backend.with_encoder(encoder)
    backend.load_seconds = time.perf_counter() - t0
    return backend
