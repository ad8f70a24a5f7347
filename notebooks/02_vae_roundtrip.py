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
# # 02 · The VAE round trip
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/02_vae_roundtrip.ipynb)
#
# Encode one image to latents and decode it back, with no quantization yet. For SD v1.4 a 512x512
# image becomes a 4x64x64 latent, which we can look at as a 64x64 **RGBA picture** (the article's
# figure). Then: how good is the round trip (PSNR, SSIM, MS-SSIM, LPIPS where available), and how big
# is the float32 latent compared with the image?

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
POLICY = "crop512"  # the article's input: centred 512x512 crop (Kodak: no resampling); "pad8" keeps the full image
RGBA_CHANNELS = (0, 1, 2, 3)  # which 4 latent channels to show as RGBA when there are more than 4 (TAEF2: 32)
DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps
SMOKE = os.environ.get("SDCOMP_SMOKE", "0").lower() in ("1", "true", "yes")  # CI: fewer images and sweeps

# %%
from helpers.notebook import load_model

backend = load_model(MODEL, FALLBACK_MODEL, DEVICE)  # prints what was loaded, and why if it fell back

# %%
from IPython.display import Markdown, display

from helpers.codec import decode_latents, encode_latents
from helpers.images import list_images, load_image, model_input

if not Path(DATA_DIR).is_dir():
    print(f"{DATA_DIR} not found: using the repository's data/ folder (put your own images there)")
    DATA_DIR = "../data"
path = list_images(DATA_DIR, IMAGES[:1])[0]
model_img, reference = model_input(load_image(path), POLICY, backend.downsample)  # reference: what the decoder has to reproduce
size = reference.size
print(f"{path.name}: model input {model_img.size[0]}x{model_img.size[1]} (policy {POLICY})")

# %% [markdown]
# ## Encode and decode

# %%
import time

t0 = time.perf_counter()
z = encode_latents(backend, model_img)  # raw latents (C, h, w), float32
t1 = time.perf_counter()
decoded = decode_latents(backend, z).crop((0, 0, *size))
t2 = time.perf_counter()
c, h, w = z.shape
print(f"latent {c}x{h}x{w}, values {z.min():.2f}..{z.max():.2f} (mean {z.mean():.2f}, std {z.std():.2f})")
print(f"encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s on {backend.device}")

# %% [markdown]
# ## The latent as a picture
# Quantized to 8 bits (`quantize_8bit`, the 2022 notebook's formula), 4 channels can be shown as
# RGBA: it is recognisably a tiny version of the image, which is why a palette quantizer made for
# images works on it (notebook 03). TAEF2 has 32 channels: we show 4 of them as RGBA and all of them
# as a grid.

# %%
from helpers.methods.palette.quantize import quantize_8bit
from helpers.plots import latent_as_rgba, latent_channels_grid, show_images

q8 = quantize_8bit(z, backend.quant_span)
channels = RGBA_CHANNELS if c > 4 else tuple(range(min(c, 4)))
rgba = latent_as_rgba(q8, channels)
show_images({f"ground truth {size[0]}x{size[1]}": reference,
             f"latent as RGBA {w}x{h} (channels {', '.join(map(str, channels))})": rgba,
             "decoded": decoded}, size=4);

# %%
if c > 4:
    latent_channels_grid(z, max_channels=c);
else:
    print(f"{c} channels: the RGBA picture above shows all of them")

# %% [markdown]
# ## Round-trip quality

# %%
from helpers.metrics import all_metrics, lpips_status

m = all_metrics(reference, decoded)
for k in ("psnr", "ssim", "ms_ssim", "lpips"):
    v = m[k]
    print(f"{k:8s} {'n/a' if v is None else f'{v:.4f}'}")
ok, reason = lpips_status()
if not ok:
    print(f"LPIPS not shown: {reason}")

# %% [markdown]
# ## How big is the latent?
# Uncompressed, the float32 latent is `C*h*w*4` bytes: 4x64x64x4 = 64 KiB for SD at 512x512, against
# 768 KiB of raw RGB. That is only 12x smaller; the real savings come from quantization (notebook 03).
# TAEF2's 32 channels make it 512 KiB, bigger than a PNG of the image: a tiny autoencoder buys speed
# with a much wider latent, and the palette stage has to claw that back.

# %%
from helpers.bench.compare import markdown_table
from helpers.plots import png_bytes

raw_rgb = size[0] * size[1] * 3
sizes = [
    {"what": "raw RGB image (W*H*3)", "bytes": raw_rgb},
    {"what": "PNG (lossless)", "bytes": len(png_bytes(reference))},
    {"what": f"float32 latent ({c}*{h}*{w}*4)", "bytes": z.nbytes},
    {"what": f"8-bit latent ({c}*{h}*{w})", "bytes": q8.nbytes},
]
for r in sizes:
    r["KiB"] = r["bytes"] / 1024
    r["x smaller than raw"] = raw_rgb / r["bytes"]
display(Markdown(markdown_table(sizes, columns=("what", "bytes", "KiB", "x smaller than raw"))))
