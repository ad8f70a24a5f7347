import time

import pytest
import torch

from helpers.backends.load import load_backend
from helpers.backends.sd import SD_QUANT_SPAN, load_sd
from helpers.backends.taef2 import load_taef2
from helpers.backends.taef2_spec import TAEF2_QUANT_SPAN
from helpers.backends.torch_base import parameter_count, select_device, weights_fingerprint
from helpers.errors import ModelNotFoundError, SDCError


def test_tiny_sd_loads_through_the_real_code_path(tiny_sd, tiny_sd_dir):
    from diffusers import AutoencoderKL

    assert isinstance(tiny_sd.vae, AutoencoderKL)
    assert tiny_sd.kind == "sd" and tiny_sd.latent_channels == 4 and tiny_sd.downsample == 8
    assert tiny_sd.quant_span == pytest.approx(SD_QUANT_SPAN)
    assert tiny_sd.model_id == "tiny-random-sd"
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    z = tiny_sd.encode(x, torch.Generator().manual_seed(0))
    assert z.shape == (1, 4, 8, 6)
    # fixed seed -> the same posterior sample
    assert torch.equal(z, tiny_sd.encode(x, torch.Generator().manual_seed(0)))
    assert tiny_sd.decode(z).shape == (1, 3, 64, 48)


def test_tiny_sd_denoiser_components(tiny_sd):
    from diffusers import PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    parts = tiny_sd.denoiser()
    assert isinstance(parts["unet"], UNet2DConditionModel)
    assert isinstance(parts["text_encoder"], CLIPTextModel)
    assert isinstance(parts["tokenizer"], CLIPTokenizer)
    assert isinstance(parts["scheduler"], PNDMScheduler)
    ids = parts["tokenizer"]([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids[0, 0].item() == 514 and ids[0, 1].item() == 515  # <|startoftext|> <|endoftext|>


def test_taef2_real_weights(taef2):
    assert taef2.kind == "taef2" and taef2.latent_channels == 32 and taef2.quant_span == TAEF2_QUANT_SPAN
    assert parameter_count(taef2.encoder) == 1338528 and parameter_count(taef2.decoder) == 1338499
    z = taef2.encode(torch.zeros(1, 3, 64, 64))
    assert z.shape == (1, 32, 8, 8)


def test_fingerprint_changes_with_weights(tiny_sd):
    import copy

    dec = copy.deepcopy(tiny_sd.vae.decoder)
    fp = weights_fingerprint(dec)
    assert fp == tiny_sd.fingerprint
    with torch.no_grad():
        next(dec.parameters()).add_(0.01)
    assert weights_fingerprint(dec) != fp


def test_missing_taef2_weights_message(tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        load_taef2(tmp_path)
    msg = str(exc.value)
    assert "taef2_encoder.pth" in msg and str(tmp_path) in msg and "fix" in msg and "\n" not in msg


def test_corrupt_taef2_weights_message(tmp_path):
    (tmp_path / "taef2_encoder.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "taef2_decoder.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotFoundError, match="is not a TAEF2 state dict"):
        load_backend(str(tmp_path))


def test_unknown_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as exc:
        load_sd("nobody/no-such-model")
    assert time.perf_counter() - t0 < 20
    msg = str(exc.value)
    assert "nobody/no-such-model" in msg and "huggingface-cli download" in msg and "taef2" in msg
    assert "\n" not in msg


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a diffusers SD directory"):
        load_backend(str(tmp_path))


def test_incomplete_sd_directory(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="could not load the SD VAE from local directory"):
        load_backend(str(tmp_path))


def test_auto_falls_back_to_taef2_offline(monkeypatch, taef2):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = load_backend("auto", device="cpu")
    assert backend.kind == "taef2" or backend.kind == "sd"  # sd only if SD v1.4 is in the local HF cache
    if backend.kind == "taef2":
        assert backend.fingerprint == taef2.fingerprint


def test_auto_offline_without_sd_in_the_cache_loads_taef2_without_importing_diffusers(tmp_path, taef2):
    # the cheap decision (helpers.backends.resolve.taef2_dir_of) first: importing diffusers to find out that SD is
    # neither cached nor downloadable cost about 5 s of every PyTorch CLI run (--effort) on an offline machine
    import os
    import subprocess
    import sys

    code = (
        "import sys; from helpers.backends.load import load_backend; b = load_backend('auto', device='cpu'); "
        "print(b.kind, 'diffusers' in sys.modules, b.fingerprint)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["taef2", "False", str(taef2.fingerprint)]


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(SDCError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(SDCError, match="unknown device"):
        select_device("tpu-9000")


def test_sd14_configs_instantiate_sd14s_parameter_counts():
    """The full-size stand-in's configurations (helpers.backends.sd14) build SD v1.4's components with the published
    parameter counts; on the meta device, so no memory or time is spent on weights (the slow test builds them)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from helpers.backends import sd14

    cfg = sd14.configs()
    with torch.device("meta"):
        counts = {
            "vae": parameter_count(AutoencoderKL.from_config(cfg["vae"])),
            "unet": parameter_count(UNet2DConditionModel.from_config(cfg["unet"])),
            "text_encoder": parameter_count(CLIPTextModel(CLIPTextConfig(**sd14.text_encoder_kwargs()))),
        }
    assert counts == sd14.PARAMETERS
    assert sd14.config_hash() == sd14.config_hash() and sd14.config_hash(seed=1) != sd14.config_hash()
    assert sd14.SCHEDULER_CONFIG["_class_name"] == "PNDMScheduler" and sd14.SCHEDULER_CONFIG["steps_offset"] == 1
