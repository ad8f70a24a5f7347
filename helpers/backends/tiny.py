"""Tiny random Stable Diffusion 1.x pipelines: the real diffusers / transformers classes with tiny channel
counts and random weights, saved with ``save_pretrained`` and loaded back like any SD checkpoint.

Tests and CI build one (``tests/conftest.py``), and notebook 04 builds one at run time when no SD checkpoint
can be loaded (offline), announcing loudly that its pictures mean nothing. :func:`byte_unicode` is also the
tokenizer alphabet of the full-size stand-in (:mod:`helpers.backends.sd14`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .resolve import TINY_MODEL_ID


def byte_unicode() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE uses for raw bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tiny_sd(directory: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised SD1.x-architecture pipeline folder (VAE, UNet, CLIP, PNDM).

    Tiny channel counts so it runs in seconds on a CPU, but the real diffusers/transformers classes,
    saved with ``save_pretrained`` and read back by :func:`helpers.backends.load.load_backend` like any SD checkpoint.
    The VAE keeps SD's 8x downsampling and 4 latent channels.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .sd import write_model_index

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64,
    )
    vae.save_pretrained(directory / "vae")
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    unet.save_pretrained(directory / "unet")
    te = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=600,
            max_position_embeddings=77,
            bos_token_id=514,
            eos_token_id=515,
            pad_token_id=515,
        )
    )
    te.save_pretrained(directory / "text_encoder")
    tok_dir = directory / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    chars = byte_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 514, "<|endoftext|>": 515})
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77).save_pretrained(
        tok_dir
    )
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    ).save_pretrained(directory / "scheduler")
    write_model_index(directory, TINY_MODEL_ID)
    return directory
