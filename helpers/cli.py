"""Command line: ``python -m helpers {encode,decode,compare,demo} ...``.

Errors on bad input print one line (``error: ...``) and exit with status 2; no traceback.

``encode`` / ``decode`` import only what the chosen runtime needs (:mod:`helpers.backends.resolve`): with TAEF2 on
ONNX Runtime (``--runtime auto`` on a CPU) no torch, diffusers, transformers, matplotlib or metric library is
imported. With ``SDCOMP_TIMING=FILE`` they write per-stage wall/CPU seconds and peak RSS to FILE (JSON; read by
``python -m helpers.bench --cli``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from .backends.taef2_spec import encoder_names
from .bitstream import DEFAULT_MAX_PIXELS, MAX_COLORS, MAX_DENOISE_STEPS
from .errors import SDCError, guarded, is_out_of_memory, out_of_memory
from .memory import process_memory
from .methods import registry
from .methods.tc.precision import PRECISIONS
from .methods.tc.refine import SCHEDULES as EFFORT_SCHEDULES

DEFAULT_DEMO_IMAGES = ("kodim04", "kodim08", "kodim23")  # a face, fine architecture, smooth colour


def _default_kodak() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def _ranged(kind, lo=None, hi=None, lo_open=False, what=""):
    """argparse type: a number within [lo, hi] (or (lo, hi] with lo_open); the message quotes the limits."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        low_ok = lo is None or (v > lo if lo_open else v >= lo)
        if not low_ok or (hi is not None and v > hi):
            span = f"{'(' if lo_open else '['}{lo if lo is not None else ''}, {hi if hi is not None else ''}]"
            raise argparse.ArgumentTypeError(f"must be in {span}{what}, got {text}")
        return v

    return parse


def _add_model(p: argparse.ArgumentParser, default: str | None = "auto", runtime: bool = False):
    p.add_argument(
        "--model",
        default=default,
        help="hub id (e.g. CompVis/stable-diffusion-v1-4), diffusers SD1.x folder, folder with "
        "taef2_encoder.pth/taef2_decoder.pth, 'taef2', or 'auto' (SD v1.4 if available, else TAEF2)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    if runtime:
        p.add_argument(
            "--runtime",
            default="auto",
            choices=["auto", "torch", "onnx"],
            help="auto: ONNX Runtime for TAEF2 on a CPU (no torch import once its graphs are cached), "
            "PyTorch otherwise; torch: always PyTorch; onnx: ONNX Runtime (TAEF2, CPU only)",
        )
    p.add_argument(
        "--max-pixels",
        type=_ranged(int, 1),
        default=None,
        help=f"pixel cap for images read or decoded (default {DEFAULT_MAX_PIXELS:,} = 8192x8192, "
        f"or $SDCOMP_MAX_PIXELS)",
    )


def _add_codec(p: argparse.ArgumentParser):
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--target-bytes",
        type=_ranged(int, 1, 2**31),
        default=None,
        help="byte budget for the whole file (header included); tc searches its quantization step, "
        "the palette methods their palette size",
    )
    g.add_argument(
        "--colors",
        type=_ranged(int, 1, MAX_COLORS, what=" (libimagequant: 2..256)"),
        default=None,
        help=f"palette size K, 1..{MAX_COLORS} (libimagequant 2..256; default 256)",
    )
    p.add_argument(
        "--max-colors",
        type=_ranged(int, 2, MAX_COLORS, what=" (libimagequant stops at 256)"),
        default=1024,
        help=f"with --target-bytes: largest palette the search may use, 2..{MAX_COLORS} "
        f"(k-means; libimagequant stops at 256)",
    )
    p.add_argument(
        "--method",
        default=None,
        choices=registry.names(),
        help="tc (default; palette when --coder zlib/arith/lzma, --colors or --dither is given) = transform coding: decoder-aware wavelet + KLT, scalar quantization, range "
        "coding; palette (= auto) = the 2022 method: liq = libimagequant on RGBA (SD, 4 channels), "
        "kmeans = latent k-means (any C); raw = 8-bit latents + zlib",
    )
    g.add_argument(
        "--step",
        type=_ranged(float, 0, 1e6, lo_open=True),
        default=None,
        help="tc without --target-bytes: quantization step (default: the trained tables' middle rate)",
    )
    p.add_argument(
        "--effort",
        type=int,
        default=0,
        choices=sorted(EFFORT_SCHEDULES),
        help="tc: rate-distortion refinement against decoded pixels (needs PyTorch; 1 = 3 decoder "
        "passes, 2 = 8, 3 = 30; the decoder and the file format are unchanged)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="--effort on the CPU: the decoder passes in bf16 (about 3x faster where the CPU has AVX512-BF16 or "
        "AMX, as good), fp32, or auto (bf16 where the CPU runs it natively)",
    )
    p.add_argument(
        "--encoder",
        default=None,
        choices=encoder_names(),
        help="TAEF2's encoder: stock, or tc (trained for the tc coder, the default for tc on the stock TAEF2 "
        "decoder); files decode with the stock decoder either way",
    )
    p.add_argument(
        "--dither",
        type=_ranged(float, 0, 1),
        default=None,
        help="dithering strength 0..1 (default: 1.0 for liq as the original, 0 for kmeans: measured better)",
    )
    p.add_argument(
        "--coder",
        default=None,
        choices=registry.coder_names(),
        help="palette methods' lossless stage: zlib (the original, default), arith or lzma; tc always "
        "uses its range coder",
    )
    p.add_argument(
        "--policy",
        default="pad8",
        choices=["pad8", "crop512", "none"],
        help="pad8: any size, padded to a multiple of 8; crop512: center crop + resize to 512x512",
    )
    p.add_argument("--denoise", action="store_true", help="ask the decoder to denoise latents with the SD UNet")
    p.add_argument("--denoise-strength", type=_ranged(float, 0, 1, lo_open=True), default=0.04)
    p.add_argument("--denoise-steps", type=_ranged(int, 1, MAX_DENOISE_STEPS), default=66)


def _params(args):
    from .codec import CodecParams

    colors = args.max_colors if args.target_bytes else (args.colors or 256)
    method = args.method
    if method is None:  # today's palette flags keep meaning the 2022 method
        palette_flags = args.coder not in (None, "range") or args.colors is not None or args.dither is not None
        method = "palette" if palette_flags else registry.DEFAULT
    tc = method == "tc"
    if tc and args.coder not in (None, "range"):
        raise SDCError(
            f"--coder {args.coder} applies to the palette methods; tc has its own range coder: drop "
            f"--coder or pass --method palette"
        )
    if not tc and args.coder == "range":
        raise SDCError("--coder range is the tc method's coder: use --method tc, or zlib/arith/lzma for a palette")
    if not tc and (args.effort or args.step is not None):
        raise SDCError("--effort and --step apply to --method tc only")
    if tc and args.colors is not None:
        raise SDCError("--colors sets a palette size: pass --method palette, or --step/--target-bytes for tc")
    return CodecParams(
        method=method,
        colors=colors,
        dither=args.dither,
        coder="range" if tc else (args.coder or "zlib"),
        policy=args.policy,
        denoise=args.denoise,
        denoise_strength=args.denoise_strength,
        denoise_steps=args.denoise_steps,
        max_pixels=args.max_pixels,
        effort=args.effort,
        precision=args.precision,
        step=args.step,
        encoder=args.encoder,
    )


class StageLog:
    """Wall/CPU seconds and peak RSS at the end of each stage of one CLI run, written as JSON to
    ``$SDCOMP_TIMING`` when that is set (nothing is recorded otherwise). Each mark closes a stage:
    its wall and CPU seconds are the differences to the previous mark; ``hwm_MiB`` is the process's peak RSS
    so far (Linux ``VmHWM``, :func:`helpers.memory.process_memory`), ``rss_MiB`` its current RSS. The first
    mark is the moment ``python -m helpers`` started running our code (``started``), so the interpreter's own
    start-up is what precedes it."""

    def __init__(self, started: tuple[float, float] | None = None):
        self.path = os.environ.get("SDCOMP_TIMING") or None
        self.marks: list[dict] = []
        self.info: dict = {}
        if self.path:
            t, c = started if started else (time.time(), time.process_time())
            self.marks.append({"stage": "main", "t": t, "cpu": c, **process_memory()})

    def mark(self, stage: str) -> None:
        if self.path:
            self.marks.append({"stage": stage, "t": time.time(), "cpu": time.process_time(), **process_memory()})

    def write(self) -> None:
        if self.path:
            Path(self.path).write_text(json.dumps({"marks": self.marks, **self.info}, indent=1))


def _resolve_runtime(spec, args) -> tuple[str, Path | None]:
    """(runtime, TAEF2 folder or None) for ``--runtime``; imports that runtime's framework (the imports stage)."""
    from .backends.resolve import choose_runtime, taef2_dir_of

    choice = getattr(args, "runtime", "torch")
    if getattr(args, "effort", 0):  # gradients through the decoder: PyTorch only
        if choice == "onnx":
            raise SDCError(
                f"--effort {args.effort} back-propagates through the decoder, which needs PyTorch: "
                f"use --runtime torch (or auto), or --effort 0"
            )
        choice = "torch"
    taef2_dir = None if choice == "torch" else taef2_dir_of(spec)
    runtime = choose_runtime(choice, taef2_dir, args.device)
    if runtime == "onnx":
        from .backends.onnx_runtime import import_onnxruntime

        import_onnxruntime()
    else:
        from .backends import load  # noqa: F401 - imports torch
    return runtime, taef2_dir


def _load(spec, device, runtime: str = "torch", taef2_dir: Path | None = None, purpose: str | None = None, params=None):
    """The backend; with ``params`` (encode) the encoder they pick (:func:`helpers.codec.encoder_name`), on ONNX
    Runtime loaded directly (no sessions of an encoder that will not run)."""
    if runtime == "onnx":
        from .backends.onnx_runtime import load_taef2_onnx, release_freed_memory_early
        from .backends.taef2_spec import TAEF2_LATENT_CHANNELS

        release_freed_memory_early()  # a process-wide allocator setting: the CLI's choice, not the library's
        encoder, fallback = "stock", False
        if params is not None:
            from .codec import preferred_encoder

            offered = encoder_names()  # those of the stock TAEF2; the loader falls back where its decoder differs
            encoder = params.encoder or preferred_encoder(params.method, TAEF2_LATENT_CHANNELS, offered)
            fallback = params.encoder is None
        backend = load_taef2_onnx(taef2_dir, purpose=purpose, encoder=encoder, fallback=fallback)
    else:
        from .backends.load import load_backend

        backend = load_backend(spec, device=device)
    if params is not None:
        from .codec import encoder_backend

        backend = encoder_backend(backend, params)
    enc = f", encoder {backend.encoder_name}" if backend.encoder_name != "stock" else ""
    print(f"model: {backend.describe()}{enc} (loaded in {backend.load_seconds:.1f}s)", file=sys.stderr)
    return backend


def check_output(output, inputs=()) -> Path:
    """Refuse, before any work, an output that is a directory, sits in a missing folder, or is one of the
    inputs (also through a symlink or a hard link: same device and inode)."""
    out = Path(output)
    if out.is_dir():
        raise SDCError(f"output {out} is a directory: give a file name, e.g. {out / 'out.sdc'}")
    parent = out.parent
    if not parent.is_dir():
        raise SDCError(f"cannot write {out}: folder {parent} does not exist; create it first (mkdir -p {parent})")
    if out.exists() and not out.is_dir():
        try:
            read_only = not (out.stat().st_mode & 0o200) or not os.access(out, os.W_OK)
        except OSError:
            read_only = False
        if read_only:
            raise SDCError(
                f"output {out} exists and is read-only; refusing to replace it: choose another name, "
                f"or make it writable (chmod u+w {out}) or delete it first"
            )
        for src in inputs:
            try:
                same = os.path.samefile(src, out)
            except OSError:
                same = False
            if same:
                raise SDCError(f"output {out} is the input file {src}; refusing to overwrite it: choose another name")
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file in the output's folder, then rename it over ``path``
    (``os.replace``): a failed or interrupted run leaves the old file (or none), never a partial one.

    The file gets the permissions ``cp`` would give it: those of the file it replaces, else 0666 minus the
    umask (the temporary file itself is private, 0600, while it is written)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_umask()
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def memory_guard(what: str, size: tuple[int, int]):
    """Turn a failed allocation (MemoryError, ONNX Runtime's std::bad_alloc, torch's allocator errors) while
    ``what`` an image of ``size`` (width, height) into one :class:`helpers.errors.OutOfMemoryError` line."""
    try:
        yield
    except SDCError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(what, *size) from None
        raise


def cmd_encode(args) -> int:
    from .codec import check_params, encode, encode_latents
    from .images import apply_policy, load_image

    log = getattr(args, "stage_log", None) or StageLog()
    runtime, taef2_dir = _resolve_runtime(args.model, args)
    log.mark("imports")
    out = check_output(args.output, [args.input])
    params = _params(args)  # option mistakes before any work
    with memory_guard("reading", _image_size(args.input)):
        img = load_image(args.input, background=args.background, max_pixels=args.max_pixels)
    log.mark("read")
    backend = _load(args.model, args.device, runtime, taef2_dir, purpose="encode", params=params)
    log.mark("load")
    check_params(params, backend)  # before the network runs
    t0 = time.perf_counter()
    c0 = time.process_time()
    with memory_guard("encoding", img.size):
        latents = encode_latents(
            backend, apply_policy(img, params.policy, backend.downsample, params.max_pixels)[0], params.seed
        )
        vae = (time.perf_counter() - t0, time.process_time() - c0)
        log.mark("vae")
        enc = encode(img, backend, params, target_bytes=args.target_bytes, latents=latents)
    log.mark("code")
    write_atomic(out, lambda tmp: tmp.write_bytes(enc.data))
    log.mark("write")
    log.info.update(
        command="encode",
        runtime=runtime,
        backend=backend.describe(),
        bytes=enc.nbytes,
        pixels=enc.header.width * enc.header.height,
        colors=enc.header.colors,
        coder=enc.header.coder,
        codec_wall={"vae_encode": vae[0], **enc.timings},
        codec_cpu={"vae_encode": vae[1], **enc.cpu_timings},
    )
    h = enc.header
    w, hh = h.width, h.height
    setting = (
        f"tc step {enc.coded.step:.4g}" + (f" effort {params.effort}" if params.effort else "")
        if h.method == "tc"
        else f"{h.method} K={h.colors} {h.coder}"
    )
    print(
        f"{args.output}: {enc.nbytes} bytes ({8 * enc.nbytes / (w * hh):.4f} bpp), {w}x{hh}, "
        f"{setting}, latent {h.channels}x{h.latent_height}x{h.latent_width}, "
        f"{time.perf_counter() - t0:.2f}s"
        + (f", budget {args.target_bytes} ({args.target_bytes - enc.nbytes} bytes spare)" if args.target_bytes else "")
    )
    return 0


def _image_size(path) -> tuple[int, int]:
    """(width, height) from an image file's header, (0, 0) when unreadable (load_image then says why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return (0, 0)


LOSSLESS_OUTPUTS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM"}


def cmd_decode(args) -> int:
    from . import bitstream
    from .backends.resolve import check_model_spec
    from .backends.taef2_spec import tile_side
    from .codec import decode, decode_work
    from .images import save_pixels

    log = getattr(args, "stage_log", None) or StageLog()
    log.mark("imports")
    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        raise SDCError(f"file not found: {src}; check the path")
    check_output(out, [src])
    fmt = LOSSLESS_OUTPUTS.get(out.suffix.lower())
    if fmt is None:
        raise SDCError(f"decode writes lossless images only; '{out.name}' is not .png/.bmp/.tif/.ppm: use a .png name")
    limits = bitstream.Limits.default(args.max_pixels)
    data = src.read_bytes()
    header, _ = bitstream.unpack(data, limits)  # the whole header is checked before a model is loaded
    spec = args.model or check_model_spec(header.model_id, from_file=True)
    work = decode_work(header, tile_side())  # known from the header, before any model runs
    if work.large:
        print(f"note: {work.describe()}", file=sys.stderr)
    log.mark("read")
    runtime, taef2_dir = _resolve_runtime(spec, args)
    log.mark("imports")
    backend = _load(spec, args.device, runtime, taef2_dir, purpose="decode")
    if hasattr(backend, "progress"):  # tile progress bar with an ETA: large images only, on a terminal only
        backend.progress = None if work.large else False
    log.mark("load")
    t0 = time.perf_counter()
    size = (header.width, header.height)
    with memory_guard("decoding", size):
        dec = decode(data, backend, denoise=args.denoise, progress=True, limits=limits, release_denoiser=True)
        log.mark("decode")
        ran = getattr(backend, "extras", {}).get("last_denoise")
        if ran:
            per = ran["unet_step_seconds"]
            print(
                f"denoise: {ran['steps_run']} of {ran['schedule_steps']} steps (strength {ran['strength']:g}, "
                f"timesteps {ran['timesteps']}), UNet {sum(per) / max(len(per), 1):.2f} s/step",
                file=sys.stderr,
            )
            log.info["denoise"] = ran
        write_atomic(out, lambda tmp: save_pixels(tmp, dec.pixels, fmt))
    log.mark("write")
    log.info.update(
        command="decode",
        runtime=runtime,
        backend=backend.describe(),
        bytes=len(data),
        pixels=size[0] * size[1],
        colors=header.colors,
        coder=header.coder,
        codec_wall=dec.timings,
        codec_cpu=dec.cpu_timings,
    )
    print(f"{out}: {size[0]}x{size[1]} from {len(data)} bytes in {time.perf_counter() - t0:.2f}s")
    return 0


def _run_compare(paths, args, title):
    from .bench.compare import compare_files, write_report

    backend = _load(args.model, args.device)
    rules = ("ge", "le") if args.rule == "both" else (args.rule,)
    comps = compare_files(paths, backend, _params(args), args.target_bytes, args.codecs, rules)
    files = write_report(comps, args.out, backend, title)
    print(f"backend used: {backend.describe()}")
    for c in comps:
        sizes = ", ".join(f"{k} {v}" for k, v in c.sizes(rules[0]).items())
        print(f"{c.name}: {sizes} bytes; encode {c.seconds['encode']:.2f}s decode {c.seconds['decode']:.2f}s")
    for path in files.values():
        print(f"wrote {path}")
    return 0


def cmd_compare(args) -> int:
    return _run_compare([Path(p) for p in args.inputs], args, "Matched-size comparison")


def cmd_demo(args) -> int:
    from .images import list_images

    paths = list_images(args.data, args.images)
    return _run_compare(paths, args, "sdcomp demo: latent codec vs JPEG / WebP / AVIF / JPEG XL")


def _prog() -> str:
    """The command as the user typed it: ``python -m helpers`` or the installed script's name (``sdcomp``)."""
    name = Path(sys.argv[0]).stem
    return name if name == "sdcomp" else "python -m helpers"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=_prog(), description="Stable Diffusion latents as an image codec")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="image -> .sdc")
    p.add_argument("input")
    p.add_argument("output")
    _add_model(p, runtime=True)
    _add_codec(p)
    p.add_argument(
        "--background",
        default=None,
        help="flatten transparent images onto this colour (e.g. white, #808080); without it they are refused",
    )
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".sdc -> PNG")
    p.add_argument("input")
    p.add_argument("output")
    _add_model(p, default=None, runtime=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--denoise", dest="denoise", action="store_true", default=None, help="force UNet denoising")
    g.add_argument("--no-denoise", dest="denoise", action="store_false", help="skip the denoising the file asks for")
    p.set_defaults(func=cmd_decode)

    for name, help_ in (
        ("compare", "our codec vs JPEG/WebP/AVIF/JPEG XL at matched size, for given images"),
        ("demo", "the main job: compare on sample Kodak images, write figure + metrics table"),
    ):
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
        p.add_argument(
            "--rule",
            default="both",
            choices=["ge", "le", "both"],
            help="ge: baseline >= our size (the original rule); le: <= (fairer)",
        )
        p.set_defaults(func=cmd_compare if name == "compare" else cmd_demo)
        if name == "demo":
            # the article's setting: ~5 KB for a 512x512 image, with the default method (tc; --method palette
            # --coder zlib = the 2022 method)
            p.set_defaults(target_bytes=5000, policy="crop512")
    return ap


def main(argv: list[str] | None = None, started: tuple[float, float] | None = None) -> int:
    """``python -m helpers ...``; ``started``: (wall, CPU) time when the process reached our code (StageLog)."""
    log = StageLog(started)
    args = build_parser().parse_args(argv)
    args.stage_log = log
    rc = guarded(args.func, args)
    if rc == 0:
        log.write()
    return rc
