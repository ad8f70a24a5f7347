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
# # 04 · Denoising the dithered latents with the UNet
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/04_unet_denoising.ipynb)
#
# The 2022 notebook treated palette + dithering noise like the last steps of a diffusion trajectory:
# it ran the dithered latents (scaled by 0.18215) through the final few steps of SD's own scheduler with
# the **empty prompt** and no guidance, then decoded. Here: a strength/steps sweep, before/after
# pictures and difference maps.
#
# This needs SD's UNet. TAEF2 has none: if `MODEL` is TAEF2 (or SD cannot be loaded), the notebook
# explains and switches to an SD1.x checkpoint, and when none is available (offline) to a **tiny random
# SD pipeline** built on the spot, which exercises the real code path but produces meaningless pictures.

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
DATA_DIR = os.environ.get("SDCOMP_DATA", "../../shared/data/kodak")  # folder of test images (Kodak: kodim01..24)
IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim23").split(",")  # the first one is used here
POLICY = "crop512"
COLORS = 256  # the 2022 notebook: libimagequant, 256 colours, full dithering
DITHER = 1.0
SWEEP = [(66, 0.02), (66, 0.04), (66, 0.08), (66, 0.15), (33, 0.04), (100, 0.04)]  # (steps, strength)
DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps
SMOKE = os.environ.get("SDCOMP_SMOKE", "0").lower() in ("1", "true", "yes")  # CI: fewer images and sweeps

# %%
if SMOKE:
    SWEEP = [(66, 0.04), (20, 0.15)]

# %% [markdown]
# ## A model with a UNet

# %%
import tempfile

from helpers.backends.load import load_backend
from helpers.backends.resolve import DEFAULT_SD_MODEL
from helpers.backends.tiny import make_tiny_sd
from helpers.errors import SDCError

backend = None
for spec in dict.fromkeys([MODEL, DEFAULT_SD_MODEL]):  # MODEL first, then SD v1.4
    try:
        candidate = load_backend(spec, device=DEVICE)
    except SDCError as exc:
        print(f"{spec!r} cannot be loaded here: {exc}")
        continue
    if candidate.has_unet:
        backend = candidate
        break
    print(f"{candidate.describe()} is an autoencoder without a UNet: denoising needs an SD1.x checkpoint.")
if backend is None:
    tiny_dir = make_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-random-sd")
    backend = load_backend(str(tiny_dir), device=DEVICE)
    print("No SD checkpoint available: using a tiny RANDOM SD pipeline (same classes, same loading code).")
RANDOM_WEIGHTS = backend.random_weights
if RANDOM_WEIGHTS:
    print("\n" + "!" * 100 + "\n!!! WARNING: RANDOM WEIGHTS. This UNet and VAE are untrained: every picture and number below"
          " is MEANINGLESS.\n!!! It only shows that the code runs. Use SD v1.4 (online/Colab) for real results.\n"
          + "!" * 100)
print(f"{backend.describe()}, loaded in {backend.load_seconds:.1f} s")

# %% [markdown]
# ## Dithered latents

# %%
import torch
from IPython.display import Markdown, display

from helpers.codec import CodecParams, decode_latents, encode_latents, quantize_latents
from helpers.images import list_images, load_image, model_input
from helpers.methods.palette.quantize import apply_palette, quantize_8bit, unquantize_8bit
from helpers.metrics import psnr, ssim

if not Path(DATA_DIR).is_dir():
    print(f"{DATA_DIR} not found: using the repository's data/ folder (put your own images there)")
    DATA_DIR = "../data"
path = list_images(DATA_DIR, IMAGES[:1])[0]
image = load_image(path)
model_img, reference = model_input(image, POLICY, backend.downsample)
size = reference.size
z = encode_latents(backend, model_img)
q8 = quantize_8bit(z, backend.quant_span)
method = CodecParams(method="palette").resolved_method(z.shape[0])
palette, indices = quantize_latents(q8, method, COLORS, DITHER)
z_dithered = unquantize_8bit(apply_palette(palette, indices), backend.quant_span)
before = decode_latents(backend, z_dithered).crop((0, 0, *size))
print(f"{path.name}: {method} palette K={len(palette)}, dither {DITHER}: {psnr(reference, before):.2f} dB before denoising")

# %% [markdown]
# ## Strength/steps sweep
# `strength` x `steps` decides how many of the scheduler's last timesteps run (`denoise_timesteps`):
# the 2022 defaults (66 steps, 0.04) run the last 3. No fresh noise is added, so each run is
# deterministic.

# %%
import time

from helpers.backends.denoise import denoise_latents, denoise_timesteps
from helpers.bench.compare import markdown_table

scheduler = backend.denoiser()["scheduler"]
rows = [{"steps": "-", "strength": "-", "timesteps": "(none)", "seconds": 0.0,
         "psnr": psnr(reference, before), "ssim": ssim(reference, before)}]
after = {}
for steps, strength in SWEEP:
    ts = denoise_timesteps(type(scheduler).from_config(scheduler.config), steps, strength)
    t0 = time.perf_counter()
    z_dn = denoise_latents(backend, torch.from_numpy(z_dithered)[None], strength, steps, progress=False)[0]
    seconds = time.perf_counter() - t0
    img = decode_latents(backend, z_dn.cpu().numpy()).crop((0, 0, *size))
    after[(steps, strength)] = img
    rows.append({"steps": steps, "strength": strength, "timesteps": " ".join(str(int(t)) for t in ts),
                 "seconds": seconds, "psnr": psnr(reference, img), "ssim": ssim(reference, img)})
display(Markdown(markdown_table(rows, columns=("steps", "strength", "timesteps", "seconds", "psnr", "ssim"))))
if RANDOM_WEIGHTS:
    print("RANDOM WEIGHTS: these numbers mean nothing.")

# %% [markdown]
# ## Before / after

# %%
from helpers.plots import difference_map, show_images

best = max(after, key=lambda k: psnr(reference, after[k]))
default = (66, 0.04) if (66, 0.04) in after else best
show_images({"original": reference, f"dithered, no denoising\n{psnr(reference, before):.2f} dB": before,
             f"denoised {default[0]} steps, strength {default[1]}\n{psnr(reference, after[default]):.2f} dB":
                 after[default],
             "what denoising changed\n|before - after| x4": difference_map(before, after[default]),
             "remaining error\n|original - after| x4": difference_map(reference, after[default])},
            size=3.4, title="RANDOM WEIGHTS: meaningless pictures" if RANDOM_WEIGHTS else None);

# %%
show_images({f"{s} steps, strength {g}": img for (s, g), img in after.items()}, cols=min(4, len(after)), size=3);

# %% [markdown]
# ## Through the codec
# The `.sdc` header can ask the decoder to denoise (`CodecParams(denoise=True)`); the decoder then runs
# exactly the step above before the VAE decoder.

# %%
from helpers.codec import decode, encode

enc = encode(image, backend, CodecParams(method="palette", colors=COLORS, dither=DITHER, policy=POLICY,
                                          denoise=True), latents=z)
dec = decode(enc.data, backend)
print(f"{enc.nbytes} bytes, header asks for denoising: {enc.header.denoise} "
      f"(strength {enc.header.denoise_strength:g}, {enc.header.denoise_steps} steps) -> "
      f"{psnr(reference, dec.image):.2f} dB; decode stages: "
      + ", ".join(f"{k} {v:.2f}s" for k, v in dec.timings.items()))
if RANDOM_WEIGHTS:
    print("\nREMINDER: random UNet/VAE weights, the pictures in this notebook mean nothing.")
