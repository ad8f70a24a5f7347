"""TAEF2: the tiny autoencoder for the FLUX.2 latent space (TAESD family), as a small torch module.

Architecture (matches the state-dict keys of ``taef2_encoder.pth`` / ``taef2_decoder.pth``):
3x3 convs and residual blocks of three convs with ReLU; the encoder has three stride-2 stages,
the decoder starts with a ``tanh(x/3)*3`` clamp and upsamples with nearest x2. The deepest three
blocks of each side carry a 1x1-conv + GroupNorm(4) branch added to the block input.
Images are RGB in [0, 1]; latents have 32 channels at 1/8 resolution.

diffusers' ``AutoencoderTiny`` cannot express the GroupNorm branch, so the module lives here.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_CHANNELS = 32


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


def make_encoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    return nn.Sequential(
        _conv(3, 64), Block(64, 64),
        _conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        _conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        _conv(64, 64, stride=2, bias=False), Block(64, 64, True), Block(64, 64, True), Block(64, 64, True),
        _conv(64, latent_channels),
    )


def make_decoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    return nn.Sequential(
        Clamp(), _conv(latent_channels, 64), nn.ReLU(),
        Block(64, 64, True), Block(64, 64, True), Block(64, 64, True),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        Block(64, 64), Block(64, 64), Block(64, 64),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        Block(64, 64), Block(64, 64), Block(64, 64),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        Block(64, 64), _conv(64, 3),
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


def split_fullres(encoder: nn.Sequential, decoder: nn.Sequential
                  ) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Sequential]:
    """The local halves cut once more where the resolution halves: (encoder[:3] image -> 1/2,
    encoder[3:11] 1/2 -> 1/8 features, decoder[6:16] latent features -> 1/2, decoder[16:] 1/2 -> image).
    Running the full-resolution parts in smaller tiles of their own bounds the largest activations
    (:mod:`helpers.onnx_runtime`)."""
    return (encoder[:ENCODER_FULLRES], encoder[ENCODER_FULLRES:ENCODER_SPLIT],
            decoder[DECODER_SPLIT:DECODER_FULLRES], decoder[DECODER_FULLRES:])


def inner_halos() -> tuple[int, int]:
    """Halos for tiling the full-resolution parts of :func:`split_fullres` exactly: (encoder[:3] halo in pixels,
    a multiple of 2; decoder[16:] halo in half-resolution samples)."""
    import math

    from .tiling import receptive_radius

    first, _, _, last = split_fullres(make_encoder(), make_decoder())
    return 2 * math.ceil(receptive_radius(first) / 2), math.ceil(receptive_radius(last))


def halos() -> tuple[int, int]:
    """Halos that make tiling exact, derived from the architecture (:func:`helpers.tiling.receptive_radius`):
    (encoder halo in pixels, a multiple of 8; decoder halo in latent samples)."""
    import math

    from .tiling import receptive_radius

    enc_local, _ = split_encoder(make_encoder())
    _, dec_local = split_decoder(make_decoder())
    r_enc = receptive_radius(enc_local)  # pixels
    r_dec = receptive_radius(dec_local)  # latent samples
    return 8 * math.ceil(r_enc / 8), math.ceil(r_dec)


# ------------------------------------------------------------------------------------------
# The decoder's global part in tiles (large images): the GroupNorm statistics are gathered in a first pass
# over tiles, then each block runs tile by tile with those statistics (helpers.tiling.streamed_global).
# ------------------------------------------------------------------------------------------

#: latent positions (h x w) above which the decoder's global part runs streamed: 65,536 (a 2048x2048 image),
#: where the untiled GroupNorm branch (256 channels at latent resolution) needs 64 MiB per activation; at the
#: 8192x8192 cap it needs 1 GiB each, several alive at once. Files up to this size decode exactly as before.
STREAM_GLOBAL_ABOVE = 256 * 256
#: receptive radius of the pieces: the head (clamp, 3x3 conv, ReLU) 1 latent sample, a block's local part
#: (three 3x3 convs; its GroupNorm branch is pointwise once the statistics are known) 3
HEAD_HALO, BLOCK_HALO = 1, 3


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
