"""A full-size Stable Diffusion v1.4 stand-in: SD v1.4's published architecture with seeded RANDOM weights.

    python -m helpers.backends.sd14              # build once (or reuse) and print the folder
    python -m helpers.backends.sd14 --dir DIR    # build into / reuse DIR

The weights of ``CompVis/stable-diffusion-v1-4`` cannot be downloaded on this project's machines, so
everything SD-specific used to run only on tiny random models (:func:`helpers.backends.tiny.make_tiny_sd`). This module
writes the checkpoint's own configurations (below, copied from published ``config.json`` files, sources cited
per block), instantiates the real diffusers / transformers classes from them with seeded random weights
(about 1.07 billion parameters), and saves them with ``save_pretrained`` into a diffusers folder that
:func:`helpers.backends.load.load_backend` reads exactly like a local copy of the real checkpoint (``--model DIR``).
What runs on it measures **cost and plumbing only**: time, memory, shapes, file sizes, the denoise schedule.
The pictures are noise.

Built once per configuration: the folder name carries a hash of the configurations, seed, storage dtype and
builder version (:func:`config_hash`); a complete folder (``standin.json`` written last, after a rename from a
temporary folder) is reused. Weights are stored as **fp32 safetensors** (4.3 GB on disk), like the real
checkpoint's main branch: loading them in fp32 on a CPU maps the files in place (safetensors + mmap), so
"load" is nearly free and the pages are read on first use, and nothing is copied. ``--dtype float16`` halves
the disk (2.1 GB; the loaders upcast with ``torch_dtype``, like the checkpoint's ``fp16`` variant) but was
measured to cost more memory on a CPU: loading the fp16 UNet into fp32 peaked at 6.0 GB RSS against 4.4 GB for
the whole fp32 decode (VAE + UNet + text encoder, one UNet step). Never commit the folder.

**Tokenizer.** CLIP's BPE vocabulary (49,408 tokens, ``openai/clip-vit-large-patch14``) cannot be downloaded
here. As the tiny maker does, the tokenizer is written from CLIP's own rules: its first 512 tokens are the 256
byte characters and their ``</w>`` forms (CLIP's vocabulary starts exactly so, ids 0..511), no merges, and
the special tokens at CLIP's ids ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407 (also the pad token,
as in SD v1.4's ``tokenizer_config.json``). Every id is below ``vocab_size`` = 49408 of the text encoder's
embedding. The empty prompt, the only prompt the codec's denoiser uses, tokenizes to the same 77 ids as with
the real tokenizer (49406, then 49407 x 76); other prompts tokenize to bytes, not to CLIP's words.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

#: What the model folder's ``model_index.json`` records as ``_name_or_path`` (= the model id in .sdc headers).
from .resolve import STANDIN_MODEL_ID, cache_root

#: Bumped when the builder writes something different for the same configurations.
BUILDER_VERSION = 1
SEED = 0

# ------------------------------------------------------------------------------------------------------------
# The published configurations (facts; do not edit). Sources:
#
# [V] github.com/wswplay/stable-diffusion-v1-4, a vendored copy of the Hugging Face repository
#     CompVis/stable-diffusion-v1-4: text_encoder/config.json, vae/config.json, unet/config.json at commit
#     295cccdedbd5f87458186972858dc85c7e70c10a; scheduler/scheduler_config.json and
#     tokenizer/tokenizer_config.json at commit 0050854a4556632fe275ed384d277830d86b3bb6. Its vae/ and unet/
#     config.json are the Flax ones ("_class_name": "FlaxAutoencoderKL" / "FlaxUNet2DConditionModel",
#     "_diffusers_version": "0.5.0.dev0"); the architecture keys below are copied from them verbatim.
# [U] The PyTorch unet/config.json ("_class_name": "UNet2DConditionModel", "_diffusers_version": "0.2.2"),
#     quoted in full in a public Tune-A-Video-style UNet3DConditionModel.from_pretrained_2d (a comment "the
#     content of the config file", found with the project's code search): the same architecture keys as [V]
#     plus act_fn, center_input_sample, downsample_padding, flip_sin_to_cos, mid_block_scale_factor, norm_eps,
#     norm_num_groups (all equal to diffusers' defaults). Cross-checked: open-mmlab/mmagic
#     configs/stable_diffusion/stable-diffusion_ddim_denoisingunet.py (base 320, mult 1/2/4/4, cross-attention
#     768, 8 heads, 2 layers per block; VAE 128/256/512/512, 4 latent channels, 32 groups).
# [P] runwayml/stable-diffusion-v1-5's PyTorch vae/config.json (vendored by github.com/HDRJ-One/
#     runwayml-stable-diffusion-v1-5 @ c448ce0770e757aaeeed8369bd3d510b82a0d541): the same VAE architecture as
#     [V] (v1.5 reuses v1.4's autoencoder) with "norm_num_groups": 32 and "scaling_factor": 0.18215 written
#     out; 0.18215 is also this project's SD_SCALING.
# ------------------------------------------------------------------------------------------------------------

#: vae/config.json: architecture keys from [V] (Flax class name replaced by the PyTorch class; sample_size 512
#: as in [V] and [P]); norm_num_groups and scaling_factor as in [P].
VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
}

#: unet/config.json as quoted in [U] (architecture keys identical to [V]).
UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: text_encoder/config.json from [V], verbatim (openai/clip-vit-large-patch14's text tower, CLIP ViT-L/14).
#: bos/eos/pad ids 0/2/1 are what the published file says (transformers then pools at the argmax id, the
#: legacy rule); the tokenizer's real special ids are 49406/49407.
TEXT_ENCODER_CONFIG = {
    "_name_or_path": "openai/clip-vit-large-patch14",
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "torch_dtype": "float32",
    "transformers_version": "4.23.1",
    "vocab_size": 49408,
}

#: scheduler/scheduler_config.json from [V], verbatim.
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.4.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

#: tokenizer/tokenizer_config.json from [V]: the settings that matter (special tokens, lower case, 77).
TOKENIZER_SETTINGS = {
    "model_max_length": 77,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "do_lower_case": True,
}
#: CLIP's special token ids (its vocabulary: 256 bytes + 256 ``</w>`` bytes + 48,894 merges, then these two).
BOS_ID, EOS_ID = 49406, 49407

#: Parameter counts of the real checkpoint's components (what these configurations instantiate; SD v1's model
#: card: "an 860M UNet and CLIP ViT-L/14 text encoder"). Checked by the tests against the built folder.
PARAMETERS = {"vae": 83_653_863, "unet": 859_520_964, "text_encoder": 123_060_480}


def configs() -> dict:
    """The four configurations, deep copies (the builder's input; :func:`config_hash` hashes them)."""
    return copy.deepcopy(
        {
            "vae": VAE_CONFIG,
            "unet": UNET_CONFIG,
            "text_encoder": TEXT_ENCODER_CONFIG,
            "scheduler": SCHEDULER_CONFIG,
            "tokenizer": TOKENIZER_SETTINGS,
        }
    )


def text_encoder_kwargs() -> dict:
    """``CLIPTextConfig`` keyword arguments from :data:`TEXT_ENCODER_CONFIG` (its bookkeeping keys dropped)."""
    return {
        k: v
        for k, v in copy.deepcopy(TEXT_ENCODER_CONFIG).items()
        if k not in ("_name_or_path", "architectures", "torch_dtype", "transformers_version")
    }


def config_hash(seed: int = SEED, dtype: str = "float32") -> str:
    """12 hex digits of SHA-256 over the configurations, seed, storage dtype and builder version."""
    blob = json.dumps(
        {"configs": configs(), "seed": seed, "dtype": dtype, "builder": BUILDER_VERSION}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_dir(seed: int = SEED, dtype: str = "float32") -> Path:
    """``$SDCOMP_SD14_STANDIN`` when set, else ``<cache>/sd14_standin/<config hash>`` (cache: ``$SDCOMP_CACHE``,
    ``$XDG_CACHE_HOME/sdcomp`` or ``~/.cache/sdcomp``)."""
    env = os.environ.get("SDCOMP_SD14_STANDIN")
    if env:
        return Path(env).expanduser()
    return cache_root() / "sd14_standin" / config_hash(seed, dtype)


def is_complete(directory: str | Path, seed: int = SEED, dtype: str = "float32") -> bool:
    marker = Path(directory) / "standin.json"
    try:
        return json.loads(marker.read_text()).get("config_hash") == config_hash(seed, dtype)
    except (OSError, ValueError):
        return False


def _write_tokenizer(tok_dir: Path) -> None:
    from transformers import CLIPTokenizer

    from .tiny import byte_unicode

    tok_dir.mkdir(parents=True, exist_ok=True)
    chars = byte_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({TOKENIZER_SETTINGS["bos_token"]: BOS_ID, TOKENIZER_SETTINGS["eos_token"]: EOS_ID})
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    s = TOKENIZER_SETTINGS
    CLIPTokenizer(
        str(tok_dir / "vocab.json"),
        str(tok_dir / "merges.txt"),
        model_max_length=s["model_max_length"],
        bos_token=s["bos_token"],
        eos_token=s["eos_token"],
        unk_token=s["unk_token"],
        pad_token=s["pad_token"],
    ).save_pretrained(tok_dir)


def build(
    directory: str | Path | None = None,
    seed: int = SEED,
    dtype: str = "float32",
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build the stand-in into ``directory`` (default :func:`default_dir`) or reuse a complete one.

    One component at a time (instantiate in fp32 with the seed, cast in place to ``dtype``, ``save_pretrained``,
    free), so the peak is about one fp32 UNet (3.4 GB; 4.0 GB RSS measured, 17-25 s on 2 cores). Written into a temporary folder beside the target and
    renamed into place: an interrupted build leaves nothing that looks complete."""
    import gc

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .sd import write_model_index

    target = Path(directory) if directory is not None else default_dir(seed, dtype)
    if is_complete(target, seed, dtype) and not force:
        return target
    if target.exists() and not force and any(target.iterdir()) and not (target / "standin.json").exists():
        shutil.rmtree(target)  # an incomplete build (no marker): start again
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch_dtype = getattr(torch, dtype)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    cfg = configs()
    counts, t0 = {}, time.perf_counter()
    try:
        for name in ("vae", "unet", "text_encoder"):
            t = time.perf_counter()
            torch.manual_seed(seed)
            with torch.no_grad():
                if name == "vae":
                    model = AutoencoderKL.from_config(cfg["vae"])
                elif name == "unet":
                    model = UNet2DConditionModel.from_config(cfg["unet"])
                else:
                    model = CLIPTextModel(CLIPTextConfig(**text_encoder_kwargs()))
                counts[name] = sum(p.numel() for p in model.parameters())
                model.to(torch_dtype)
                model.save_pretrained(tmp / name, safe_serialization=True)
            del model
            gc.collect()
            say(
                f"sd14 stand-in: {name} {counts[name] / 1e6:.2f} M parameters, random (seed {seed}), "
                f"saved as {dtype} in {time.perf_counter() - t:.1f} s"
            )
        _write_tokenizer(tmp / "tokenizer")
        PNDMScheduler.from_config(cfg["scheduler"]).save_pretrained(tmp / "scheduler")
        write_model_index(tmp, STANDIN_MODEL_ID)
        (tmp / "standin.json").write_text(
            json.dumps(
                {
                    "config_hash": config_hash(seed, dtype),
                    "seed": seed,
                    "dtype": dtype,
                    "builder": BUILDER_VERSION,
                    "parameters": counts,
                    "random_weights": True,
                    "build_seconds": round(time.perf_counter() - t0, 1),
                    "note": "SD v1.4 architecture with RANDOM weights: measures cost and plumbing, pictures are noise",
                },
                indent=2,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"sd14 stand-in: built {target} in {time.perf_counter() - t0:.1f} s")
    return target


def ensure(directory: str | Path | None = None) -> Path:
    """The stand-in folder, built on first use."""
    return build(directory)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.backends.sd14", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dir", default=None, help="target folder (default $SDCOMP_SD14_STANDIN or <cache>/sd14_standin/<config hash>)"
    )
    ap.add_argument("--force", action="store_true", help="rebuild even when a complete folder exists")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16"],
        help="storage dtype (float16 halves the disk but costs a 1.7 GB transient when loaded in fp32)",
    )
    args = ap.parse_args(argv)
    print(build(args.dir, dtype=args.dtype, force=args.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
