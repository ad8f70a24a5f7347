"""Rate-distortion refinement (helpers.methods.tc.refine): the tc quantizer's step read back, and the rate term's effect."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.codec import CodecParams, decode_latents, encode, encode_latents
from helpers.images import apply_policy, load_image
from helpers.methods.tc import refine
from helpers.methods.tc import tcoder as T


@pytest.fixture(scope="module")
def crop(kodak_dir):
    return apply_policy(load_image(kodak_dir / "kodim23.png"), "crop512")[0].crop((128, 128, 384, 384))


def _quantizer_for(fingerprint, budget):
    def quantizer_for(zz):
        c, _ = T.encode_latent(zz, fingerprint, budget=budget)
        quantizer_for.k = c.k
        return lambda x: T.synthesize(
            T.dequantize(T.quantize(T.analyze(x, c.tables, c.levels), c.k), c.k), c.tables, c.levels
        )

    return quantizer_for


def test_tc_state_reads_back_the_step(taef2, crop):
    z = encode_latents(taef2, crop)
    for budget in (800, 1500, 4000):
        qf = _quantizer_for(taef2.fingerprint, budget)
        quant = qf(z)
        tables, levels, k = refine.tc_state(quant, z, taef2.fingerprint)
        assert k == qf.k and levels == T.levels_for(*z.shape[1:]) and tables.table_id != 0
    assert refine.tc_state(lambda x: np.round(x * 7.3) / 7.3 + 0.01, z, taef2.fingerprint) is None


def test_rate_term_makes_the_refined_latent_cheaper(taef2, crop):
    # the same steps with and without the rate term: at the first stage's step, the rate-aware latent costs fewer
    # bytes (this is what lets the rate control pick a finer step for the same budget)
    z = encode_latents(taef2, crop)
    qf = _quantizer_for(taef2.fingerprint, 1500)
    qf(z)
    k0 = qf.k
    size, z0 = {}, z.copy()
    for alpha in (0.0, 2.0):
        zr = refine.refine_latents(taef2, crop, z, 1, _quantizer_for(taef2.fingerprint, 1500), alpha=alpha)
        size[alpha] = len(T.encode_latent(zr, taef2.fingerprint, k=k0)[0].payload)
    np.testing.assert_array_equal(z, z0)  # both runs started from the encoder's latent: refinement works on a copy
    assert size[2.0] < 0.97 * size[0.0], size


def test_detail_term_keeps_the_detail_that_pixel_error_smooths(taef2, crop):
    # the same refinement with and without the per-tile detail term: with it, the decoded crop keeps more of the
    # original's high-frequency energy (the benchmark's detail retention), and every other setting is equal
    from helpers.metrics.retention import detail_retention

    z = encode_latents(taef2, crop)
    kept = {}
    for beta in (0.0, 4e-3):
        qf = _quantizer_for(taef2.fingerprint, 1500)
        zr = refine.refine_latents(taef2, crop, z, 1, qf, beta=beta)
        c, _ = T.encode_latent(zr, taef2.fingerprint, budget=1500)
        img = decode_latents(taef2, T.decode_payload(c.payload, *z.shape, taef2.fingerprint))
        kept[beta] = detail_retention(crop, img)
    assert kept[4e-3] > kept[0.0] + 0.05, kept


def test_extra_loss_is_added_to_every_step(taef2, crop):
    # the experiments' hook: called once per step with the decoded crop and the target, both (1, 3, H, W) in [0, 1];
    # a term that pulls the decoded picture towards black moves the result, one of weight 0 leaves it as without
    import torch

    z = encode_latents(taef2, crop)
    seen = []

    def darker(out, target):
        seen.append((tuple(out.shape), tuple(target.shape), float(target.min()), float(target.max())))
        return 10.0 * out.mean()

    plain = refine.refine_latents(taef2, crop, z, 1, _quantizer_for(taef2.fingerprint, 1500))
    zero = refine.refine_latents(
        taef2, crop, z, 1, _quantizer_for(taef2.fingerprint, 1500), extra_loss=lambda o, t: 0.0 * o.sum()
    )
    dark = refine.refine_latents(taef2, crop, z, 1, _quantizer_for(taef2.fingerprint, 1500), extra_loss=darker)
    assert len(seen) == sum(n for n, _ in refine.SCHEDULES[1])
    assert all(s[0] == s[1] == (1, 3, 256, 256) and s[2] >= 0.0 and s[3] <= 1.0 for s in seen)
    np.testing.assert_allclose(zero, plain, rtol=0, atol=1e-6)
    mean = {}
    for name, zz in (("plain", plain), ("dark", dark)):
        with torch.no_grad():
            mean[name] = float(np.asarray(decode_latents(taef2, zz)).mean())
    assert mean["dark"] < mean["plain"] - 1.0, mean


def test_bf16_refinement_moves_the_latent_like_fp32_and_leaves_the_decoder_as_it_was(taef2, crop):
    # precision="bf16" (autocast, channels-last input): the refined latent is float32 and moves the same way as in
    # float32 (what it changes is mostly shared), the decoder's weights keep their layout, and the decoded crop is
    # at most 0.2 dB further from the original. The two precisions take different paths: with effort 1's detail weight
    # 3e-3 bf16 ends 0.15 dB below float32 on this small crop at 1500 B, and -0.06 .. +0.09 dB from it (mean +0.003)
    # on 4 training photos at 5000 B (results/encoder_training/refine_bf16_detail_train.json)
    from helpers.methods.tc.precision import resolve_precision
    from helpers.metrics.classic import psnr

    if resolve_precision("auto") != "bf16":
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX)")
    z = encode_latents(taef2, crop)
    layout = [p.is_contiguous() for p in taef2.decoder.parameters()]
    out = {}
    for prec in ("fp32", "bf16"):
        qf = _quantizer_for(taef2.fingerprint, 1500)
        zr = refine.refine_latents(taef2, crop, z, 1, qf, precision=prec)
        assert zr.dtype == np.float32
        c, _ = T.encode_latent(zr, taef2.fingerprint, budget=1500)
        img = decode_latents(taef2, T.decode_payload(c.payload, *z.shape, taef2.fingerprint))
        out[prec] = (zr - z, psnr(np.asarray(crop), np.asarray(img)))
    assert [p.is_contiguous() for p in taef2.decoder.parameters()] == layout
    d32, d16 = out["fp32"][0].ravel(), out["bf16"][0].ravel()
    # cosine of the two moves: 0.787 in a CI run with effort 1's detail weight 3e-3 (it passed 0.8 at the former 1e-3),
    # where unrelated moves in 32k dimensions would give about 0
    assert float(d32 @ d16) / float(np.linalg.norm(d32) * np.linalg.norm(d16)) > 0.7
    assert out["bf16"][1] > out["fp32"][1] - 0.2, (out["bf16"][1], out["fp32"][1])
    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
        refine.refine_latents(taef2, crop, z, 1, _quantizer_for(taef2.fingerprint, 1500), precision="fp16")


def test_codec_refines_with_the_efforts_own_detail_weight(taef2, crop):
    # CodecParams.detail None = the effort's weight (refine.DETAIL_BETAS): the same file as naming that weight, another
    # file than the single weight of before (1e-3); what the benchmark's refine label states
    def coded(**kw):
        return encode(crop, taef2, CodecParams(method="tc", policy="none", effort=1, **kw), target_bytes=1500).data

    assert refine.detail_weight(1) == refine.DETAIL_BETAS[1] != 1e-3
    default = coded()
    assert default == coded(detail=refine.detail_weight(1))
    assert default != coded(detail=1e-3)
    assert refine.schedule_label(1).endswith(f" detail {refine.DETAIL_BETAS[1]:g}")
