"""Shared fixtures: real Kodak images and TAEF2 weights from ../shared, a tiny random SD pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
KODAK = SHARED / "data" / "kodak"
TAEF2_DIR = SHARED / "weights" / "taef2"


def need_shared():
    if not (KODAK / "kodim23.png").is_file() or not (TAEF2_DIR / "taef2_encoder.pth").is_file():
        pytest.skip("../shared (Kodak images + TAEF2 weights) is not beside the project root")


@pytest.fixture(scope="session", autouse=True)
def _private_onnx_cache(tmp_path_factory):
    """ONNX graphs exported during the tests go to a session folder, not the user's ~/.cache/sdcomp
    (subprocesses inherit it). Set SDCOMP_TEST_CACHE to reuse a folder across runs."""
    folder = os.environ.get("SDCOMP_TEST_CACHE") or str(tmp_path_factory.mktemp("sdcomp-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDCOMP_CACHE", folder)
        yield Path(folder)


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    need_shared()
    return KODAK


@pytest.fixture(scope="session")
def synthetic_training_images():
    """One 160x160 synthetic picture (gradients and noise) for training-loop tests: never Kodak, crops in seconds."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160]
    noise = rng.integers(0, 40, (160, 160, 3))
    return [np.clip(np.stack([xx, yy, (xx + yy) // 2], -1) + noise, 0, 255).astype(np.uint8)]


@pytest.fixture(scope="session")
def taef2():
    need_shared()
    from helpers.backends.taef2 import load_taef2

    return load_taef2(TAEF2_DIR, device="cpu")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    from helpers.backends.tiny import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir):
    from helpers.backends.load import load_backend

    return load_backend(str(tiny_sd_dir), device="cpu")


@pytest.fixture
def offline_torch_home(monkeypatch, tmp_path) -> Path:
    """An empty TORCH_HOME (tmp_path) in which any weight download fails the test, downloads not allowed."""
    import torch

    from helpers.metrics import deep

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(deep.DOWNLOAD_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return tmp_path
