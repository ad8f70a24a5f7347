"""The differentiable detail term (helpers.methods.tc.detail_loss) against the benchmark's detail retention."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers.images import apply_policy, load_image  # noqa: E402
from helpers.methods.tc.detail_loss import detail_loss, hf_map  # noqa: E402
from helpers.metrics.retention import gaussian_blur, hf_energy  # noqa: E402


@pytest.fixture(scope="module")
def rgb(kodak_dir):
    return np.asarray(apply_policy(load_image(kodak_dir / "kodim05.png"), "crop512")[0])[:256, :256]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, np.float64)).permute(2, 0, 1)[None] / 255


def test_hf_energy_matches_the_benchmark_measure(rgb):
    # torch mean square of luma - blur(luma) vs the numpy variance of the benchmark (scipy-checked): the two differ
    # only by the mean of the residual and the border rule (torch reflects without the edge pixel)
    assert float(hf_map(_t(rgb), None)[0]) * 255**2 == pytest.approx(hf_energy(rgb), rel=0.01)
    tiles = hf_map(_t(rgb), 32)
    assert tiles.shape == (1, 8, 8)
    assert float(tiles.mean()) == pytest.approx(float(hf_map(_t(rgb), None)[0]), rel=1e-6)


def test_detail_loss_is_two_sided_and_local(rgb):
    x = _t(rgb)
    blurred = _t(np.stack([gaussian_blur(rgb[..., c].astype(np.float64), 1.5) for c in range(3)], -1))
    noisy = _t(np.clip(rgb + np.random.default_rng(0).normal(0, 12, rgb.shape), 0, 255))
    assert float(detail_loss(x, x)) == 0.0
    assert float(detail_loss(x, blurred)) > 0.5  # detail lost
    assert float(detail_loss(x, noisy)) > 0.05  # texture invented
    # left half blurred, right half noisier: the whole-image energy can match while every tile is wrong
    half = torch.cat([blurred[..., :128], noisy[..., 128:]], -1)
    assert float(detail_loss(x, half, 32)) > 2 * float(detail_loss(x, half, None))


def test_detail_loss_has_gradients(rgb):
    x = _t(rgb).float()
    xh = (x * 0.9 + 0.05).requires_grad_(True)
    detail_loss(x, xh).backward()
    assert xh.grad is not None and float(xh.grad.abs().sum()) > 0
