import os

import numpy as np
import pytest

from helpers.backends.sd import SD_QUANT_SPAN
from helpers.errors import SDCError
from helpers.methods.palette.quantize import (
    apply_palette,
    error_diffusion,
    kmeans,
    palette_kmeans,
    palette_libimagequant,
    quantize_8bit,
    unquantize_8bit,
)


def test_sd_span_is_the_original_constant():
    assert pytest.approx(46.44825) == SD_QUANT_SPAN


def test_quantize_formula_hand_computed():
    z = np.array([0.0, 10.0, -10.0, SD_QUANT_SPAN / 2, 100.0, -100.0, -SD_QUANT_SPAN / 2], np.float32)
    # uint8(clamp(z/46.44825 + 0.5, 0, 1) * 255 + 0.5), worked by hand:
    # 0 -> 128.0 -> 128; 10 -> 0.715294*255+0.5 = 182.90 -> 182; -10 -> 0.284706*255+0.5 = 73.10 -> 73
    # +span/2 -> 255.5 -> 255; clipped values -> 255 and 0; -span/2 -> 0.5 -> 0
    assert quantize_8bit(z, SD_QUANT_SPAN).tolist() == [128, 182, 73, 255, 255, 0, 0]
    assert quantize_8bit(z, SD_QUANT_SPAN).dtype == np.uint8


def test_unquantize_formula_hand_computed():
    q = np.array([0, 128, 255, 182], np.uint8)
    # (q/255 - 0.5) * 46.44825
    expect = [-23.224125, 0.0910750, 23.224125, 9.927175]  # 182: 0.2137255 * 46.44825
    np.testing.assert_allclose(unquantize_8bit(q, SD_QUANT_SPAN), expect, atol=1e-4)


def test_roundtrip_error_is_half_a_step_inside_the_range():
    rng = np.random.default_rng(0)
    z = rng.uniform(-20, 20, size=(4, 16, 16)).astype(np.float32)
    err = np.abs(unquantize_8bit(quantize_8bit(z, SD_QUANT_SPAN), SD_QUANT_SPAN) - z)
    assert err.max() <= SD_QUANT_SPAN / 255 / 2 + 1e-5


def _smooth_latent(c=4, h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = [np.sin(6 * xx * (i + 1) + yy * 3) * 60 + 128 + rng.normal(0, 6, (h, w)) for i in range(c)]
    return np.clip(np.stack(base), 0, 255).astype(np.uint8)


def test_libimagequant_shapes_and_palette_size():
    q = _smooth_latent()
    pal, idx = palette_libimagequant(q, colors=256, dither=1.0)
    assert pal.dtype == np.uint8 and pal.shape[1] == 4 and 2 <= len(pal) <= 256
    assert idx.shape == (64, 64) and idx.dtype == np.uint8 and idx.max() < len(pal)
    assert idx.size == 4096 and pal.nbytes <= 1024
    out = apply_palette(pal, idx)
    assert out.shape == q.shape
    # 256 colours for a smooth 4-channel field: every value within a few levels on average
    assert np.abs(out.astype(int) - q).mean() < 8
    pal16, _ = palette_libimagequant(q, colors=16, dither=0.0)
    assert len(pal16) <= 16


def test_libimagequant_exact_when_few_colours():
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    colours[:, 3] = 255  # opaque: libimagequant keeps RGB of opaque pixels exactly
    idx = rng.integers(0, 5, size=(32, 32))
    q = colours[idx].transpose(2, 0, 1).copy()
    pal, ind = palette_libimagequant(q, colors=256, dither=1.0)
    np.testing.assert_array_equal(apply_palette(pal, ind), q)


def test_libimagequant_needs_four_channels():
    with pytest.raises(SDCError, match="4, H, W"):
        palette_libimagequant(np.zeros((32, 8, 8), np.uint8))


@pytest.mark.parametrize("c", [4, 32])
def test_kmeans_palette_any_channel_count(c):
    q = _smooth_latent(c=c, h=32, w=40)
    pal, idx = palette_kmeans(q, colors=16, dither=1.0)
    assert pal.shape[1] == c and len(pal) <= 16 and pal.dtype == np.uint8
    assert idx.shape == (32, 40) and idx.max() < len(pal)


def test_kmeans_exact_when_distinct_points_fit():
    pts = np.array([[0, 0], [10, 10], [0, 0], [200, 3]], np.float32)
    np.testing.assert_array_equal(kmeans(pts, 8), np.unique(pts, axis=0))


def test_error_diffusion_preserves_local_means_better_than_nearest():
    """Dithering trades per-pixel error for a correct local average (what the decoder's blur sees)."""
    q = _smooth_latent(c=2, h=64, w=64, seed=3)
    pal, _ = palette_kmeans(q, colors=8, dither=0.0)
    f = q.astype(np.float32)
    nearest = apply_palette(pal, error_diffusion(f, pal, 0.0)).astype(np.float32)
    dithered = apply_palette(pal, error_diffusion(f, pal, 1.0)).astype(np.float32)

    def block_err(x):
        return np.abs((x - f).reshape(2, 16, 4, 16, 4).mean((2, 4))).mean()

    assert block_err(dithered) < 0.85 * block_err(nearest)  # measured 4.47 vs 5.99
    assert np.abs(dithered - f).mean() > np.abs(nearest - f).mean()  # per pixel it is noisier


def test_apply_palette_rejects_out_of_range_index():
    with pytest.raises(SDCError, match="palette has 2"):
        apply_palette(np.zeros((2, 4), np.uint8), np.full((2, 2), 5, np.uint8))


def test_kmeans_does_not_depend_on_the_blas_thread_count(taef2, kodak_dir, tmp_path):
    """The palette (and so the file) must not depend on how many threads BLAS runs: Dask's workers run one, a plain
    process all cores. kodim23's 8-bit TAEF2 latent, the palette sizes whose files once came out 1-3 bytes apart
    (OpenBLAS, one thread against two, on one CPU), fitted in two processes."""
    import subprocess
    import sys

    from PIL import Image

    from helpers.codec import encode_latents
    from helpers.photos import crop512

    with Image.open(kodak_dir / "kodim23.png") as im:
        q8 = quantize_8bit(encode_latents(taef2, crop512(im.convert("RGB"))), taef2.quant_span)
    np.save(tmp_path / "q8.npy", q8)
    code = (
        "import hashlib, numpy as np; from helpers.methods.palette.quantize import palette_kmeans; "
        f"q = np.load({str(tmp_path / 'q8.npy')!r}); "
        "fits = [a.tobytes() for k in (33, 49) for a in palette_kmeans(q, k)]; "
        "print(hashlib.sha256(b''.join(fits)).hexdigest())"
    )
    out = set()
    for n in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
        out.add(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        )
    assert len(out) == 1, out
