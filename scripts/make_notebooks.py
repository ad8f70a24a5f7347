#!/usr/bin/env python
"""Generate the notebook suite in ``notebooks/`` from one place, so every notebook shares the same
Colab badge, guarded setup cell, papermill ``parameters`` cell and model-loading fallback.

    python scripts/make_notebooks.py            # (re)write notebooks/*.ipynb, outputs stripped
    python scripts/make_notebooks.py --check    # exit 1 if a committed notebook differs from this script

Edit the cells here, not in Jupyter: ``tests/test_notebooks.py`` runs ``--check``.
Notebooks stay thin: every model, codec, metric and plotting step is a call into ``helpers``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
REPO_URL = "https://github.com/sdcomp/sdcomp-notebooks"
COLAB_URL = "https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/{name}.ipynb"
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](" + COLAB_URL + ")"

SETUP = f'''\
# Setup. On Colab: clone and install the project (torch is preinstalled there), fetch the Kodak images,
# and work from the clone's notebooks/ folder. Elsewhere: use the `helpers` package of this checkout.
import os
import sys
from pathlib import Path

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    import subprocess
    import urllib.request

    if Path.cwd().name != "notebooks":  # first run only; re-running this cell is harmless
        if not Path("sdcomp-notebooks").is_dir():
            subprocess.run(["git", "clone", "-q", "{REPO_URL}"], check=True)
        os.chdir("sdcomp-notebooks")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "."], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "diffusers", "transformers", "accelerate",
                        "lpips", "libimagequant", "mozjpeg-lossless-optimization", "pillow-jxl-plugin",
                        "scikit-image"], check=True)
        os.chdir("notebooks")
    kodak = Path("../data/kodak")  # the Kodak test images are not part of the repository
    kodak.mkdir(parents=True, exist_ok=True)
    for i in range(1, 25):
        f = kodak / f"kodim{{i:02d}}.png"
        if not f.exists():
            try:
                urllib.request.urlretrieve(f"http://r0k.us/graphics/kodak/kodak/kodim{{i:02d}}.png", f)
            except OSError as exc:
                print(f"could not download {{f.name}} ({{exc}}): upload your own images to data/ instead")
                break
    os.environ.setdefault("SDCOMP_DATA", str(kodak))

# Make this checkout's `helpers` importable (the notebook runs from notebooks/, the package is one level up).
for _root in (Path.cwd(), *Path.cwd().parents):
    if (_root / "helpers" / "__init__.py").is_file() and (_root / "pyproject.toml").is_file():
        if str(_root) not in sys.path:
            sys.path.insert(0, str(_root))
        break
try:
    import helpers
except ImportError as exc:
    raise ImportError("cannot import `helpers`: run this notebook from the repository's notebooks/ folder "
                      "or `pip install -e .` the repository") from exc
print(f"helpers {{helpers.__version__}}, Python {{sys.version.split()[0]}}, Colab: {{IN_COLAB}}")
'''

# The shared lines of every parameters cell.
P_MODEL = '''\
MODEL = os.environ.get("SDCOMP_MODEL", "CompVis/stable-diffusion-v1-4")  # hub id, SD1.x folder, "taef2" or "auto"
FALLBACK_MODEL = os.environ.get("SDCOMP_FALLBACK_MODEL", "taef2")  # used when MODEL cannot be loaded (offline)'''
P_DEVICE = 'DEVICE = os.environ.get("SDCOMP_DEVICE", "auto")  # auto (cuda > mps > cpu), cpu, cuda, mps'
P_DATA = '''\
DATA_DIR = os.environ.get("SDCOMP_DATA", "../../shared/data/kodak")  # folder of test images (Kodak: kodim01..24)'''
P_SMOKE = ('SMOKE = os.environ.get("SDCOMP_SMOKE", "0").lower() in ("1", "true", "yes")'
           '  # CI: fewer images and sweeps')

LOAD_MODEL = '''\
from helpers.errors import SDCError
from helpers.models import load_with_fallback

backend, why = load_with_fallback(MODEL, FALLBACK_MODEL, device=DEVICE)
if why:
    print(f"Could not load {MODEL!r}:\\n  {why}\\n-> fell back to {FALLBACK_MODEL!r}.")
print(f"{backend.describe()}: {backend.latent_channels} latent channels, {backend.downsample}x downsampling, "
      f"loaded in {backend.load_seconds:.1f} s")
if backend.random_weights:
    print("WARNING: tiny RANDOM SD weights (CI): the code path is real, the pictures and numbers are meaningless.")'''

DATA_FALLBACK = '''\
if not Path(DATA_DIR).is_dir():
    print(f"{DATA_DIR} not found: using the repository's data/ folder (put your own images there)")
    DATA_DIR = "../data"'''
DATA_FALLBACK_IN_CELL = DATA_FALLBACK.replace("\n", "\n" + " " * 8)  # for cells written at 8 spaces of indent

# The first image of IMAGES through the policy and the encoder (notebooks 03 and 04); 8 spaces of indent.
FIRST_IMAGE_LATENTS = DATA_FALLBACK_IN_CELL + '''
        path = list_images(DATA_DIR, IMAGES[:1])[0]
        image = load_image(path)
        model_img, reference = model_input(image, POLICY, backend.downsample)
        size = reference.size
        z = encode_latents(backend, model_img)'''


def dd(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def md(text: str):
    return ("markdown", dd(text))


def code(text: str):
    return ("code", dd(text))


def params(*lines: str):
    body = "# Parameters (papermill: tagged `parameters`). Every default can be overridden by an environment variable.\n"
    return ("parameters", body + "\n".join(dd(x) for x in lines))


def header(name: str, title: str, intro: str):
    return ("markdown", f"# {title}\n\n{BADGE.format(name=name)}\n\n{dd(intro)}")


# --------------------------------------------------------------------------------------------------
# 01 load weights
# --------------------------------------------------------------------------------------------------

NB01 = [
    header("01_load_weights", "01 · Loading the weights", """
        Stable Diffusion v1.4 is four networks: the **VAE** (encoder + decoder, the part that turns pixels into
        latents and back, i.e. our codec), the **UNet** denoiser, the **CLIP text encoder** and a **scheduler**
        (no weights). The codec needs only the VAE; the UNet, CLIP and scheduler are loaded on demand by
        `backend.denoiser()` for the optional denoising step (notebook 04).

        `MODEL` may be a Hugging Face hub id (default `CompVis/stable-diffusion-v1-4`), another SD1.x id or a
        local diffusers folder, or `taef2`: a real pretrained *tiny* autoencoder (32 latent channels, ~1.3 M
        parameters per half) that runs offline. When the hub is unreachable the notebook says so and falls
        back to TAEF2. This notebook reports device, dtype, parameter counts, load time and memory."""),
    ("code", SETUP),
    params(P_MODEL, P_DEVICE, '''\
        LOAD_DENOISER = os.environ.get("SDCOMP_LOAD_DENOISER", "1") not in ("0", "false", "no")  # also UNet + CLIP + scheduler
        SHOW_TAEF2 = True  # also load the offline TAEF2 autoencoder for comparison'''),
    md("## Device and dtype\nGPU: fp16 weights; CPU: fp32 (CPU fp16 convolutions are slow and less accurate)."),
    code('''\
        import platform

        import torch
        from IPython.display import Markdown, display

        from helpers.models import default_dtype, memory_usage, parameter_count, select_device

        device = select_device(DEVICE)
        print(f"torch {torch.__version__} on {platform.platform()}")
        print(f"device: {device}, dtype for SD: {default_dtype(device)}")
        if device.type == "cuda":
            print(f"GPU: {torch.cuda.get_device_name(device)}, "
                  f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB")


        rows, loads = [], []  # parameter counts and load steps, summarised at the end
        loads.append({"step": "start", "seconds": 0.0, **memory_usage(device)})
        print("before loading:", {k: round(v) for k, v in memory_usage(device).items()})'''),
    md("""
        ## The VAE
        `load_backend` looks in the local Hugging Face cache first and only then tries the hub, so an offline
        machine fails in seconds with a one-line reason instead of minutes of retries."""),
    code(LOAD_MODEL),
    code('''\
        loads.append({"step": f"{backend.model_id}: VAE", "seconds": backend.load_seconds, **memory_usage(device)})
        print("after loading:", {k: round(v) for k, v in memory_usage(device).items()})
        for name, module in backend.components().items():
            rows.append({"model": backend.model_id, "component": name, "parameters": parameter_count(module),
                         "dtype": str(backend.dtype).replace("torch.", ""), "device": str(backend.device)})
            print(f"{name:14s} {parameter_count(module) / 1e6:8.2f} M parameters")
        if backend.random_weights:
            print("\\nNOTE: this is the tiny RANDOM SD pipeline used in CI: real classes and loading code, meaningless weights.")'''),
    md("""
        ## UNet, CLIP text encoder and scheduler
        Loaded once, on first use, by `backend.denoiser()` from the same checkpoint (same `MODEL`).
        SD v1.4's UNet has about 860 M parameters and its CLIP text encoder about 123 M; the VAE about 84 M."""),
    code('''\
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
        else:
            print(f"{backend.describe()} has no UNet/CLIP: it is an autoencoder only (or LOAD_DENOISER is off). "
                  "Denoising (notebook 04) needs an SD1.x checkpoint.")'''),
    md("""
        ## TAEF2, the offline alternative
        A tiny autoencoder for the FLUX.2 latent space (TAESD family, MIT licence). Its weights live in
        `../shared/weights/taef2` here (or `$SDCOMP_TAEF2_DIR`); it has 32 latent channels instead of SD's 4,
        which changes the byte budget of every later step."""),
    code('''\
        from helpers.models import load_taef2

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
            print("the main model already is TAEF2")'''),
    md("## Summary"),
    code('''\
        from helpers.report import markdown_table

        for r in rows:
            r["millions"] = r["parameters"] / 1e6
        display(Markdown(markdown_table(rows, columns=("model", "component", "parameters", "millions", "dtype", "device"))))
        display(Markdown("Memory after each load step (MiB; RSS = the whole Python process, CUDA = tensors on the GPU):\\n\\n"
                         + markdown_table(loads, columns=("step", "seconds", *[k for k in loads[0] if k.endswith("MiB")]))))'''),
]

# --------------------------------------------------------------------------------------------------
# 02 VAE round trip
# --------------------------------------------------------------------------------------------------

NB02 = [
    header("02_vae_roundtrip", "02 · The VAE round trip", """
        Encode one image to latents and decode it back, with no quantization yet. For SD v1.4 a 512x512
        image becomes a 4x64x64 latent, which we can look at as a 64x64 **RGBA picture** (the article's
        figure). Then: how good is the round trip (PSNR, SSIM, MS-SSIM, LPIPS where available), and how big
        is the float32 latent compared with the image?"""),
    ("code", SETUP),
    params(P_MODEL, P_DATA, '''\
        IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim23").split(",")  # the first one is used here
        POLICY = "crop512"  # the article's input: centred 512x512 crop (Kodak: no resampling); "pad8" keeps the full image
        RGBA_CHANNELS = (0, 1, 2, 3)  # which 4 latent channels to show as RGBA when there are more than 4 (TAEF2: 32)''',
           P_DEVICE, P_SMOKE),
    code(LOAD_MODEL),
    code(f'''\
        from IPython.display import Markdown, display

        from helpers.codec import decode_latents, encode_latents
        from helpers.images import list_images, load_image, model_input

        {DATA_FALLBACK_IN_CELL}
        path = list_images(DATA_DIR, IMAGES[:1])[0]
        model_img, reference = model_input(load_image(path), POLICY, backend.downsample)  # reference: what the decoder has to reproduce
        size = reference.size
        print(f"{{path.name}}: model input {{model_img.size[0]}}x{{model_img.size[1]}} (policy {{POLICY}})")'''),
    md("## Encode and decode"),
    code('''\
        import time

        t0 = time.perf_counter()
        z = encode_latents(backend, model_img)  # raw latents (C, h, w), float32
        t1 = time.perf_counter()
        decoded = decode_latents(backend, z).crop((0, 0, *size))
        t2 = time.perf_counter()
        c, h, w = z.shape
        print(f"latent {c}x{h}x{w}, values {z.min():.2f}..{z.max():.2f} (mean {z.mean():.2f}, std {z.std():.2f})")
        print(f"encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s on {backend.device}")'''),
    md("""
        ## The latent as a picture
        Quantized to 8 bits (`quantize_8bit`, the 2022 notebook's formula), 4 channels can be shown as
        RGBA: it is recognisably a tiny version of the image, which is why a palette quantizer made for
        images works on it (notebook 03). TAEF2 has 32 channels: we show 4 of them as RGBA and all of them
        as a grid."""),
    code('''\
        from helpers.plots import latent_as_rgba, latent_channels_grid, show_images
        from helpers.quantize import quantize_8bit

        q8 = quantize_8bit(z, backend.quant_span)
        channels = RGBA_CHANNELS if c > 4 else tuple(range(min(c, 4)))
        rgba = latent_as_rgba(q8, channels)
        show_images({f"ground truth {size[0]}x{size[1]}": reference,
                     f"latent as RGBA {w}x{h} (channels {', '.join(map(str, channels))})": rgba,
                     "decoded": decoded}, size=4);'''),
    code('''\
        if c > 4:
            latent_channels_grid(z, max_channels=c);
        else:
            print(f"{c} channels: the RGBA picture above shows all of them")'''),
    md("## Round-trip quality"),
    code('''\
        from helpers.metrics import all_metrics, lpips_status

        m = all_metrics(reference, decoded)
        for k in ("psnr", "ssim", "ms_ssim", "lpips"):
            v = m[k]
            print(f"{k:8s} {'n/a' if v is None else f'{v:.4f}'}")
        ok, reason = lpips_status()
        if not ok:
            print(f"LPIPS not shown: {reason}")'''),
    md("""
        ## How big is the latent?
        Uncompressed, the float32 latent is `C*h*w*4` bytes: 4x64x64x4 = 64 KiB for SD at 512x512, against
        768 KiB of raw RGB. That is only 12x smaller; the real savings come from quantization (notebook 03).
        TAEF2's 32 channels make it 512 KiB, bigger than a PNG of the image: a tiny autoencoder buys speed
        with a much wider latent, and the palette stage has to claw that back."""),
    code('''\
        from helpers.plots import png_bytes
        from helpers.report import markdown_table

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
        display(Markdown(markdown_table(sizes, columns=("what", "bytes", "KiB", "x smaller than raw"))))'''),
]

# --------------------------------------------------------------------------------------------------
# 03 latent quantization
# --------------------------------------------------------------------------------------------------

NB03 = [
    header("03_latent_quantization", "03 · Quantizing the latent", """
        Step by step from the float32 latent to a few kilobytes:

        1. **8-bit** quantization (`quantize_8bit`): 4x64x64 bytes = 16 KiB for SD at 512x512;
        2. a **palette** of K latent "colours" plus an index per latent pixel, with or without **dithering**.
           For 4 channels the 2022 notebook treated the latent as an RGBA image and used **libimagequant**;
           our **latent k-means** works for any channel count (TAEF2: 32);
        3. a **lossless coder** on palette + indices: `zlib` (the original) and `arith` (a context-modelling
           range coder).

        For every step: bytes after each coder and the decoded picture."""),
    ("code", SETUP),
    params(P_MODEL, P_DATA, '''\
        IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim23").split(",")  # the first one is used here
        POLICY = "crop512"
        COLORS = [256, 64, 16]  # palette sizes K
        DITHERS = [0.0, 1.0]  # dithering strength: 0 nearest colour, 1 full error diffusion
        CODERS = ["zlib", "arith"]  # lossless coders, see helpers.entropy
        KMEANS_ITERS = 25''', P_DEVICE, P_SMOKE),
    code('''\
        if SMOKE:
            COLORS = [COLORS[0], COLORS[-1]]
            KMEANS_ITERS = 10'''),
    code(LOAD_MODEL),
    code(f'''\
        from IPython.display import Markdown, display

        from helpers.codec import decode_latents, encode_latents
        from helpers.images import list_images, load_image, model_input

        {FIRST_IMAGE_LATENTS}
        c, h, w = z.shape
        print(f"{{path.name}}: latent {{c}}x{{h}}x{{w}} from {{backend.describe()}}")'''),
    md("""
        ## Float32 and 8 bits
        `pack_payload(None, None, coder, q8)` is the raw 8-bit stage (always zlib). The arithmetic coder codes
        palettes and index maps, so it only appears from the palette stage on."""),
    code('''\
        from helpers.codec import pack_payload, quantize_latents
        from helpers.metrics import psnr, ssim
        from helpers.quantize import apply_palette, quantize_8bit, unquantize_8bit
        from helpers.report import markdown_table

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
        display(Markdown(markdown_table(rows, columns=("stage", "setting", "raw", "zlib", "psnr", "ssim"))))'''),
    md("""
        ## Palette + dithering
        Dithering spends the palette's error as noise spread over neighbouring latent pixels: the decoded
        image keeps smooth gradients, but the index map gets noisier and compresses less."""),
    code('''\
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
                    print(f"{method} K={k} dither={d:g}: " + ", ".join(f"{n} {b} B" for n, b in nbytes.items()))'''),
    md("## Bytes and quality at each step"),
    code('''\
        display(Markdown(markdown_table(rows, columns=("stage", "setting", "raw", *CODERS, "psnr", "ssim"))))'''),
    code('''\
        from helpers.plots import latent_as_rgba, show_images



        def smallest(row):
            """'<bytes> B <coder>' for the smallest size recorded in a row."""
            nbytes, coder = min((row[k], k) for k in (*CODERS, "raw") if row.get(k))
            return f"{nbytes:,} B {coder}"


        show_images({"original": reference,
                     **{f"{label}\\n{smallest(r)}, {r['psnr']:.2f} dB": img for (label, img), r in zip(decoded.items(), rows)}},
                    cols=4, size=3.4);'''),
    md("""
        The latent itself after each step (4 channels as RGBA): the dithering noise is visible in the
        latent, and the decoder has to cope with it."""),
    code('''\
        channels = (0, 1, 2, 3) if c >= 4 else tuple(range(c))
        show_images({label: latent_as_rgba(q, channels) for label, q in latents_shown.items()}, cols=4, size=2.6);'''),
    md("""
        ## The complete file
        `helpers.codec.encode` runs the same chain and adds the `.sdc` header (model id, weights fingerprint,
        sizes, palette size, CRC); `decode` rebuilds the image from the bytes alone."""),
    code('''\
        from helpers.codec import CodecParams, roundtrip

        coder = CODERS[-1]  # the header is the same for every coder
        params = CodecParams(colors=COLORS[-1], dither=1.0, coder=coder, policy=POLICY, kmeans_iters=KMEANS_ITERS)
        enc, dec = roundtrip(image, backend, params, latents=z)
        payload = len(pack_payload(enc.palette, enc.indices, coder))
        print(f"{coder}: {enc.header.method} K={enc.header.colors} -> {enc.nbytes} bytes "
              f"({enc.nbytes - payload} of header), {psnr(reference, dec.image):.2f} dB")'''),
]

# --------------------------------------------------------------------------------------------------
# 04 UNet denoising
# --------------------------------------------------------------------------------------------------

NB04 = [
    header("04_unet_denoising", "04 · Denoising the dithered latents with the UNet", """
        The 2022 notebook treated palette + dithering noise like the last steps of a diffusion trajectory:
        it ran the dithered latents (scaled by 0.18215) through the final few steps of SD's own scheduler with
        the **empty prompt** and no guidance, then decoded. Here: a strength/steps sweep, before/after
        pictures and difference maps.

        This needs SD's UNet. TAEF2 has none: if `MODEL` is TAEF2 (or SD cannot be loaded), the notebook
        explains and switches to an SD1.x checkpoint, and when none is available (offline) to a **tiny random
        SD pipeline** built on the spot, which exercises the real code path but produces meaningless pictures."""),
    ("code", SETUP),
    params(P_MODEL, P_DATA, '''\
        IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim23").split(",")  # the first one is used here
        POLICY = "crop512"
        COLORS = 256  # the 2022 notebook: libimagequant, 256 colours, full dithering
        DITHER = 1.0
        SWEEP = [(66, 0.02), (66, 0.04), (66, 0.08), (66, 0.15), (33, 0.04), (100, 0.04)]  # (steps, strength)''',
           P_DEVICE, P_SMOKE),
    code('''\
        if SMOKE:
            SWEEP = [(66, 0.04), (20, 0.15)]'''),
    md("## A model with a UNet"),
    code('''\
        import tempfile

        from helpers.errors import SDCError
        from helpers.models import DEFAULT_SD_MODEL, load_backend, make_tiny_sd

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
            print("\\n" + "!" * 100 + "\\n!!! WARNING: RANDOM WEIGHTS. This UNet and VAE are untrained: every picture and number below"
                  " is MEANINGLESS.\\n!!! It only shows that the code runs. Use SD v1.4 (online/Colab) for real results.\\n"
                  + "!" * 100)
        print(f"{backend.describe()}, loaded in {backend.load_seconds:.1f} s")'''),
    md("## Dithered latents"),
    code(f'''\
        import torch
        from IPython.display import Markdown, display

        from helpers.codec import CodecParams, decode_latents, encode_latents, quantize_latents
        from helpers.images import list_images, load_image, model_input
        from helpers.metrics import psnr, ssim
        from helpers.quantize import apply_palette, quantize_8bit, unquantize_8bit

        {FIRST_IMAGE_LATENTS}
        q8 = quantize_8bit(z, backend.quant_span)
        method = CodecParams().resolved_method(z.shape[0])
        palette, indices = quantize_latents(q8, method, COLORS, DITHER)
        z_dithered = unquantize_8bit(apply_palette(palette, indices), backend.quant_span)
        before = decode_latents(backend, z_dithered).crop((0, 0, *size))
        print(f"{{path.name}}: {{method}} palette K={{len(palette)}}, dither {{DITHER}}: {{psnr(reference, before):.2f}} dB before denoising")'''),
    md("""
        ## Strength/steps sweep
        `strength` x `steps` decides how many of the scheduler's last timesteps run (`denoise_timesteps`):
        the 2022 defaults (66 steps, 0.04) run the last 3. No fresh noise is added, so each run is
        deterministic."""),
    code('''\
        import time

        from helpers.denoise import denoise_latents, denoise_timesteps
        from helpers.report import markdown_table

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
            print("RANDOM WEIGHTS: these numbers mean nothing.")'''),
    md("## Before / after"),
    code('''\
        from helpers.plots import difference_map, show_images

        best = max(after, key=lambda k: psnr(reference, after[k]))
        default = (66, 0.04) if (66, 0.04) in after else best
        show_images({"original": reference, f"dithered, no denoising\\n{psnr(reference, before):.2f} dB": before,
                     f"denoised {default[0]} steps, strength {default[1]}\\n{psnr(reference, after[default]):.2f} dB":
                         after[default],
                     "what denoising changed\\n|before - after| x4": difference_map(before, after[default]),
                     "remaining error\\n|original - after| x4": difference_map(reference, after[default])},
                    size=3.4, title="RANDOM WEIGHTS: meaningless pictures" if RANDOM_WEIGHTS else None);'''),
    code('''\
        show_images({f"{s} steps, strength {g}": img for (s, g), img in after.items()}, cols=min(4, len(after)), size=3);'''),
    md("""
        ## Through the codec
        The `.sdc` header can ask the decoder to denoise (`CodecParams(denoise=True)`); the decoder then runs
        exactly the step above before the VAE decoder."""),
    code('''\
        from helpers.codec import decode, encode

        enc = encode(image, backend, CodecParams(colors=COLORS, dither=DITHER, policy=POLICY, denoise=True), latents=z)
        dec = decode(enc.data, backend)
        print(f"{enc.nbytes} bytes, header asks for denoising: {enc.header.denoise} "
              f"(strength {enc.header.denoise_strength:g}, {enc.header.denoise_steps} steps) -> "
              f"{psnr(reference, dec.image):.2f} dB; decode stages: "
              + ", ".join(f"{k} {v:.2f}s" for k, v in dec.timings.items()))
        if RANDOM_WEIGHTS:
            print("\\nREMINDER: random UNet/VAE weights, the pictures in this notebook mean nothing.")'''),
]

# --------------------------------------------------------------------------------------------------
# 05 comparison
# --------------------------------------------------------------------------------------------------

NB05 = [
    header("05_comparison", "05 · Ours against JPEG, WebP, AVIF and JPEG XL at matched size", """
        Each image is compressed with our codec under a byte budget (`TARGET_BYTES`, header included); then
        every classic codec is matched to *our* file size under two rules:
        `ge` (smallest file at least as big as ours, the 2022 notebook's rule) and `le` (largest file no bigger
        than ours, the fairer rule). Then: a metrics table, an interactive before/after slider, and crops
        where detail was invented or lost (faces, lettering, windows)."""),
    ("code", SETUP),
    params(P_MODEL, P_DATA, '''\
        IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim04,kodim20,kodim08,kodim23").split(",")
        POLICY = "pad8"  # full Kodak images (768x512); "crop512" for the article's 512x512
        TARGET_BYTES = int(os.environ.get("SDCOMP_TARGET_BYTES", "5000"))  # our file's budget, header included
        RULES = ["ge", "le"]
        METHOD = "auto"  # liq for 4-channel SD latents, kmeans otherwise
        COLORS = 256  # upper bound of the palette-size search
        DITHER = 1.0
        CODER = os.environ.get("SDCOMP_CODER", "zlib")
        CODECS = ["jpeg", "webp", "avif", "jxl"]  # classic codecs (unavailable ones are skipped and reported above)
        CROP = 96  # crop size in pixels for the detail figures
        # centres of known hard details, as fractions of the image width/height
        DETAILS = {"kodim04": [(0.45, 0.43, "eye"), (0.48, 0.62, "mouth")],
                   "kodim20": [(0.39, 0.57, "aircraft lettering")],
                   "kodim08": [(0.60, 0.52, "windows"), (0.86, 0.64, "shop lettering")],
                   "kodim23": [(0.36, 0.36, "parrot eye")]}''', P_DEVICE, P_SMOKE),
    code('''\
        if SMOKE:
            IMAGES = IMAGES[:2]  # a face and lettering'''),
    code(LOAD_MODEL),
    code('''\
        from helpers import baselines
        from helpers.metrics import lpips_status

        for name, reason in baselines.codec_status().items():
            print(f"{name:5s} {'available' if reason is None else reason}")
        ok, reason = lpips_status()
        print("LPIPS:", reason)'''),
    md("## Matched-size comparison"),
    code(f'''\
        from IPython.display import Markdown, display

        from helpers.codec import CodecParams
        from helpers.images import list_images, load_image
        from helpers.report import compare_image, markdown_table

        {DATA_FALLBACK_IN_CELL}
        params = CodecParams(method=METHOD, colors=COLORS, dither=DITHER, coder=CODER, policy=POLICY)
        comparisons = {{}}
        for path in list_images(DATA_DIR, IMAGES):
            comp = compare_image(load_image(path), backend, path.stem, params, TARGET_BYTES, CODECS, tuple(RULES))
            comparisons[path.stem] = comp
            print(f"{{path.stem}}: ours {{comp.ours.nbytes}} B ({{comp.rows[0]['setting']}}), "
                  f"encode {{comp.seconds['encode']:.1f}} s, decode {{comp.seconds['decode']:.1f}} s")
        rows = [r for comp in comparisons.values() for r in comp.rows]
        display(Markdown(markdown_table(rows)))'''),
    md("""
        Codecs missing from a rule could not reach the budget (e.g. `le`: even their lowest quality is
        bigger than our file). PSNR/SSIM reward the classic codecs' blur; our decoder instead *invents*
        plausible texture, which these metrics punish and the eye often forgives — until it matters (faces,
        text), see the crops below."""),
    code('''\
        from helpers.plots import comparison_figure

        for rule in RULES:
            comparison_figure(list(comparisons.values()), rule=rule, size=2.8).suptitle(
                f"rule {rule}: {'smallest file >= ours' if rule == 'ge' else 'largest file <= ours'}", y=1.01);'''),
    md("""
        ## Before/after slider
        Drag the slider: left of the split is the original, right is our decoded image (PNG, so the display
        adds no artefacts of its own). Needs a live kernel (Jupyter or Colab)."""),
    code('''\
        from helpers.plots import compose_split, slider_widget

        first = next(iter(comparisons.values()))
        box = slider_widget(first.reference, first.ours_decoded.image, "original",
                            f"ours, {first.ours.nbytes} bytes")
        display(box)'''),
    code('''\
        ge = first.baselines.get("ge", {})
        if "jpeg" in ge:
            display(slider_widget(ge["jpeg"].image, first.ours_decoded.image,
                                  f"JPEG q{ge['jpeg'].quality}, {ge['jpeg'].nbytes} bytes", f"ours, {first.ours.nbytes} bytes"))
        # a static view for renderers without widgets (e.g. GitHub): the split at 50 %
        compose_split(first.reference, first.ours_decoded.image, 0.5)'''),
    md("""
        ## Where detail was invented or lost
        First the crops with the largest error (`worst_crops`), then known hard details: the face in kodim04,
        the lettering on kodim20's aircraft, kodim08's windows and shop sign."""),
    code('''\
        from helpers.plots import crops_figure, worst_crops

        for name, comp in comparisons.items():
            ours = comp.ours_decoded.image
            corners = worst_crops(comp.reference, ours, n=3, size=CROP)
            panels = comp.images("ge")
            crops_figure(panels, corners, size=CROP, scale=1.8).suptitle(f"{name}: largest errors of ours", y=1.06);'''),
    code('''\
        from helpers.plots import corner_at

        for name, comp in comparisons.items():
            spots = DETAILS.get(name, [])
            if not spots:
                continue
            corners = [corner_at(comp.reference, fx, fy, CROP) for fx, fy, _ in spots]
            panels = comp.images("ge")
            crops_figure(panels, corners, size=CROP, scale=1.8).suptitle(
                f"{name}: " + ", ".join(label for *_, label in spots), y=1.1);'''),    md("""
        ## Invented vs lost detail, measured
        `metrics.detail_change` compares the high-frequency energy (Laplacian of the luma) of each 16x16 block
        with the original's: red blocks carry fine structure the original does not have (invented texture,
        ringing, block edges), blue blocks lost it (blur). `detail_summary` gives the share of blocks with at
        least twice (`invented`) or at most half (`lost`) the original's detail. PSNR cannot tell these apart.
        The classic codecs at this size mostly *remove* detail (blue: blur, flat blocks); the latent decoder
        keeps about the original *amount* of fine structure (white) while PSNR says it is not the *same*
        structure: texture replaced rather than removed, which is exactly what invented detail looks like."""),
    code('''\
        from helpers.metrics import detail_summary
        from helpers.plots import detail_maps_figure, invented_crops

        detail_rows = []
        for name, comp in comparisons.items():
            decoded = {k: v for k, v in comp.images("ge").items() if k != "original"}
            for label, img in decoded.items():
                detail_rows.append({"image": name, "codec": label, **detail_summary(comp.reference, img)})
            detail_maps_figure(comp.reference, decoded, size=2.6).suptitle(f"{name}: detail change", y=1.02)
        display(Markdown(markdown_table(detail_rows, columns=("image", "codec", "invented", "lost", "mean_log2"))))'''),
    code('''\
        for name, comp in comparisons.items():
            ours = comp.ours_decoded.image
            corners = invented_crops(comp.reference, ours, n=3, size=CROP)
            panels = comp.images("ge")
            crops_figure(panels, corners, size=CROP, scale=1.8).suptitle(
                f"{name}: where ours invented the most detail", y=1.06);'''),
]

# --------------------------------------------------------------------------------------------------
# 06 article figures
# --------------------------------------------------------------------------------------------------

NB06 = [
    header("06_article_figures", "06 · Regenerating the article's figures", """
        Rebuilds the article's figures from scratch into `FIG_DIR`:
        three **JPEG | WebP | SD** panels at matched size (sizes in the caption), the **latent as an RGBA
        picture**, the **VAE round trip** (ground truth, latent, decoded), the **quantization stages**, and a
        **hallucination** example (error map and worst crops).

        The article's own photos are not available, so the figures use Kodak test images instead
        (kodim04, kodim08, kodim23, kodim20 by default) at the article's 512x512 input size. With SD v1.4
        unavailable (offline), the figures come from the TAEF2 autoencoder and the captions say so."""),
    ("code", SETUP),
    params(P_MODEL, P_DATA, '''\
        FIG_DIR = os.environ.get("SDCOMP_FIG_DIR", "../results/figures")  # where the PNGs are written
        PANEL_IMAGES = os.environ.get("SDCOMP_IMAGES", "kodim04,kodim08,kodim23").split(",")  # the three panels
        ROUNDTRIP_IMAGE = "kodim23"
        HALLUCINATION_IMAGE = "kodim20"
        POLICY = "crop512"  # the article's 512x512 input
        TARGET_BYTES = int(os.environ.get("SDCOMP_TARGET_BYTES", "5000"))
        PANEL_CODECS = ["jpeg", "webp"]
        CODER = "zlib"  # the article's lossless stage
        DPI = 110''', P_DEVICE, P_SMOKE),
    code('''\
        if SMOKE:
            DPI = 60
            HALLUCINATION_IMAGE = PANEL_IMAGES[0]  # reuse a panel's encoding'''),
    code(LOAD_MODEL),
    code(f'''\
        from helpers.codec import CodecParams
        from helpers.images import list_images, load_image
        from helpers.plots import save_figure, show_images

        {DATA_FALLBACK_IN_CELL}
        fig_dir = Path(FIG_DIR)
        fig_dir.mkdir(parents=True, exist_ok=True)
        MODEL_LABEL = {{"CompVis/stable-diffusion-v1-4": "SD v1.4", "taef2": "TAEF2"}}.get(backend.model_id, backend.model_id)
        CODEC_LABEL = {{"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL"}}
        params = CodecParams(coder=CODER, policy=POLICY)
        written, captions = [], {{}}


        def save(fig, name, caption):
            written.append(save_figure(fig, fig_dir / name, dpi=DPI))
            captions[name] = caption
            print(f"{{name}}: {{caption}}")'''),
    md("## 1. JPEG | WebP | SD at the same size"),
    code('''\
        from helpers.report import compare_image

        comps = {}
        for path in list_images(DATA_DIR, PANEL_IMAGES):
            comp = compare_image(load_image(path), backend, path.stem, params, TARGET_BYTES, PANEL_CODECS, ("ge",),
                                 with_lpips=False)
            comps[path.stem] = comp
            res = comp.baselines["ge"]
            panels = {f"{CODEC_LABEL[codec]} q{r.quality}, {r.nbytes:,} B": r.image for codec, r in res.items()}
            panels[f"{MODEL_LABEL}, {comp.ours.nbytes:,} B"] = comp.ours_decoded.image
            caption = (f"{path.stem} ({comp.reference.size[0]}x{comp.reference.size[1]}): "
                       + " | ".join(f"{CODEC_LABEL[codec]} {r.nbytes:,} bytes" for codec, r in res.items())
                       + f" | {MODEL_LABEL} latents {comp.ours.nbytes:,} bytes")
            fig = show_images(panels, size=4, title=caption)
            save(fig, f"panels_{path.stem}.png", caption)'''),
    md("## 2. The latent as an RGBA picture, and 3. the VAE round trip"),
    code('''\
        from helpers.codec import decode_latents
        from helpers.plots import latent_as_rgba


        def comparison(name, codecs):
            # reuse a panel's encoding when the image is one of the panels
            if name in comps:
                return comps[name]
            path = list_images(DATA_DIR, [name])[0]
            return compare_image(load_image(path), backend, name, params, TARGET_BYTES, codecs, ("ge",), with_lpips=False)


        rt = comparison(ROUNDTRIP_IMAGE, PANEL_CODECS)
        reference, size = rt.reference, rt.reference.size
        z, q8 = rt.ours.latents, rt.ours.q8  # float latents and their 8-bit version
        c, h, w = z.shape
        rgba = latent_as_rgba(q8, (0, 1, 2, 3) if c >= 4 else tuple(range(c)))
        note = "" if c == 4 else f" (channels 0-3 of {c})"

        fig = show_images({f"{w}x{h} latent as RGBA{note}": rgba}, size=5)
        save(fig, "latent_rgba.png", f"{rt.name}: the {c}x{h}x{w} {MODEL_LABEL} latent, 8-bit, shown as RGBA{note}")

        decoded = decode_latents(backend, z).crop((0, 0, *size))
        fig = show_images({"ground truth": reference, f"latent{note}": rgba, "decoded": decoded}, size=4)
        save(fig, "vae_roundtrip.png",
             f"{rt.name}: ground truth, latent ({z.nbytes:,} bytes as float32), decoded by the {MODEL_LABEL} decoder")'''),
    md('''
        ## 4. Quantization stages
        The same latent after each stage; the last panel is the rate-controlled file of figure 1.'''),
    code('''\
        from helpers.codec import pack_payload, quantize_latents
        from helpers.metrics import psnr
        from helpers.quantize import apply_palette, unquantize_8bit

        ours = rt.ours
        k, method = ours.header.colors, ours.header.method
        pal, idx = quantize_latents(q8, method, k, 0.0)  # same palette size, no dithering
        images = {
            f"float32 latent\\n{z.nbytes:,} B": decoded,
            f"8-bit\\n{len(pack_payload(None, None, 'zlib', q8)):,} B (zlib)":
                decode_latents(backend, unquantize_8bit(q8, backend.quant_span)).crop((0, 0, *size)),
            f"{method} K={len(pal)}, no dither\\n{len(pack_payload(pal, idx, CODER)):,} B ({CODER})":
                decode_latents(backend, unquantize_8bit(apply_palette(pal, idx), backend.quant_span)).crop((0, 0, *size)),
            f"{method} K={k}, dithered\\n{ours.nbytes:,} B (.sdc file)": rt.ours_decoded.image,
        }
        images = {f"{label}, {psnr(reference, img):.1f} dB": img for label, img in images.items()}
        fig = show_images(images, size=3.6)
        save(fig, "quantization_stages.png", f"{rt.name}: float32 -> 8-bit -> {k}-colour palette without / with "
                                             f"dithering (bytes, PSNR); {MODEL_LABEL}")'''),
    md('''
        ## 5. Hallucination
        At a few kilobytes the decoder does not blur, it *invents*: the error map shows where (mean squared
        error per 16x16 block), the crops show what.'''),
    code('''\
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
        save(fig, "hallucination_crops.png", f"{comp.name}: the three 96x96 crops with the largest error")'''),
    md("## Written files"),
    code('''\
        (fig_dir / "captions.md").write_text(
            "# Figure captions\\n\\nKodak test images stand in for the article's photos.\\n\\n"
            + "".join(f"- `{name}`: {text}\\n" for name, text in captions.items()))
        for p in written:
            print(f"{p.name:32s} {p.stat().st_size / 1024:7.1f} KiB")'''),
]

NOTEBOOKS = {
    "01_load_weights": NB01,
    "02_vae_roundtrip": NB02,
    "03_latent_quantization": NB03,
    "04_unet_denoising": NB04,
    "05_comparison": NB05,
    "06_article_figures": NB06,
}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for i, (kind, src) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell.id = f"{name[:2]}-{i:02d}"  # stable ids: regenerating gives identical files
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name, NOTEBOOKS[name])) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare the committed notebooks with this script")
    args = ap.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = NB_DIR / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run python scripts/make_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
