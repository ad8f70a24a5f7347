"""Tiled VAE: the generic tiler against an independent reference, TAEF2's receptive field, tiled == untiled."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from helpers.backends.taef2 import halos, make_decoder, make_encoder, split_decoder, split_encoder
from helpers.backends.tiling import receptive_radius, tile_grid, tiled_apply


def _box3x2(t: np.ndarray) -> np.ndarray:
    """Two 3x3 box filters with zero padding (receptive radius 2), via scipy as the reference op."""
    out = t.astype(np.float64)
    for _ in range(2):
        out = uniform_filter(out, size=(1, 1, 3, 3), mode="constant")
    return out


def test_tiled_apply_is_exact_with_a_halo_covering_the_receptive_field():
    x = np.random.default_rng(0).random((1, 2, 37, 53))
    ref = _box3x2(x)
    got = tiled_apply(x, _box3x2, scale=1, tile=8, halo=2)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    short = tiled_apply(x, _box3x2, scale=1, tile=8, halo=1)
    assert np.abs(short - ref).max() > 1e-3  # a halo below the radius shows at the seams


def test_tiled_apply_scales_and_checks_its_arguments():
    x = np.arange(2 * 16 * 24, dtype=np.float32).reshape(1, 2, 16, 24)

    def down(t):  # 2x2 average pooling: output = input / 2
        n, c, h, w = t.shape
        return t.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))

    np.testing.assert_array_equal(tiled_apply(x, down, scale=Fraction(1, 2), tile=8, halo=2, align=2), down(x))
    up = tiled_apply(x, lambda t: t.repeat(4, 2).repeat(4, 3), scale=4, tile=5, halo=1)
    np.testing.assert_array_equal(up, x.repeat(4, 2).repeat(4, 3))
    with pytest.raises(ValueError, match="multiples of align"):
        tiled_apply(x, down, scale=Fraction(1, 2), tile=7, halo=2, align=2)
    with pytest.raises(ValueError, match="returned"):
        tiled_apply(x, lambda t: t[:, :, :1], scale=1, tile=8, halo=0)


def test_tile_grid_covers_the_image_once():
    grid = tile_grid(3000, 4000, 1024, 8)
    cover = np.zeros((3000, 4000), np.int8)
    for y0, y1, x0, x1 in grid:
        assert y0 % 8 == 0 and x0 % 8 == 0 and y1 - y0 <= 1024 and x1 - x0 <= 1024
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all() and len(grid) == 12


def test_taef2_receptive_field_from_the_architecture():
    enc_local, enc_global = split_encoder(make_encoder())
    dec_global, dec_local = split_decoder(make_decoder())
    # encoder: 4 convs at full resolution, then 3 stride-2 convs with 9 convs after each of the first two
    assert receptive_radius(enc_local) == 1 + 3 + 1 + 18 + 2 + 36 + 4 == 65
    assert receptive_radius(dec_local) == 9
    assert halos() == (72, 9)
    with pytest.raises(ValueError, match="GroupNorm"):
        receptive_radius(enc_global)
    with pytest.raises(ValueError, match="GroupNorm"):
        receptive_radius(dec_global)


def test_taef2_receptive_field_is_tight_enough(taef2):
    """Empirical check of the derived radius: a pixel change moves latents within the radius only."""
    x = torch.rand(1, 3, 256, 256)
    y = x.clone()
    y[:, :, 128, 128] += 0.5
    with torch.inference_mode():
        d = (taef2.enc_local(y) - taef2.enc_local(x)).abs().amax(1)[0]
    ys, xs = np.nonzero(d.numpy() > 0)
    # latent j sees pixels 8j-65..8j+65: pixel 128 reaches latents 8..24
    assert ys.min() >= 8 and ys.max() <= 24 and xs.min() >= 8 and xs.max() <= 24


def test_taef2_tiled_equals_untiled(taef2):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:320, 0:256]
    img = np.stack([np.sin(xx / 9) * 90 + 128, np.cos(yy / 13) * 90 + 128, (xx * yy) % 256], 0)
    x = torch.from_numpy((img + rng.normal(0, 10, img.shape)).clip(0, 255)[None].astype(np.float32) / 127.5 - 1)
    old = taef2.tile
    try:
        taef2.tile = 10**6
        z_ref = taef2.encode(x)
        y_ref = taef2.decode(z_ref)
        taef2.tile = 128  # 3x2 encoder tiles, 3x2 decoder tiles
        z = taef2.encode(x)
        y = taef2.decode(z_ref)
    finally:
        taef2.tile = old
    assert z.shape == z_ref.shape == (1, 32, 40, 32) and y.shape == y_ref.shape == (1, 3, 320, 256)
    assert float((z - z_ref).abs().max()) < 1e-4
    assert float((y - y_ref).abs().max()) * 127.5 < 0.5  # below half a pixel level: same 8-bit image


def test_sd_uses_diffusers_tiling_for_large_images(tiny_sd):
    x = torch.rand(1, 3, 128, 96) * 2 - 1
    old = tiny_sd.tile_threshold_pixels
    try:
        tiny_sd.tile_threshold_pixels = 64 * 64
        z = tiny_sd.encode(x)
        assert tiny_sd.vae.use_tiling
        assert tiny_sd.decode(z).shape == (1, 3, 128, 96)
        tiny_sd.tile_threshold_pixels = old
        tiny_sd.encode(x)
        assert not tiny_sd.vae.use_tiling
    finally:
        tiny_sd.tile_threshold_pixels = old
        tiny_sd.vae.disable_tiling()


def test_fullres_split_composes_and_its_halos():
    from helpers.backends.taef2 import inner_halos, split_fullres

    enc, dec = make_encoder(), make_decoder()
    first, mid, dmid, last = split_fullres(enc, dec)
    # encoder[:3]: conv, block (3 convs), stride-2 conv = 1 + 3 + 1 = 5 pixels -> 6 (a multiple of 2);
    # decoder[16:]: x2 upsampling (1/2), conv (1/2), block (3/2), conv (1/2) = 3 half-resolution samples
    assert receptive_radius(first) == 5 and receptive_radius(last) == 3
    assert inner_halos() == (6, 3)
    with torch.inference_mode():
        x = torch.rand(1, 3, 64, 48)
        assert torch.equal(mid(first(x)), split_encoder(enc)[0](x))
        f = torch.rand(1, 64, 8, 6)
        assert torch.equal(last(dmid(f)), split_decoder(dec)[1](f))
