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
# # 03 · Quantizing the latent
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/03_latent_quantization.ipynb)
#
# Step by step from the float32 latent to a few kilobytes:
#
# 1. **8-bit** quantization (`quantize_8bit`): 4x64x64 bytes = 16 KiB for SD at 512x512;
# 2. a **palette** of K latent "colours" plus an index per latent pixel, with or without **dithering**.
#    For 4 channels the 2022 notebook treated the latent as an RGBA image and used **libimagequant**;
#    our **latent k-means** works for any channel count (TAEF2: 32);
# 3. a **lossless coder** on palette + indices: `zlib` (the original) and `arith` (a context-modelling
#    range coder).
#
# For every step: bytes after each coder and the decoded picture.

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
COLORS = [256, 64, 16]  # palette sizes K
DITHERS = [0.0, 1.0]  # dithering strength: 0 nearest colour, 1 full error diffusion
CODERS = ["zlib", "arith"]  # lossless coders, see helpers.methods.palette.entropy
KMEANS_ITERS = 25
DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps
SMOKE = os.environ.get("SDCOMP_SMOKE", "0").lower() in ("1", "true", "yes")  # CI: fewer images and sweeps

# %%
if SMOKE:
    COLORS = [COLORS[0], COLORS[-1]]
    KMEANS_ITERS = 10

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
image = load_image(path)
model_img, reference = model_input(image, POLICY, backend.downsample)
size = reference.size
z = encode_latents(backend, model_img)
c, h, w = z.shape
print(f"{path.name}: latent {c}x{h}x{w} from {backend.describe()}")

# %% [markdown]
# ## Float32 and 8 bits
# `pack_payload(None, None, coder, q8)` is the raw 8-bit stage (always zlib). The arithmetic coder codes
# palettes and index maps, so it only appears from the palette stage on.

# %%
from helpers.bench.compare import markdown_table
from helpers.codec import pack_payload, quantize_latents
from helpers.methods.palette.quantize import apply_palette, quantize_8bit, unquantize_8bit
from helpers.metrics import psnr, ssim

span = backend.quant_span
rows, decoded, latents_shown = [], {}, {}


def add(stage, setting, q_latent, nbytes: dict, z_decoded):
    """Decode one stage's latent and record its sizes and quality."""
    img = decode_latents(backend, z_decoded).crop((0, 0, *size))
    label = f"{stage} {setting}".strip()
    decoded[label] = img
    if q_latent is not None:
        latents_shown[label] = q_latent
    rows.append({"stage": stage, "setting": setting, **nbytes,
                 "psnr": psnr(reference, img), "ssim": ssim(reference, img)})


add("float32", "", None, {"raw": z.nbytes}, z)
q8 = quantize_8bit(z, span)
add("8-bit", "", q8, {"raw": q8.nbytes, "zlib": len(pack_payload(None, None, "zlib", q8))},
    unquantize_8bit(q8, span))
display(Markdown(markdown_table(rows, columns=("stage", "setting", "raw", "zlib", "psnr", "ssim"))))

# %% [markdown]
# ## Palette + dithering
# Dithering spends the palette's error as noise spread over neighbouring latent pixels: the decoded
# image keeps smooth gradients, but the index map gets noisier and compresses less.

# %%
methods = ["liq", "kmeans"] if c == 4 else ["kmeans"]
if c != 4:
    print(f"libimagequant treats the latent as an RGBA image and needs exactly 4 channels; "
          f"this model has {c}: only the latent k-means palette applies.")
for method in methods:
    for k in COLORS:
        for d in DITHERS:
            palette, indices = quantize_latents(q8, method, k, d, kmeans_iters=KMEANS_ITERS)
            nbytes = {coder: len(pack_payload(palette, indices, coder)) for coder in CODERS}
            nbytes["raw"] = palette.nbytes + indices.size * (1 if len(palette) <= 256 else 2)
            q = apply_palette(palette, indices)
            add(method, f"K={len(palette)} dither={d:g}", q, nbytes, unquantize_8bit(q, span))
            print(f"{method} K={k} dither={d:g}: " + ", ".join(f"{n} {b} B" for n, b in nbytes.items()))

# %% [markdown]
# ## Bytes and quality at each step

# %%
display(Markdown(markdown_table(rows, columns=("stage", "setting", "raw", *CODERS, "psnr", "ssim"))))

# %%
from helpers.plots import latent_as_rgba, show_images


def smallest(row):
    """'<bytes> B <coder>' for the smallest size recorded in a row."""
    nbytes, coder = min((row[k], k) for k in (*CODERS, "raw") if row.get(k))
    return f"{nbytes:,} B {coder}"


show_images({"original": reference,
             **{f"{label}\n{smallest(r)}, {r['psnr']:.2f} dB": img for (label, img), r in zip(decoded.items(), rows)}},
            cols=4, size=3.4);

# %% [markdown]
# The latent itself after each step (4 channels as RGBA): the dithering noise is visible in the
# latent, and the decoder has to cope with it.

# %%
channels = (0, 1, 2, 3) if c >= 4 else tuple(range(c))
show_images({label: latent_as_rgba(q, channels) for label, q in latents_shown.items()}, cols=4, size=2.6);

# %% [markdown]
# ## The complete file
# `helpers.codec.encode` runs the same chain and adds the `.sdc` header (model id, weights fingerprint,
# sizes, palette size, CRC); `decode` rebuilds the image from the bytes alone.

# %%
from helpers.codec import CodecParams, roundtrip

coder = CODERS[-1]  # the header is the same for every coder
params = CodecParams(method="palette", colors=COLORS[-1], dither=1.0, coder=coder, policy=POLICY,
                     kmeans_iters=KMEANS_ITERS)
enc, dec = roundtrip(image, backend, params, latents=z)
payload = len(pack_payload(enc.coded.palette, enc.coded.indices, coder))
print(f"{coder}: {enc.header.method} K={enc.header.colors} -> {enc.nbytes} bytes "
      f"({enc.nbytes - payload} of header), {psnr(reference, dec.image):.2f} dB")
