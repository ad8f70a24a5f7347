import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import bitstream
from helpers.codec import CodecParams, decode, encode, encode_latents, roundtrip
from helpers.errors import BudgetError, SDCError
from helpers.images import apply_policy, load_image, to_array
from helpers.methods.palette.quantize import apply_palette, quantize_8bit, unquantize_8bit
from helpers.metrics import psnr


def _photo(w=96, h=72, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([np.sin(xx / 7) * 80 + 128, np.cos(yy / 5) * 80 + 128, (xx + yy) % 256], 2)
    return Image.fromarray(np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8))


def test_tiny_sd_original_method_roundtrip_from_bytes(tiny_sd):
    img = _photo()
    enc = encode(img, tiny_sd, CodecParams(method="palette"))
    h = enc.header
    assert (h.method, h.coder, h.dithered, h.channels) == ("liq", "zlib", True, 4)
    assert (h.latent_height, h.latent_width, h.width, h.height) == (9, 12, 96, 72)
    # zlib payload is exactly the original packing: zlib.compress(palette + indices, 9)
    _, payload = bitstream.unpack(enc.data)
    assert payload == zlib.compress(enc.coded.palette.tobytes() + enc.coded.indices.astype(np.uint8).tobytes(), 9)
    assert enc.nbytes == len(payload) + bitstream.header_size(h)
    dec = decode(enc.data, tiny_sd)
    assert dec.image.size == (96, 72)
    # the decoder sees exactly unquantize(palette[indices])
    np.testing.assert_array_equal(
        dec.latents, unquantize_8bit(apply_palette(enc.coded.palette, enc.coded.indices), h.quant_span)
    )
    # deterministic: same bytes, same pixels
    assert encode(img, tiny_sd, CodecParams(method="palette")).data == enc.data
    assert np.array_equal(to_array(decode(enc.data, tiny_sd).image), to_array(dec.image))


def test_raw_method_is_lossless_on_8bit_latents(tiny_sd):
    enc = encode(_photo(), tiny_sd, CodecParams(method="raw"))
    assert enc.header.colors == 0
    dec = decode(enc.data, tiny_sd)
    np.testing.assert_array_equal(dec.latents, unquantize_8bit(enc.coded.q8, enc.header.quant_span))


def test_tiny_sd_denoise_flag_travels_in_the_file(tiny_sd):
    enc = encode(_photo(64, 64), tiny_sd, CodecParams(method="palette", denoise=True))
    assert enc.header.denoise and enc.header.denoise_steps == 66
    with_dn = decode(enc.data, tiny_sd)
    without = decode(enc.data, tiny_sd, denoise=False)
    assert "denoise" in with_dn.timings and "denoise" not in without.timings
    assert not np.array_equal(with_dn.latents, without.latents)


def test_pad8_restores_odd_sizes_and_crop512(taef2):
    img = _photo(101, 77)
    enc, dec = roundtrip(img, taef2, CodecParams(method="palette", colors=16))
    assert (enc.header.latent_width, enc.header.latent_height) == (13, 10)
    assert dec.image.size == (101, 77)
    big = _photo(700, 520)
    model_img, size = apply_policy(big, "crop512")
    assert size == (512, 512) and model_img.size == (512, 512)
    with pytest.raises(SDCError, match="not a multiple of 8"):
        encode(img, taef2, CodecParams(policy="none"))


def test_rate_control_never_exceeds_and_lands_close(taef2):
    img = _photo(128, 128)
    lat = encode_latents(taef2, img)
    for budget in (1500, 3000):
        enc = encode(img, taef2, CodecParams(method="palette"), target_bytes=budget, latents=lat)
        assert enc.nbytes <= budget
        assert enc.nbytes >= 0.85 * budget or enc.header.colors == 256
        # one more colour would not have fitted (binary search result is the largest fitting K)
        fits = [k for k, n in enc.trials if n <= budget]
        assert enc.header.colors == max(fits)
    with pytest.raises(BudgetError, match="smallest file"):
        encode(img, taef2, CodecParams(method="palette"), target_bytes=100, latents=lat)


def test_wrong_model_is_refused(taef2, tiny_sd):
    enc = encode(_photo(64, 64), tiny_sd, CodecParams(method="palette", colors=32))
    with pytest.raises(SDCError, match="pass --model with the same weights"):
        decode(enc.data, taef2)


def test_liq_needs_four_channels_and_taef2_has_no_unet(taef2):
    with pytest.raises(SDCError, match="needs 4 channels"):
        encode(_photo(64, 64), taef2, CodecParams(method="liq"))
    with pytest.raises(SDCError, match="no"):
        encode(_photo(64, 64), taef2, CodecParams(method="palette", denoise=True))


# Measured on this project's CPU machine, kodim23 center crop 512x512, TAEF2:
#   8-bit latents (no palette):          32.45 dB
#   k-means palette, 5000-byte budget:   21.32 dB (K=82)
# Floors are set a little below the measurements.
def test_real_taef2_roundtrip_on_kodak(taef2, kodak_dir):
    img = load_image(kodak_dir / "kodim23.png")
    ref = apply_policy(img, "crop512")[0]
    lat = encode_latents(taef2, ref)
    raw_enc, raw_dec = roundtrip(img, taef2, CodecParams(method="raw", policy="crop512"), latents=lat)
    assert psnr(ref, raw_dec.image) > 31.5
    enc, dec = roundtrip(img, taef2, CodecParams(method="palette", policy="crop512"), target_bytes=5000, latents=lat)
    assert 4500 <= enc.nbytes <= 5000
    assert psnr(ref, dec.image) > 20.5
    assert raw_enc.nbytes > 4 * enc.nbytes
    # the latents themselves: 32 x 64 x 64 floats
    assert lat.shape == (32, 64, 64) and quantize_8bit(lat, taef2.quant_span).nbytes == 131072


@pytest.mark.parametrize(
    "size, needle", [((8, 40), "supported sides"), ((70000, 20), "supported sides"), ((9000, 9000), "pixel cap")]
)
def test_image_size_limits(size, needle, taef2):
    with pytest.raises(SDCError, match=needle):
        encode(Image.new("RGB", size), taef2)


def test_unknown_policy_method_and_coder(taef2):
    img = _photo(32, 32)
    with pytest.raises(SDCError, match="unknown image policy"):
        encode(img, taef2, CodecParams(policy="stretch"))
    with pytest.raises(SDCError, match="unknown method"):
        encode(img, taef2, CodecParams(method="vq9"))
    with pytest.raises(SDCError, match="unknown coder"):
        encode(img, taef2, CodecParams(method="palette", coder="brotli"))
    with pytest.raises(SDCError, match="dither must be between 0 and 1"):
        encode(img, taef2, CodecParams(method="palette", dither=2.0))


@pytest.mark.parametrize("coder", ["zlib", "arith", "lzma"])
def test_coders_decode_to_identical_latents(taef2, coder):
    img = _photo(96, 64)
    lat = encode_latents(taef2, img)
    ref = encode(img, taef2, CodecParams(method="palette", colors=48, coder="zlib"), latents=lat)
    enc = encode(img, taef2, CodecParams(method="palette", colors=48, coder=coder), latents=lat)
    assert enc.header.coder == coder
    a, b = decode(ref.data, taef2), decode(enc.data, taef2)
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(to_array(a.image), to_array(b.image))
    if coder == "arith":
        assert enc.nbytes < ref.nbytes


def test_encode_cache_gives_identical_files(taef2):
    img = _photo(96, 96)
    lat = encode_latents(taef2, img)
    cache: dict = {}
    params = CodecParams(method="palette", coder="arith")
    for budget in (1200, 1600, 1600):
        plain = encode(img, taef2, params, target_bytes=budget, latents=lat)
        cached = encode(img, taef2, params, target_bytes=budget, latents=lat, cache=cache)
        assert cached.data == plain.data and cached.trials == plain.trials
        assert set(cached.timings) == set(plain.timings)
    palettes = [k for k in cache if k[1] == "palette"]
    assert len(palettes) == len({k[2] for k in palettes})  # each palette size computed once


def test_budget_search_may_exceed_256_colours_for_kmeans_only(taef2, tiny_sd):
    img = _photo(256, 256, seed=4)
    lat = encode_latents(taef2, img)
    enc = encode(img, taef2, CodecParams(method="palette", colors=1024), target_bytes=40000, latents=lat)
    assert enc.nbytes <= 40000 and enc.header.colors > 256
    np.testing.assert_array_equal(
        decode(enc.data, taef2).latents,
        unquantize_8bit(apply_palette(enc.coded.palette, enc.coded.indices), enc.header.quant_span),
    )
    liq = encode(img, tiny_sd, CodecParams(method="palette", colors=1024), target_bytes=100000)
    assert liq.header.method == "liq" and max(k for k, _ in liq.trials) <= 256
