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
# # 07 · Palette or transform coding?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/07_transform_coding.ipynb)
#
# The 2022 method codes the latent as a picture of K colours: one shared palette, an index per latent pixel.
# With TAEF2's 32 channels that stops paying off early: a palette of 1024 colours costs 32 KB by itself, and
# every latent pixel snaps to its nearest colour, which shows as an 8-pixel grid.
#
# The transform coder (`--method tc`, `helpers.methods.tc`, the default) codes the latent the way image
# codecs code pixels: a CDF 9/7 wavelet per channel, then per band a channel transform that is the KLT in a
# metric where squared coefficient error equals squared *pixel* error (the decoder's Jacobian, measured on
# licensed photos), one quantization step for everything, and context-adaptive range coding. At low budgets
# only the coarse bands survive; detail bands are bought as the budget grows. On the stock TAEF2 the latent comes
# from an encoder trained for this coder (`--encoder tc`, the default); `--effort 1` also refines the latent
# against the decoded picture (a few decoder passes; the file format does not change).
#
# This notebook compares both methods on one image (pictures, zoomed crops, where the bytes go), then on a
# rate-distortion curve against JPEG, WebP and AVIF.

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
IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim23,kodim04,kodim08,kodim20").split(",")  # first: the close look
TARGET_BYTES = int(os.environ.get("SDCOMP_TARGET_BYTES", "5000"))  # the close look's budget
RD_BUDGETS = [2000, 3000, 5000, 8000, 12000]  # bytes, for the rate-distortion curves
CODERS = ["arith", "tc", "tc+e1"]  # ours: the palette method (arith coder), tc, tc with --effort 1
BASELINES = ["jpeg", "webp", "avif"]
METRICS = ["psnr", "ms_ssim", "cvvdp", "ssimulacra2"]  # helpers.metrics registry keys (unavailable ones skipped)
POLICY = "crop512"
DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps
FIG_DIR = os.environ.get("SDCOMP_FIG_DIR", "../results/figures")  # where the figures are saved
SMOKE = os.environ.get("SDCOMP_SMOKE", "0").lower() in ("1", "true", "yes")  # CI: fewer images and sweeps
TRAIN_TC = os.environ.get("SDCOMP_TRAIN_TC", "auto")  # SD: train tc tables first? auto = on a GPU only; 1 / 0
EFFORTS = [0, 1, 2, 3]  # --effort levels for the effort study (3 = 30 decoder passes: about 2 min on 2 CPU cores)

# %%
if SMOKE:
    IMAGES = IMAGES[:1]
    RD_BUDGETS = [3000, 8000]
    CODERS = ["arith", "tc"]
    BASELINES = ["jpeg", "avif"]
    METRICS = ["psnr", "ms_ssim"]
    EFFORTS = [0, 1]

# %%
from helpers.notebook import load_model

backend = load_model(MODEL, FALLBACK_MODEL, DEVICE)  # prints what was loaded, and why if it fell back

# %% [markdown]
# ## SD with a GPU: train tc tables for this model first (optional, once)
# TAEF2 ships trained tables (`helpers/data/`). For SD v1.4 there are none in the repository, so `tc` files
# carry **inline tables** (a per-image channel transform and scales, 92 bytes on SD's 4x64x64 latent) and use
# the plain latent metric instead of the decoder's. The next cell runs
# `python -m helpers.methods.tc.tc_train --model MODEL` in this kernel (tqdm progress bars per stage): it
# fetches the licensed training photos (`helpers.photos`, via `apt-get download`), encodes about 80 crops, back-propagates random probes through the VAE decoder and
# fits the tables into `~/.cache/sdcomp/tc/tc_<fingerprint>.npz`. Every encode below then finds them by the
# decoder's fingerprint and names them in the file, and decoding looks them up the same way.
#
# **Time (estimate, not measured: this project has no GPU).** The TAEF2 tables took 497 s on 2 CPU cores. For SD
# the network work (about 80 VAE encodes, about 80 decoder backward passes at 512x512) would take hours on a CPU
# (one SD VAE encode is 11 s of CPU here, `results/sd_fullsize/`), and a few minutes on a T4; the numpy stages
# are smaller than TAEF2's (4 channels instead of 32). Expect roughly 5-15 minutes on a Colab T4. `--max-minutes`
# bounds the probe stage. It does not run on a CPU, in CI (`SMOKE`), or with `TRAIN_TC = "0"`.

# %%
from helpers.methods.tc import tcoder as _tc

_have = _tc.trained_tables(backend.fingerprint) is not None
_gpu = getattr(backend, "device", None) is not None and backend.device.type == "cuda"
if backend.kind != "sd":
    print(f"{backend.model_id}: tc tables " + ("ship with the package." if _have else "are inline."))
elif _have:
    print(f"trained tc tables for this SD model are already in place ({_tc.tables_path(backend.fingerprint)[-1]})")
elif TRAIN_TC == "1" or (TRAIN_TC == "auto" and _gpu and not SMOKE):
    import time as _time

    from helpers.methods.tc import tc_train

    _t0 = _time.perf_counter()
    _rc = tc_train.main(["--model", MODEL, "--device", str(backend.device), "--max-minutes", "20"])
    print(f"tc_train exit status {_rc} after {(_time.perf_counter() - _t0) / 60:.1f} min; tables found now: "
          f"{_tc.trained_tables(backend.fingerprint) is not None}")
else:
    why = "SMOKE run" if SMOKE else ("TRAIN_TC = 0" if TRAIN_TC == "0" else "no GPU (hours on a CPU)")
    print(f"not training tc tables ({why}): tc files use inline tables")

# %% [markdown]
# ## One image at the article's budget
# Both methods get the same byte budget (whole file, header included); each rate control takes the largest
# palette / the finest step that fits.

# %%
from IPython.display import Markdown, display

from helpers.bench.compare import markdown_table
from helpers.codec import CodecParams, decode, encode
from helpers.images import list_images, load_image, model_input
from helpers.methods.tc import tcoder
from helpers.metrics import measure

if not Path(DATA_DIR).is_dir():
    print(f"{DATA_DIR} not found: using the repository's data/ folder (put your own images there)")
    DATA_DIR = "../data"
paths = list_images(DATA_DIR, IMAGES, keep_order=True)  # paths[0]: the close look
image = load_image(paths[0])
_, reference = model_input(image, POLICY, backend.downsample)
variants = {"palette (arith)": CodecParams(method="palette", coder="arith", colors=1024, policy=POLICY),
            "tc": CodecParams(method="tc", policy=POLICY)}
if "tc+e1" in CODERS:
    variants["tc, effort 1"] = CodecParams(method="tc", policy=POLICY, effort=1)
encoded, decoded, rows = {}, {}, []
for label, params in variants.items():
    encoded[label] = encode(image, backend, params, target_bytes=TARGET_BYTES)
    decoded[label] = decode(encoded[label].data, backend).image
    setting = (f"step {encoded[label].coded.step:.4g}" if encoded[label].header.method == "tc"
               else f"K={encoded[label].header.colors}")
    rows.append({"image": paths[0].stem, "codec": label, "setting": setting, "bytes": encoded[label].nbytes,
                 **measure(reference, decoded[label], keys=METRICS)})
display(Markdown(markdown_table(rows, ["image", "codec", "setting", "bytes"] + [k for k in METRICS if k in rows[0]])))

# %%
import matplotlib.pyplot as plt

from helpers.plots import save_figure

pictures = {"original": reference, **decoded}
fig, axes = plt.subplots(1, len(pictures), figsize=(3.6 * len(pictures), 3.9))
for ax, (label, pic) in zip(axes, pictures.items()):
    ax.imshow(pic)
    ax.axis("off")
    r = next((r for r in rows if r["codec"] == label), None)
    ax.set_title(label if r is None else f"{label}\n{r['bytes']} B, {r['psnr']:.2f} dB", fontsize=10)
fig.tight_layout()
save_figure(fig, Path(FIG_DIR) / "tc_vs_palette.png")
plt.show()

# %% [markdown]
# ## Zoomed: the palette's 8-pixel grid
# Every latent pixel of the palette method is one of K colours, so each 8x8 block of the picture is drawn from
# a small set of looks, and neighbouring blocks disagree. The transform coder's error is spread over wavelet
# bands instead. Crops where the palette decode is worst, and one smooth region, enlarged 3x (nearest neighbour).

# %%
from helpers.plots import corner_at, crops_figure, worst_crops

corners = worst_crops(reference, decoded["palette (arith)"], n=2, size=64) + [corner_at(reference, 0.2, 0.15, 64)]
fig = crops_figure(pictures, corners, size=64, scale=2.4)
save_figure(fig, Path(FIG_DIR) / "tc_vs_palette_crops.png")
plt.show()

# %% [markdown]
# ## Where the bytes go
# Bytes per wavelet band of the tc file (LL = the coarse latent, then detail bands from coarse to fine),
# each band range-coded alone with the same contexts.

# %%
coded = encoded["tc"].coded
sizes = tcoder.band_bytes(coded)
names = tcoder.band_names(coded.levels)
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar(names, sizes, color=["#c44"] + ["#48a"] * (len(names) - 1))
ax.set_ylabel("bytes")
ax.set_title(f"{paths[0].stem}: {encoded['tc'].nbytes} B file, step {coded.step:.4g}, "
             f"{coded.levels} wavelet levels", fontsize=10)
fig.tight_layout()
save_figure(fig, Path(FIG_DIR) / "tc_band_bytes.png")
plt.show()
zero = [float((q == 0).mean()) for q in coded.q]
print("share of zero coefficients per band:", ", ".join(f"{n} {z:.0%}" for n, z in zip(names, zero)))

# %% [markdown]
# ## What encoder effort buys, and what it must not cost
# `--effort N` refines the latent against the decoded picture before coding it (`helpers.methods.tc.refine`):
# each step decodes the *quantized* latent, and descends squared pixel error plus lambda times the tc coder's
# bits (a differentiable model of the range coder), plus a per-tile **detail term** that keeps the decoded
# picture's high-frequency energy at the original's. Without that term the refinement buys decibels with blur:
# the row "no detail term" shows it, and its detail retention (decoded / original high-frequency energy; 1 = as
# much fine detail as the original, and no quality score on its own: noise would score high too) falls.
# On the stock TAEF2 every tc row starts from tc's trained encoder (`python -m helpers.methods.tc.enc_train`:
# TAEF2's encoder fine-tuned through the tc quantizer and rate model on licensed photos, the default for tc),
# which costs no extra time at encode; the row "stock encoder" codes TAEF2's own encoder's latent
# (`--encoder stock`) for comparison. Every file decodes with the stock decoder.

# %%
from helpers.bench.effort import effort_study

effort_rows, effort_pictures = effort_study(image, backend, TARGET_BYTES, EFFORTS, METRICS, name=paths[0].stem)
_cols = ["variant", "detail", "bytes", "encode_s"] + [k for k in METRICS + ["detail_retention"] if k in effort_rows[0]]
display(Markdown(markdown_table(effort_rows, _cols)))

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for r in effort_rows:
    ax.scatter(r["detail_retention"], r["psnr"], s=40)
    ax.annotate(r["variant"], (r["detail_retention"], r["psnr"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
ax.axvline(1.0, color="0.6", lw=0.8, ls="--")
ax.set_xlabel("detail retention (decoded / original HF energy)")
ax.set_ylabel("PSNR (dB)")
ax.set_title(f"{paths[0].stem} at {TARGET_BYTES} B: fidelity against detail", fontsize=10)
fig.tight_layout()
save_figure(fig, Path(FIG_DIR) / "tc_effort.png")
plt.show()
_blur = next((k for k in effort_pictures if k.endswith("no detail term")), list(effort_pictures)[-1])
corners = worst_crops(reference, effort_pictures[_blur], n=2, size=64)
fig = crops_figure(effort_pictures, corners, size=64, scale=2.0)
save_figure(fig, Path(FIG_DIR) / "tc_effort_crops.png")
plt.show()

# %% [markdown]
# ## Rate-distortion: both methods against JPEG, WebP and AVIF
# The benchmark's own machinery (`helpers.bench.run_in_memory`, the records `python -m helpers.bench` writes),
# on the images of `IMAGES`; the full 24-image Kodak run is in `results/kodak/`.

# %%
from helpers.bench import budget_table, run_in_memory, write_plot

doc, selection = run_in_memory(paths, backend, RD_BUDGETS, ["zlib"] + CODERS, codecs=BASELINES, metrics=METRICS)
rd_png = write_plot(doc, Path(FIG_DIR) / "tc_rd.png", selection)
from IPython.display import Image as ShowImage

display(ShowImage(filename=str(rd_png)))
for budget in RD_BUDGETS:
    display(Markdown(f"**{budget} bytes**\n\n" + budget_table(doc, selection, budget)))

# %% [markdown]
# ## Honestly
# * The transform coder beats the palette method at every budget here, by several dB, and the curve keeps
#   rising with bytes (the palette's flattens). It removes the 8-pixel grid.
# * It still loses to AVIF (and usually WebP) on PSNR and on the perceptual metrics at these sizes with
#   TAEF2: the tiny autoencoder's own ceiling (about 32 dB on Kodak) and its 32-channel latent cost more
#   than a classic codec's transform. Faces and small text suffer most; see notebook 05.
# * Encoder effort (the study above; the 24-crop figures are in `results/kodak` and `results/kodak_effort3`):
#   at 5000 B on the 24 crops, over the default, effort 1 adds 0.5 dB and 0.05 JOD for about 8 s of refinement per
#   image (one thread, bf16 on a CPU with native bf16; about 3x that in float32), effort 2 0.85 dB and 0.10 JOD in
#   about 21 s (the best JOD), effort 3 1.1 dB and 0.07 JOD in about 76 s; none reaches AVIF. Each effort refines
#   with its own detail weight, chosen on training photos so that it keeps the default's fine detail (Kodak detail
#   retention 0.81-0.83 against the default's 0.80; with one weight for all, 0.72-0.74, for about 0.3 dB more).
#   Without the detail term the refinement buys its decibels partly with blur (see the "no detail term" row and
#   crops).
# * The tables (transform, scales, contexts) were trained on licensed Debian photos, never on Kodak
#   (`python -m helpers.methods.tc.tc_train`); models without trained tables (SD v1.4 here) use per-image
#   tables sent in the file, which cost about 100 bytes for SD's 4 channels.
