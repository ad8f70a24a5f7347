"""Command line: ``python -m helpers {encode,decode,compare,demo} ...``.

Errors on bad input print one line (``error: ...``) and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import SDCError

DEFAULT_DEMO_IMAGES = ("kodim04", "kodim08", "kodim23")  # a face, fine architecture, smooth colour


def _default_kodak() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def _add_model(p: argparse.ArgumentParser, default: str | None = "auto"):
    p.add_argument("--model", default=default,
                   help="hub id (e.g. CompVis/stable-diffusion-v1-4), diffusers SD1.x folder, folder with "
                        "taef2_encoder.pth/taef2_decoder.pth, 'taef2', or 'auto' (SD v1.4 if available, else TAEF2)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")


def _add_codec(p: argparse.ArgumentParser):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-bytes", type=int, default=None,
                   help="byte budget for the whole file (header included); the palette size is searched")
    g.add_argument("--colors", type=int, default=None, help="palette size K (default 256)")
    p.add_argument("--max-colors", type=int, default=1024,
                   help="with --target-bytes: largest palette the search may use (k-means; libimagequant stops at 256)")
    p.add_argument("--method", default="auto", choices=["auto", "liq", "kmeans", "raw"],
                   help="palette: liq = libimagequant on RGBA (SD, 4 channels), kmeans = latent k-means (any C)")
    p.add_argument("--dither", type=float, default=None,
                   help="dithering strength 0..1 (default: 1.0 for liq as the original, 0 for kmeans: measured better)")
    p.add_argument("--coder", default="zlib", help="lossless stage: zlib (the original) or arith")
    p.add_argument("--policy", default="pad8", choices=["pad8", "crop512", "none"],
                   help="pad8: any size, padded to a multiple of 8; crop512: center crop + resize to 512x512")
    p.add_argument("--denoise", action="store_true", help="ask the decoder to denoise latents with the SD UNet")
    p.add_argument("--denoise-strength", type=float, default=0.04)
    p.add_argument("--denoise-steps", type=int, default=66)


def _params(args):
    from .codec import CodecParams

    colors = args.max_colors if args.target_bytes else (args.colors or 256)
    return CodecParams(method=args.method, colors=colors, dither=args.dither, coder=args.coder,
                       policy=args.policy, denoise=args.denoise, denoise_strength=args.denoise_strength,
                       denoise_steps=args.denoise_steps)


def _load(spec, device):
    from .models import load_backend

    backend = load_backend(spec, device=device)
    print(f"model: {backend.describe()} (loaded in {backend.load_seconds:.1f}s)", file=sys.stderr)
    return backend


def cmd_encode(args) -> int:
    from .codec import encode
    from .images import load_image

    img = load_image(args.input)
    backend = _load(args.model, args.device)
    t0 = time.perf_counter()
    enc = encode(img, backend, _params(args), target_bytes=args.target_bytes)
    Path(args.output).write_bytes(enc.data)
    h = enc.header
    w, hh = h.width, h.height
    print(f"{args.output}: {enc.nbytes} bytes ({8 * enc.nbytes / (w * hh):.4f} bpp), {w}x{hh}, "
          f"{h.method} K={h.colors} {h.coder}, latent {h.channels}x{h.latent_height}x{h.latent_width}, "
          f"{time.perf_counter() - t0:.2f}s"
          + (f", budget {args.target_bytes} ({args.target_bytes - enc.nbytes} bytes spare)" if args.target_bytes else ""))
    return 0


def cmd_decode(args) -> int:
    from . import bitstream
    from .codec import decode

    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        raise SDCError(f"file not found: {src}; check the path")
    if out.suffix.lower() not in (".png", ".bmp", ".tif", ".tiff", ".ppm"):
        raise SDCError(f"decode writes lossless images only; '{out.name}' is not .png/.bmp/.tif/.ppm: use a .png name")
    data = src.read_bytes()
    header, _ = bitstream.unpack(data)
    backend = _load(args.model or header.model_id, args.device)
    t0 = time.perf_counter()
    dec = decode(data, backend, denoise=args.denoise, progress=True)
    dec.image.save(out)
    print(f"{out}: {dec.image.size[0]}x{dec.image.size[1]} from {len(data)} bytes in {time.perf_counter() - t0:.2f}s")
    return 0


def _run_compare(paths, args, title):
    from .report import compare_files, write_report

    backend = _load(args.model, args.device)
    rules = ("ge", "le") if args.rule == "both" else (args.rule,)
    comps = compare_files(paths, backend, _params(args), args.target_bytes, args.codecs, rules)
    files = write_report(comps, args.out, backend, title)
    print(f"backend used: {backend.describe()}")
    for c in comps:
        sizes = ", ".join(f"{k} {v}" for k, v in c.sizes(rules[0]).items())
        print(f"{c.name}: {sizes} bytes; encode {c.seconds['encode']:.2f}s decode {c.seconds['decode']:.2f}s")
    for kind, path in files.items():
        print(f"wrote {path}")
    return 0


def cmd_compare(args) -> int:
    return _run_compare([Path(p) for p in args.inputs], args, "Matched-size comparison")


def cmd_demo(args) -> int:
    from .images import list_images

    paths = list_images(args.data, args.images)
    return _run_compare(paths, args, "sdcomp demo: latent codec vs JPEG / WebP / AVIF / JPEG XL")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m helpers", description="Stable Diffusion latents as an image codec")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="image -> .sdc")
    p.add_argument("input")
    p.add_argument("output")
    _add_model(p)
    _add_codec(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".sdc -> PNG")
    p.add_argument("input")
    p.add_argument("output")
    _add_model(p, default=None)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--denoise", dest="denoise", action="store_true", default=None, help="force UNet denoising")
    g.add_argument("--no-denoise", dest="denoise", action="store_false", help="skip the denoising the file asks for")
    p.set_defaults(func=cmd_decode)

    for name, help_ in (("compare", "our codec vs JPEG/WebP/AVIF/JPEG XL at matched size, for given images"),
                        ("demo", "the main job: compare on sample Kodak images, write figure + metrics table")):
        p = sub.add_parser(name, help=help_)
        if name == "compare":
            p.add_argument("inputs", nargs="+")
            p.add_argument("--out", default="results/compare")
        else:
            p.add_argument("--data", default=str(_default_kodak()), help="image folder (default ../shared/data/kodak)")
            p.add_argument("--images", nargs="*", default=list(DEFAULT_DEMO_IMAGES))
            p.add_argument("--out", default="results/demo")
        _add_model(p)
        _add_codec(p)
        p.add_argument("--codecs", nargs="*", default=None, help="baselines (default: all available)")
        p.add_argument("--rule", default="both", choices=["ge", "le", "both"],
                       help="ge: baseline >= our size (the original rule); le: <= (fairer)")
        p.set_defaults(func=cmd_compare if name == "compare" else cmd_demo)
        if name == "demo":
            # the article's setting: ~5 KB for a 512x512 image; our stronger coder by default (--coder zlib = original)
            p.set_defaults(target_bytes=5000, policy="crop512", coder="arith")
    return ap


def guarded(func, *args, interrupted: str = "interrupted"):
    """Run ``func(*args)``; a user-facing SDCError becomes one ``error: ...`` line and exit status 2."""
    try:
        return func(*args)
    except SDCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)
