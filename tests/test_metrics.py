"""Tests for helpers.metrics against independent references on real Kodak images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from helpers import metrics as M
from helpers.baselines import decode_bytes, encode_jpeg
from helpers.errors import ImageInputError, UnavailableError
from helpers.metrics import deep

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def _kodak(name: str) -> Image.Image:
    path = KODAK / f"{name}.png"
    if not path.is_file():
        pytest.skip(f"Kodak test image {path} is absent (expected ../shared/data/kodak beside the project)")
    with Image.open(path) as im:
        return im.convert("RGB")


def _center_crop(img: Image.Image, size: int = 512) -> Image.Image:
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _jpeg(img: Image.Image, quality: int) -> np.ndarray:
    return np.asarray(decode_bytes(encode_jpeg(img, quality)))


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, reference, JPEG-distorted) on 768x512, 512x768 and 512x512 Kodak images."""
    out = []
    landscape, portrait = _kodak("kodim23"), _kodak("kodim04")
    for label, img in (
        ("kodim23 768x512", landscape),
        ("kodim04 512x768", portrait),
        ("kodim23 512x512", _center_crop(landscape)),
    ):
        for q in (8, 60):
            out.append((f"{label} q{q}", np.asarray(img), _jpeg(img, q)))
    return out


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=2, data_range=255
        )
    )


def test_psnr_matches_formula_and_skimage(pairs):
    for label, a, b in pairs:
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        expected = 10 * np.log10(255.0**2 / mse)
        got = M.psnr(a, b)
        assert got == pytest.approx(expected, abs=1e-9), label
        assert got == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9), label


def test_ssim_matches_skimage(pairs):
    for label, a, b in pairs:
        assert abs(M.ssim(a, b) - _skimage_ssim(a, b)) < 1e-4, label


def test_ms_ssim_matches_pytorch_msssim(pairs):
    pm = pytest.importorskip("pytorch_msssim", reason="independent MS-SSIM reference (pip install pytorch-msssim)")
    for label, a, b in pairs:
        ta = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float()
        tb = torch.from_numpy(b.copy()).permute(2, 0, 1)[None].float()
        ref = float(pm.ms_ssim(ta, tb, data_range=255, size_average=True))
        assert abs(M.ms_ssim(a, b) - ref) < 1e-3, label


def test_metrics_order_with_distortion(pairs):
    # Within one image, lower JPEG quality must score worse on every metric.
    by_image: dict[str, list[tuple[float, float, float]]] = {}
    for label, a, b in pairs:
        by_image.setdefault(label.rsplit(" ", 1)[0], []).append((M.psnr(a, b), M.ssim(a, b), M.ms_ssim(a, b)))
    for label, scores in by_image.items():
        for worse, better in zip(scores, scores[1:]):
            assert all(w < g for w, g in zip(worse, better)), label
        assert all(0 < v < 1 for s in scores for v in s[1:]), label


def test_identical_images():
    img = _center_crop(_kodak("kodim23"))
    assert M.psnr(img, img) == float("inf")
    assert M.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert M.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_pil_and_array_inputs_agree():
    img = _center_crop(_kodak("kodim23"))
    dist = decode_bytes(encode_jpeg(img, 20))
    a, b = np.asarray(img), np.asarray(dist)
    assert M.psnr(img, dist) == M.psnr(a, b)
    assert M.ssim(img, dist) == M.ssim(a, b)
    assert M.ms_ssim(img, dist) == M.ms_ssim(a, b)
    # Non-RGB PIL modes are converted.
    assert M.psnr(img.convert("RGBA"), dist) == M.psnr(a, b)


def _assert_one_line(exc: BaseException) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg


def test_shape_mismatch_and_bad_input():
    full = _kodak("kodim23")
    crop = _center_crop(full)
    for fn in (M.psnr, M.ssim, M.ms_ssim):
        with pytest.raises(ImageInputError, match="sizes differ") as info:
            fn(full, crop)
        _assert_one_line(info.value)
    with pytest.raises(ImageInputError) as info:
        M.psnr(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))
    _assert_one_line(info.value)
    with pytest.raises(ImageInputError):
        M.ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ImageInputError, match="176") as info:
        small = np.asarray(crop)[:128, :128]
        M.ms_ssim(small, small)
    _assert_one_line(info.value)


def test_bpp():
    assert M.bpp(5000, 512, 512) == pytest.approx(8 * 5000 / (512 * 512))
    assert M.bpp(0, 768, 512) == 0.0
    with pytest.raises(ImageInputError):
        M.bpp(10, 0, 512)


def test_all_metrics_keys_and_values():
    img = _center_crop(_kodak("kodim23"))
    data = encode_jpeg(img, 30)
    dist = decode_bytes(data)
    out = M.all_metrics(img, dist, nbytes=len(data))
    assert set(out) == {"psnr", "ssim", "ms_ssim", "lpips", "bytes", "bpp"}
    assert out["psnr"] == M.psnr(img, dist)
    assert out["ssim"] == M.ssim(img, dist)
    assert out["ms_ssim"] == M.ms_ssim(img, dist)
    assert out["bytes"] == len(data)
    assert out["bpp"] == pytest.approx(8 * len(data) / (512 * 512))
    available, _ = M.lpips_status()
    assert (out["lpips"] is None) == (not available)
    assert set(M.all_metrics(img, dist)) == {"psnr", "ssim", "ms_ssim", "lpips"}


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------


def test_lpips_real_backbone_or_clear_unavailability():
    img = _center_crop(_kodak("kodim23"))
    mild, strong = _jpeg(img, 60), _jpeg(img, 5)
    available, reason = M.lpips_status()
    assert isinstance(reason, str) and reason and "\n" not in reason
    if available:
        assert M.lpips_distance(img, img) == pytest.approx(0.0, abs=1e-6)
        d_mild, d_strong = M.lpips_distance(img, mild), M.lpips_distance(img, strong)
        assert 0 < d_mild < d_strong < 1
    else:
        assert "unavailable" in reason
        with pytest.raises(UnavailableError) as info:
            M.lpips_distance(img, mild)
        _assert_one_line(info.value)
        with pytest.raises(UnavailableError):
            M.LPIPSMetric()


@pytest.fixture
def no_download(monkeypatch, offline_torch_home):
    """An empty torch hub cache in which any download attempt fails the test."""
    monkeypatch.setattr(deep, "_MODELS", {})
    checkpoints = offline_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_lpips_missing_checkpoint_is_unavailable_without_download(no_download):
    available, reason = M.lpips_status()
    assert not available
    assert "alexnet-owt-7be5be79.pth" in reason and str(no_download) in reason and "\n" not in reason
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(UnavailableError):
        M.lpips_distance(img, img)
    assert M.all_metrics(_center_crop(_kodak("kodim23")), _center_crop(_kodak("kodim23")))["lpips"] is None


def test_lpips_corrupt_checkpoint_is_unavailable(no_download):
    (no_download / "alexnet-owt-7be5be79.pth").write_bytes(b"truncated download")
    available, reason = M.lpips_status()
    assert not available and "corrupt" in reason and "\n" not in reason


def test_lpips_loads_backbone_from_local_checkpoint(no_download, monkeypatch):
    """Plumbing: a checkpoint in the hub cache is loaded strictly (weights come from the file).

    The file holds non-ImageNet weights, so the checksum check is bypassed here; the values
    it produces are not meaningful LPIPS scores.
    """
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    state = {f"features.{k}": v for k, v in features.items()}
    torch.save(state, no_download / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(deep, "_verify_checkpoint", lambda path: None)

    available, reason = M.lpips_status()
    assert available, reason
    metric = M.LPIPSMetric()
    assert torch.equal(getattr(metric.model.net.slice1, "0").weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").weight, state["features.10.weight"])
    img = _center_crop(_kodak("kodim23"), 256)
    assert metric(img, img) == pytest.approx(0.0, abs=1e-6)
    assert metric(img, _jpeg(img, 5)) > 0
    assert M.LPIPSMetric().model is metric.model  # loaded once

    # A checkpoint for another network is refused, never partially loaded.
    monkeypatch.setattr(deep, "_MODELS", {})
    torch.save({"features.0.weight": torch.zeros(3)}, no_download / "alexnet-owt-7be5be79.pth")
    available, reason = M.lpips_status()
    assert not available and "does not match" in reason


def test_detail_change_sign_and_summary():
    from PIL import ImageFilter

    from helpers.metrics import detail_change, detail_summary

    rng = np.random.default_rng(5)
    base = np.full((64, 64, 3), 120, np.uint8)
    base[:, :32] = (rng.random((64, 32, 3)) * 255).astype(np.uint8)  # textured left half, flat right half
    img = Image.fromarray(base)
    blurred = img.filter(ImageFilter.GaussianBlur(2))
    noisy = Image.fromarray(np.clip(base.astype(int) + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8))
    d_blur = detail_change(img, blurred, window=16, border=0)
    d_noise = detail_change(img, noisy, window=16, border=0)
    assert d_blur.shape == (4, 4)
    assert (d_blur[:, :2] < -1).all()  # texture blurred away: lost
    assert (d_noise[:, 2:] > 1).all()  # noise on the flat half: invented
    np.testing.assert_allclose(detail_change(img, img, border=0), 0.0)
    s = detail_summary(img, noisy, border=0)
    assert s["invented"] >= 0.5 and s["lost"] == 0.0
    np.testing.assert_allclose(d_blur[:, 3], 0.0)  # flat, away from the texture edge: unchanged
    # blur also softens the texture's edge (block column 2): 12 of 16 blocks lost detail
    assert detail_summary(img, blurred, border=0)["lost"] == pytest.approx(0.75)
    # by default the outer ring of blocks is not measured: the 2x2 interior (columns 1 and 2) all lost detail
    d = detail_change(img, blurred, window=16)
    assert np.isnan(d[0]).all() and np.isnan(d[:, -1]).all() and np.isfinite(d[1:3, 1:3]).all()
    np.testing.assert_array_equal(d[1:3, 1:3], d_blur[1:3, 1:3])
    assert detail_summary(img, blurred) == {
        "invented": 0.0,
        "lost": 1.0,
        "mean_log2": pytest.approx(float(d_blur[1:3, 1:3].mean())),
    }


def test_detail_metrics_ignore_the_image_border():
    """A decoder that renders the first pixel row darker (as TAEF2 does with Kodak's dark top row) "invents"
    Laplacian energy in the top blocks, a one-pixel line whose crop shows flat sky: not counted by default."""
    from helpers.errors import SDCError
    from helpers.metrics import detail_change, detail_summary, interior_blocks

    rng = np.random.default_rng(6)
    ref = np.clip(120 + rng.normal(0, 3, (96, 128, 3)), 0, 255).astype(np.uint8)  # faint texture everywhere
    test = ref.copy()
    test[0] = 20  # dark first row
    raw = detail_summary(ref, test, border=0)
    assert raw["invented"] == pytest.approx(8 / 48)  # the 8 top blocks of the 6x8 map
    assert detail_summary(ref, test) == {"invented": 0.0, "lost": 0.0, "mean_log2": 0.0}
    assert np.isnan(detail_change(ref, test)).sum() == 48 - 4 * 6  # the ring of a 6x8 map
    assert interior_blocks((2, 5)).all()  # too small to drop a ring: every block measured
    assert interior_blocks((3, 3)).sum() == 1 and interior_blocks((5, 5), border=2).sum() == 1
    with pytest.raises(SDCError, match="border must be >= 0"):
        interior_blocks((4, 4), border=-1)
