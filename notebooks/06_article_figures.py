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
# # 06 · Regenerating the article's figures
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/06_article_figures.ipynb)
#
# Rebuilds the article's figures from scratch into `FIG_DIR`:
# three **JPEG | WebP | SD** panels at matched size (sizes, PSNR and perceptual metrics in the titles and a
# table; ↑ higher is better, ↓ lower is better), the **latent as an RGBA picture**, the **VAE round trip** (ground truth, latent, decoded), the **quantization stages**, and a
# **hallucination** example (error map and worst crops). The article's figures use its 2022 method, asked for
# by name (`METHOD = "palette"`, zlib), whatever the library's default; a last figure per panel image puts
# today's default (the transform coder, `tc`) beside it, with AVIF at the same budget.
#
# The article's own photos are not available, so the figures use Kodak test images instead
# (kodim04, kodim08, kodim23, kodim20 by default) at the article's 512x512 input size. With SD v1.4
# unavailable (offline), the figures come from the TAEF2 autoencoder and the captions say so.

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
FIG_DIR = os.environ.get("SDCOMP_FIG_DIR", "../results/figures")  # where the PNGs are written
PANEL_IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim04,kodim08,kodim23").split(",")  # the three panels
ROUNDTRIP_IMAGE = "kodim23"
HALLUCINATION_IMAGE = "kodim20"
POLICY = "crop512"  # the article's 512x512 input
TARGET_BYTES = int(os.environ.get("SDCOMP_TARGET_BYTES", "5000"))
PANEL_CODECS = ["jpeg", "webp"]
# measured on every panel (the unavailable ones are skipped): PSNR next to the perceptual metrics
PANEL_METRICS = ["psnr", "cvvdp", "ssimulacra2", "flip", "butteraugli"]
TITLE_METRICS = ["psnr", "cvvdp", "ssimulacra2"]  # the ones a panel title shows, with their arrows
METHOD = "palette"  # the article's 2022 method, by name (today's default, tc, is shown beside it in section 6)
CODER = "zlib"  # the article's lossless stage
DPI = 110
DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps
SMOKE = os.environ.get("SDCOMP_SMOKE", "0").lower() in ("1", "true", "yes")  # CI: fewer images and sweeps

# %%
if SMOKE:
    DPI = 60
    HALLUCINATION_IMAGE = PANEL_IMAGES[0]  # reuse a panel's encoding

# %%
from helpers.notebook import load_model

backend = load_model(MODEL, FALLBACK_MODEL, DEVICE)  # prints what was loaded, and why if it fell back

# %%
from helpers.codec import CodecParams
from helpers.images import list_images, load_image
from helpers.plots import save_figure, show_images

if not Path(DATA_DIR).is_dir():
    print(f"{DATA_DIR} not found: using the repository's data/ folder (put your own images there)")
    DATA_DIR = "../data"
fig_dir = Path(FIG_DIR)
fig_dir.mkdir(parents=True, exist_ok=True)
MODEL_LABEL = {"CompVis/stable-diffusion-v1-4": "SD v1.4", "taef2": "TAEF2"}.get(backend.model_id, backend.model_id)
CODEC_LABEL = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL"}
params = CodecParams(method=METHOD, coder=CODER, policy=POLICY)
written, captions = [], {}


def save(fig, name, caption):
    written.append(save_figure(fig, fig_dir / name, dpi=DPI))
    captions[name] = caption
    print(f"{name}: {caption}")


# %% [markdown]
# ## 1. JPEG | WebP | SD at the same size

# %%
from IPython.display import Markdown, display

from helpers.bench.compare import compare_image, markdown_table
from helpers.plots import metric_line

comps = {}
for path in list_images(DATA_DIR, PANEL_IMAGES):
    comp = compare_image(load_image(path), backend, path.stem, params, TARGET_BYTES, PANEL_CODECS, ("ge",),
                         metric_keys=PANEL_METRICS)
    comps[path.stem] = comp
    res = comp.baselines["ge"]
    panels = {f"{CODEC_LABEL[codec]} q{r.quality}, {r.nbytes:,} B\n{metric_line(comp.row(codec), TITLE_METRICS)}":
              r.image for codec, r in res.items()}
    panels[f"{MODEL_LABEL}, {comp.ours.nbytes:,} B\n{metric_line(comp.row('ours'), TITLE_METRICS)}"] = \
        comp.ours_decoded.image
    title = (f"{path.stem} ({comp.reference.size[0]}x{comp.reference.size[1]}): "
             + " | ".join(f"{CODEC_LABEL[codec]} {r.nbytes:,} bytes" for codec, r in res.items())
             + f" | {MODEL_LABEL} latents {comp.ours.nbytes:,} bytes")
    caption = "; ".join([title] + [f"{CODEC_LABEL[codec]} {metric_line(comp.row(codec), TITLE_METRICS)}"
                                   for codec in res] + [f"{MODEL_LABEL} {metric_line(comp.row('ours'), TITLE_METRICS)}"])
    fig = show_images(panels, size=4, title=title)
    save(fig, f"panels_{path.stem}.png", caption)
panel_table = markdown_table([r for comp in comps.values() for r in comp.rows])
display(Markdown(panel_table))

# %% [markdown]
# ## 2. The latent as an RGBA picture, and 3. the VAE round trip

# %%
from helpers.codec import decode_latents
from helpers.plots import latent_as_rgba


def comparison(name, codecs):
    # reuse a panel's encoding when the image is one of the panels
    if name in comps:
        return comps[name]
    path = list_images(DATA_DIR, [name])[0]
    return compare_image(load_image(path), backend, name, params, TARGET_BYTES, codecs, ("ge",),
                         metric_keys=PANEL_METRICS)


rt = comparison(ROUNDTRIP_IMAGE, PANEL_CODECS)
reference, size = rt.reference, rt.reference.size
z, q8 = rt.ours.latents, rt.ours.coded.q8  # float latents and their 8-bit version
c, h, w = z.shape
rgba = latent_as_rgba(q8, (0, 1, 2, 3) if c >= 4 else tuple(range(c)))
note = "" if c == 4 else f" (channels 0-3 of {c})"

fig = show_images({f"{w}x{h} latent as RGBA{note}": rgba}, size=5)
save(fig, "latent_rgba.png", f"{rt.name}: the {c}x{h}x{w} {MODEL_LABEL} latent, 8-bit, shown as RGBA{note}")

decoded = decode_latents(backend, z).crop((0, 0, *size))
fig = show_images({"ground truth": reference, f"latent{note}": rgba, "decoded": decoded}, size=4)
save(fig, "vae_roundtrip.png",
     f"{rt.name}: ground truth, latent ({z.nbytes:,} bytes as float32), decoded by the {MODEL_LABEL} decoder")

# %% [markdown]
# ## 4. Quantization stages
# The same latent after each stage; the last panel is the rate-controlled file of figure 1.

# %%
from helpers.codec import pack_payload, quantize_latents
from helpers.methods.palette.quantize import apply_palette, unquantize_8bit
from helpers.metrics import measure

ours = rt.ours
k, method = ours.header.colors, ours.header.method
pal, idx = quantize_latents(q8, method, k, 0.0)  # same palette size, no dithering
images = {
    f"float32 latent\n{z.nbytes:,} B": decoded,
    f"8-bit\n{len(pack_payload(None, None, 'zlib', q8)):,} B (zlib)":
        decode_latents(backend, unquantize_8bit(q8, backend.quant_span)).crop((0, 0, *size)),
    f"{method} K={len(pal)}, no dither\n{len(pack_payload(pal, idx, CODER)):,} B ({CODER})":
        decode_latents(backend, unquantize_8bit(apply_palette(pal, idx), backend.quant_span)).crop((0, 0, *size)),
    f"{method} K={k}, {'dithered' if ours.header.dithered else 'no dither'}\n{ours.nbytes:,} B (.sdc file)":
        rt.ours_decoded.image,
}
images = {f"{label}\n{metric_line(measure(reference, img, keys=TITLE_METRICS), TITLE_METRICS)}": img
          for label, img in images.items()}
fig = show_images(images, size=3.6)
dither_note = "with dithering" if ours.header.dithered else "not dithered (k-means palettes are not, by default)"
save(fig, "quantization_stages.png", f"{rt.name}: float32 -> 8-bit -> {k}-colour palette without dithering -> "
                                     f"the .sdc file, {dither_note} (bytes, PSNR, ColorVideoVDP, SSIMULACRA 2); "
                                     f"{MODEL_LABEL}")

# %% [markdown]
# ## 5. Hallucination
# At a few kilobytes the decoder does not blur, it *invents*: the error map shows where (mean squared
# error per 16x16 block), the crops show what.

# %%
import matplotlib.pyplot as plt

from helpers.plots import crops_figure, error_map, worst_crops

comp = comparison(HALLUCINATION_IMAGE, ["jpeg"])
ours_img = comp.ours_decoded.image
fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
axes[0].imshow(comp.reference)
axes[0].set_title("original")
axes[1].imshow(ours_img)
axes[1].set_title(f"{MODEL_LABEL}, {comp.ours.nbytes:,} B")
im = axes[2].imshow(error_map(comp.reference, ours_img, 16), cmap="magma")
axes[2].set_title("squared error per 16x16 block")
fig.colorbar(im, ax=axes[2], fraction=0.046)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
save(fig, "hallucination_error_map.png", f"{comp.name}: where {MODEL_LABEL} at {comp.ours.nbytes:,} bytes "
                                         "departs from the original")
corners = worst_crops(comp.reference, ours_img, n=3, size=96)
panels = comp.images("ge")
fig = crops_figure(panels, corners, size=96, scale=2.2)
save(fig, "hallucination_crops.png", f"{comp.name}: the three 96x96 crops with the largest error")

# %% [markdown]
# ## 6. The 2022 method beside today's default
# Each panel image once more at the same budget: the original, the 2022 palette method (figure 1's file), today's
# default (the transform coder, `tc`) and AVIF's largest file within the budget. `detail` is the share of the
# original's fine-detail energy the picture keeps (not a quality score: noise would raise it).

# %%
from helpers.article import then_and_now

then_now = []
for name in (PANEL_IMAGES[:1] if SMOKE else PANEL_IMAGES):
    v = then_and_now(load_image(list_images(DATA_DIR, [name])[0]), backend, name, TARGET_BYTES, POLICY, CODER,
                     palette=comps[name])
    then_now += v.rows
    rows = {r["picture"]: r for r in v.rows}
    panels = {label + (f"\n{metric_line(rows[role], TITLE_METRICS)}, detail {rows[role]['detail_retention']:.2f}"
                       if role in rows else ""): v.pictures[label] for role, label in v.roles.items()}
    fig = show_images(panels, size=3.6, title=f"{name}: 2022 palette vs today's default (tc) vs AVIF, "
                                              f"{TARGET_BYTES:,}-byte budget")
    save(fig, f"then_and_now_{name}.png",
         f"{name} at {TARGET_BYTES:,} bytes: " + "; ".join(
             f"{label} ({metric_line(rows[role], TITLE_METRICS)}, detail retention "
             f"{rows[role]['detail_retention']:.2f})" for role, label in v.roles.items() if role in rows)
         + "; " + MODEL_LABEL)
then_now_table = markdown_table(then_now, columns=("image", "picture", "bytes", "psnr", "cvvdp", "ssimulacra2",
                                                   "detail_retention"))
display(Markdown(then_now_table))

# %% [markdown]
# ## Written files

# %%
(fig_dir / "captions.md").write_text(
    "# Figure captions\n\nKodak test images stand in for the article's photos. Metrics: ↑ higher is better, "
    "↓ lower is better (CVVDP = ColorVideoVDP in JOD, SSIM2 = SSIMULACRA 2).\n\n"
    + "".join(f"- `{name}`: {text}\n" for name, text in captions.items())
    + "\n## The panels' metrics\n\n" + panel_table
    + "\n## The 2022 method, today's default and AVIF\n\n" + then_now_table)
for p in written:
    print(f"{p.name:32s} {p.stat().st_size / 1024:7.1f} KiB")
