# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Loading the weights
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/01_load_weights.ipynb)
#
# Stable Diffusion v1.4 is four networks: the **VAE** (encoder + decoder, the part that turns pixels into
# latents and back, i.e. our codec), the **UNet** denoiser, the **CLIP text encoder** and a **scheduler**
# (no weights). The codec needs only the VAE; the UNet, CLIP and scheduler are loaded on demand by
# `backend.denoiser()` for the optional denoising step (notebook 04).
#
# `MODEL` may be a Hugging Face hub id (default `CompVis/stable-diffusion-v1-4`), another SD1.x id or a
# local diffusers folder, or `taef2`: a real pretrained *tiny* autoencoder (32 latent channels, ~1.3 M
# parameters per half) that runs offline. When the hub is unreachable the notebook says so and falls
# back to TAEF2. This notebook reports device, dtype, parameter counts, load time and memory.

# %%
# Setup. On Colab: clone and install this repository (torch is preinstalled there) and work from its notebooks/
# folder; elsewhere: use this checkout. helpers.notebook.setup then installs the other dependencies on Colab,
# fetches the Kodak images there, and prints the versions.
import os
import sys
from pathlib import Path

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB and Path.cwd().name != "notebooks":  # first run on Colab; re-running this cell is harmless
    import subprocess

    if not Path("sdcomp-notebooks").is_dir():
        subprocess.run(["git", "clone", "-q", "https://github.com/sdcomp/sdcomp-notebooks"], check=True)
    os.chdir("sdcomp-notebooks")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "."], check=True)
    os.chdir("notebooks")
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "helpers" / "__init__.py").is_file()), None)
if ROOT is not None and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's helpers (the notebooks run from notebooks/)
from helpers.notebook import setup

setup(IN_COLAB)

# %% tags=["parameters"]
# Parameters (papermill: tagged `parameters`). Every default can be overridden by an environment variable.
MODEL = os.environ.get("SDCOMP_MODEL", "CompVis/stable-diffusion-v1-4")  # hub id, SD1.x folder, "taef2" or "auto"
FALLBACK_MODEL = os.environ.get("SDCOMP_FALLBACK_MODEL", "taef2")  # used when MODEL cannot be loaded (offline)
DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps
LOAD_DENOISER = os.environ.get("SDCOMP_LOAD_DENOISER", "1") not in ("0", "false", "no")  # also UNet + CLIP + scheduler
SHOW_TAEF2 = True  # also load the offline TAEF2 autoencoder for comparison

# %% [markdown]
# ## Device and dtype
# GPU: fp16 weights; CPU: fp32 (CPU fp16 convolutions are slow and less accurate).

# %%
import platform

import torch
from IPython.display import Markdown, display

from helpers.backends.torch_base import default_dtype, memory_usage, parameter_count, select_device

device = select_device(DEVICE)
print(f"torch {torch.__version__} on {platform.platform()}")
print(f"device: {device}, dtype for SD: {default_dtype(device)}")
if device.type == "cuda":
    print(f"GPU: {torch.cuda.get_device_name(device)}, "
          f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB")


rows, loads = [], []  # parameter counts and load steps, summarised at the end
loads.append({"step": "start", "seconds": 0.0, **memory_usage(device)})
print("before loading:", {k: round(v) for k, v in memory_usage(device).items()})

# %% [markdown]
# ## The VAE
# `load_backend` looks in the local Hugging Face cache first and only then tries the hub, so an offline
# machine fails in seconds with a one-line reason instead of minutes of retries.

# %%
from helpers.errors import SDCError
from helpers.notebook import load_model

backend = load_model(MODEL, FALLBACK_MODEL, DEVICE)  # prints what was loaded, and why if it fell back

# %%
loads.append({"step": f"{backend.model_id}: VAE", "seconds": backend.load_seconds, **memory_usage(device)})
print("after loading:", {k: round(v) for k, v in memory_usage(device).items()})
for name, module in backend.components().items():
    rows.append({"model": backend.model_id, "component": name, "parameters": parameter_count(module),
                 "dtype": str(backend.dtype).replace("torch.", ""), "device": str(backend.device)})
    print(f"{name:14s} {parameter_count(module) / 1e6:8.2f} M parameters")
if backend.random_weights:
    print("\nNOTE: RANDOM SD weights (the tiny CI pipeline or the full-size stand-in of helpers.backends.sd14): "
          "real classes and loading code, meaningless weights.")

# %% [markdown]
# ## UNet, CLIP text encoder and scheduler
# Loaded once, on first use, by `backend.denoiser()` from the same checkpoint (same `MODEL`).
# SD v1.4's UNet has about 860 M parameters and its CLIP text encoder about 123 M; the VAE about 84 M.

# %%
if backend.has_unet and LOAD_DENOISER:
    den = backend.denoiser()
    for name in ("unet", "text_encoder"):
        n = parameter_count(den[name])
        rows.append({"model": backend.model_id, "component": name, "parameters": n,
                     "dtype": str(den[name].dtype).replace("torch.", ""), "device": str(den[name].device)})
        print(f"{name:14s} {n / 1e6:8.2f} M parameters")
    sched = den["scheduler"]
    print(f"scheduler: {type(sched).__name__} ({sched.config.num_train_timesteps} training steps, "
          f"{sched.config.beta_schedule}); prompts of up to "
          f"{den['text_encoder'].config.max_position_embeddings} tokens")
    loads.append({"step": f"{backend.model_id}: UNet + CLIP + scheduler", "seconds": den["load_seconds"],
                  **memory_usage(device)})
    print(f"UNet + CLIP + scheduler loaded in {den['load_seconds']:.1f} s")
    if device.type == "cpu":
        print("(on a CPU, fp32 safetensors are memory-mapped: the RSS above grows by the weights' size, 3.9 GB for "
              "SD v1.4's UNet + CLIP, when they are first used, not here)")
else:
    print(f"{backend.describe()} has no UNet/CLIP: it is an autoencoder only (or LOAD_DENOISER is off). "
          "Denoising (notebook 04) needs an SD1.x checkpoint.")

# %% [markdown]
# ## TAEF2, the offline alternative
# A tiny autoencoder for the FLUX.2 latent space (TAESD family, MIT licence). Its weights live in
# `../shared/weights/taef2` here (or `$SDCOMP_TAEF2_DIR`); it has 32 latent channels instead of SD's 4,
# which changes the byte budget of every later step.

# %%
from helpers.backends.taef2 import load_taef2

if SHOW_TAEF2 and backend.kind != "taef2":
    try:
        taef2 = load_taef2(device=device)
        for name, module in taef2.components().items():
            rows.append({"model": "taef2", "component": name, "parameters": parameter_count(module),
                         "dtype": str(taef2.dtype).replace("torch.", ""), "device": str(taef2.device)})
        loads.append({"step": "taef2: encoder + decoder", "seconds": taef2.load_seconds, **memory_usage(device)})
        print(f"{taef2.describe()} loaded in {taef2.load_seconds:.2f} s")
    except SDCError as exc:
        print(f"TAEF2 not available: {exc}")
elif backend.kind == "taef2":
    print("the main model already is TAEF2")

# %% [markdown]
# ## Summary

# %%
from helpers.bench.compare import markdown_table

for r in rows:
    r["millions"] = r["parameters"] / 1e6
display(Markdown(markdown_table(rows, columns=("model", "component", "parameters", "millions", "dtype", "device"))))
display(Markdown("Memory after each load step (MiB; RSS = the whole Python process, CUDA = tensors on the GPU):\n\n"
                 + markdown_table(loads, columns=("step", "seconds", *[k for k in loads[0] if k.endswith("MiB")]))))
