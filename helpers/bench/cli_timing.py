"""Timing of the real command line: ``python -m helpers.bench --cli``.

Runs ``python -m helpers encode`` / ``decode`` as subprocesses, for both runtimes (ONNX Runtime and PyTorch),
over square images of 256, 512, 1024 and 2048 pixels, and prints wall time, CPU time (user + sys of the child)
and peak RSS per stage and per megapixel. For reference, the same image as JPEG XL and AVIF (the same number
of bytes as our file) is decoded to PNG by Pillow in a subprocess (what ``djxl`` / ``avifdec`` would do).

* **Images**: 256 and 512 are centre crops of a Kodak image (kodim23); 1024 and 2048 are centre crops of a
  4000x3000 mosaic of four real photographs at native resolution from Debian's ``mate-backgrounds``
  (nature/: Aqua, Garden, LadyBird, YellowFlower, (c) 2008 Charles Barbin, GPL-2+), fetched with
  ``apt-get download`` into a temporary folder (never committed), as ``scripts/bench_large_photo.py`` does.
* **Settings**: every size is encoded with a fixed palette (``--colors 256``, default ``--coder arith``), so
  each stage's work is comparable across sizes; the 512x512 crop is also encoded at the issue's byte budget
  with the default method (``--method tc --target-bytes 5000``: rate control searches the transform coder's
  step, 17 range-coding trials).
* **Stages** come from the CLI's own stage log (``SDCOMP_TIMING``, :class:`helpers.cli.StageLog`): ``start``
  (process start until our code runs: the interpreter), ``imports`` (the CLI, codec, Pillow/numpy and the
  runtime: onnxruntime or torch), ``read`` (input image, or the .sdc file and its header), ``load`` (model
  weights or ONNX sessions), ``vae`` (the network), ``palette`` (k-means and rate control), ``entropy``
  (entropy coding or decoding), ``write`` (output file; decode: PNG encoding), ``exit`` (interpreter shutdown).
  The peak RSS of each run is the child's own peak (``VmHWM`` in its stage log, :func:`helpers.memory.run_child`;
  records written before carry the child's ``ru_maxrss``, see ``peak_rss`` in ``records.json``); the log also
  records which stage reached it.
* Each configuration runs ``--repeat`` times (``--repeat-large`` above 512x512); medians are reported.

Before the timed runs, one ONNX encode runs with an empty graph cache: the first run for a set of weights
exports the graphs with torch (reported as ``first run (export)``); every timed ONNX run finds them cached.

Output: ``--out`` (default ``results/cli_timing``): ``records.json`` (every run) and ``summary.md``
(``--report-only`` rewrites it from ``records.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ..memory import run_child
from .config import DEFAULT_DATA, ROOT

DEFAULT_SIZES = (256, 512, 1024, 2048)
DEFAULT_OUT = Path("results") / "cli_timing"
PHOTOS = ("Aqua", "Garden", "LadyBird", "YellowFlower")
PHOTO_PACKAGE = "mate-backgrounds"
PHOTO_LICENCE = "mate-backgrounds nature/ (Aqua, Garden, LadyBird, YellowFlower): (c) 2008 Charles Barbin, GPL-2+"
STAGE_ORDER = ("start", "imports", "read", "load", "vae", "palette", "entropy", "write", "exit")
TARGETS_512 = {"decode": (1.5, 300), "encode": (2.5, 400)}  # seconds, MB (10^6 bytes) of peak RSS
MB = 1e6 / 2**20  # MiB per MB


# ------------------------------------------------------------------------------------------
# test pictures
# ------------------------------------------------------------------------------------------


def fetch_photos(workdir: Path) -> list[Path]:
    """The four mate-backgrounds photographs, from the Debian package fetched with ``apt-get download``."""
    nature = workdir / "x" / "usr" / "share" / "backgrounds" / "mate" / "nature"
    if not all((nature / f"{n}.jpg").is_file() for n in PHOTOS):
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", PHOTO_PACKAGE], cwd=workdir, check=True, capture_output=True)
        deb = next(workdir.glob(f"{PHOTO_PACKAGE}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True)
    return [nature / f"{n}.jpg" for n in PHOTOS]


def mosaic(photos: list[Path], out: Path) -> Path:
    """A 4000x3000 mosaic of 2000x1500 centre crops of the four photographs (native resolution)."""
    from PIL import Image

    if out.is_file():
        return out
    canvas = Image.new("RGB", (4000, 3000))
    for i, p in enumerate(photos):
        im = Image.open(p).convert("RGB")
        w, h = im.size
        left, top = (w - 2000) // 2, (h - 1500) // 2
        canvas.paste(im.crop((left, top, left + 2000, top + 1500)), ((i % 2) * 2000, (i // 2) * 1500))
    canvas.save(out)
    return out


def timing_images(sizes, tmp: Path, data: Path, kodak: str, photos: Path) -> dict[int, tuple[Path, str]]:
    """size -> (PNG path, description): Kodak centre crops up to 512, mosaic centre crops above."""
    from PIL import Image

    out = {}
    big = None
    for s in sizes:
        if s <= 512:
            src = Image.open(data / f"{kodak}.png").convert("RGB")
            what = f"{kodak} centre crop"
        else:
            big = big or Image.open(mosaic(fetch_photos(photos), photos / "mosaic_4000x3000.png"))
            src, what = big, "mate-backgrounds mosaic centre crop"
        w, h = src.size
        if s > min(w, h):
            raise SystemExit(f"size {s} is larger than the source picture ({w}x{h})")
        left, top = (w - s) // 2, (h - s) // 2
        path = tmp / f"img_{s}.png"
        src.crop((left, top, left + s, top + s)).save(path)
        out[s] = (path, what)
    return out


# ------------------------------------------------------------------------------------------
# measuring one child process
# ------------------------------------------------------------------------------------------


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run ``cmd`` as a child (:func:`helpers.memory.run_child`): wall time (launch to exit), CPU (user + sys),
    peak RSS (MiB: the child's own VmHWM from its stage log, not ``ru_maxrss``, which inherits the parent's
    high-water mark across exec), stdout/stderr, the stage log and the launch time (``time.time()``)."""
    return run_child(cmd, env={"PYTHONPATH": str(ROOT), **(env or {})}, cwd=cwd)


def stages_of(run: dict, log: dict) -> dict:
    """Per-stage wall/CPU seconds and the peak RSS at each stage's end, from a run and its stage log."""
    marks = log["marks"]
    wall = {"start": marks[0]["t"] - run["launched"]}
    cpu = {"start": marks[0]["cpu"]}
    hwm = {"start": marks[0]["hwm_MiB"]}
    for a, b in zip(marks, marks[1:]):
        s = b["stage"]
        wall[s] = wall.get(s, 0.0) + b["t"] - a["t"]
        cpu[s] = cpu.get(s, 0.0) + b["cpu"] - a["cpu"]
        hwm[s] = max(hwm.get(s, 0.0), b["hwm_MiB"] or 0.0)
    wall["exit"] = max(0.0, run["wall_s"] - (marks[-1]["t"] - run["launched"]))
    cpu["exit"] = max(0.0, run["cpu_s"] - marks[-1]["cpu"])
    cw, cc = log.get("codec_wall", {}), log.get("codec_cpu", {})
    if "code" in wall:  # encode: palette search (k-means + rate control) and entropy coding
        pw = cw.get("palette", 0.0) + cw.get("quantize8", 0.0)
        pc = cc.get("palette", 0.0) + cc.get("quantize8", 0.0)
        wall["palette"], cpu["palette"] = pw, pc
        wall["entropy"], cpu["entropy"] = wall.pop("code") - pw, cpu.pop("code") - pc
        hwm["entropy"] = hwm["palette"] = hwm.pop("code")
    if "decode" in wall:  # decode: entropy decoding, then the network (+ denoising)
        ew, ec = cw.get("unpack", 0.0), cc.get("unpack", 0.0)
        wall["entropy"], cpu["entropy"] = ew, ec
        wall["vae"], cpu["vae"] = wall.pop("decode") - ew, cpu.pop("decode") - ec
        hwm["entropy"] = hwm["vae"] = hwm.pop("decode")
    peak_stage = next((s for s in STAGE_ORDER if s in hwm and hwm[s] >= max(hwm.values()) - 0.5), None)
    return {"wall": wall, "cpu": cpu, "hwm_MiB": hwm, "peak_stage": peak_stage}


PILLOW_DECODE = r"""
import json, os, sys, time
from helpers.memory import process_memory
marks = []
def mark(stage):
    marks.append({'stage': stage, 't': time.time(), 'cpu': time.process_time(), **process_memory()})
mark('main')
from PIL import Image
if sys.argv[1].endswith('.jxl'):
    import pillow_jxl
else:
    from PIL import AvifImagePlugin
mark('imports')
im = Image.open(sys.argv[1])
im.load()
mark('vae')
im.save(sys.argv[2], format='PNG')
mark('write')
open(os.environ['SDCOMP_TIMING'], 'w').write(json.dumps({'marks': marks}))
"""


def measure(cmd: list[str], tmp: Path, repeat: int, env: dict | None = None) -> list[dict]:
    """``repeat`` runs of ``cmd`` with a stage log each."""
    runs = []
    for _ in range(repeat):
        r = run_measured(cmd, env=env)
        log = r["log"]
        runs.append(
            {
                "wall_s": r["wall_s"],
                "cpu_s": r["cpu_s"],
                "peak_rss_MiB": r["peak_rss_MiB"],
                "stages": stages_of(r, log),
                **{k: log[k] for k in ("bytes", "colors", "coder", "backend") if k in log},
                "loadavg": round(os.getloadavg()[0], 2),
            }
        )
    return runs


def median_of(runs: list[dict]) -> dict:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    stages = sorted({s for r in runs for s in r["stages"]["wall"]}, key=lambda s: STAGE_ORDER.index(s))
    return {
        "wall_s": med([r["wall_s"] for r in runs]),
        "cpu_s": med([r["cpu_s"] for r in runs]),
        "peak_rss_MiB": med([r["peak_rss_MiB"] for r in runs]),
        "stage_wall": {s: med([r["stages"]["wall"].get(s, 0.0) for r in runs]) for s in stages},
        "stage_cpu": {s: med([r["stages"]["cpu"].get(s, 0.0) for r in runs]) for s in stages},
        "peak_stage": statistics.mode([r["stages"]["peak_stage"] for r in runs]),
    }


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


def run(args) -> dict:
    from PIL import Image

    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="sdcomp-clitiming-"))
    cache = tmp / "cache"  # a private graph cache: the first ONNX run exports into it
    env = {"SDCOMP_CACHE": str(cache)}
    images = timing_images(args.sizes, tmp, Path(args.data), args.kodak, Path(args.photos))
    load_start = os.getloadavg()[0]
    rows, first = [], None
    if "onnx" in args.runtimes:
        img = images[min(images)][0]
        r = measure(
            [
                py,
                "-m",
                "helpers",
                "encode",
                str(img),
                str(tmp / "first.sdc"),
                "--model",
                args.model,
                "--runtime",
                "onnx",
                "--colors",
                str(args.colors),
                "--coder",
                args.coder,
            ],
            tmp,
            1,
            env,
        )[0]
        first = {
            "size": min(images),
            "wall_s": r["wall_s"],
            "cpu_s": r["cpu_s"],
            "peak_rss_MiB": r["peak_rss_MiB"],
            "load_s": r["stages"]["wall"].get("load", 0.0),
        }
        print(
            f"first ONNX run (exports the graphs): {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
            f"{r['peak_rss_MiB']:.0f} MiB, of which load/export {first['load_s']:.1f} s",
            flush=True,
        )
    configs = [(s, f"K={args.colors}", ["--colors", str(args.colors), "--coder", args.coder]) for s in args.sizes]
    if args.budget and 512 in images:
        configs.insert(
            args.sizes.index(512) + 1, (512, f"{args.budget} B", ["--method", "tc", "--target-bytes", str(args.budget)])
        )
    for size, setting, opts in configs:
        img, what = images[size]
        repeat = args.repeat if size <= 512 else args.repeat_large
        mp = size * size / 1e6
        ours_bytes = None
        for rt in args.runtimes:
            sdc, png = tmp / f"{size}_{rt}.sdc", tmp / f"{size}_{rt}.png"
            enc = measure(
                [py, "-m", "helpers", "encode", str(img), str(sdc), "--model", args.model, "--runtime", rt, *opts],
                tmp,
                repeat,
                env,
            )
            dec = measure([py, "-m", "helpers", "decode", str(sdc), str(png), "--runtime", rt], tmp, repeat, env)
            ours_bytes = sdc.stat().st_size
            for op, runs in (("encode", enc), ("decode", dec)):
                row = {
                    "size": size,
                    "megapixels": mp,
                    "image": what,
                    "setting": setting,
                    "op": op,
                    "runtime": rt,
                    "bytes": ours_bytes,
                    "runs": runs,
                    "median": median_of(runs),
                }
                rows.append(row)
                print(_line(row), flush=True)
        if args.reference and setting.startswith("K="):
            from ..baselines import available_codecs, match_budget

            src = Image.open(img).convert("RGB")
            for codec in ("jxl", "avif"):
                if codec not in available_codecs():
                    print(f"{codec}: not available here, skipped", flush=True)
                    continue
                res = match_budget(src, codec, ours_bytes, rule="le")
                f = tmp / f"{size}.{codec}"
                f.write_bytes(res.data)
                runs = measure([py, "-c", PILLOW_DECODE, str(f), str(tmp / f"{size}_{codec}.png")], tmp, repeat)
                row = {
                    "size": size,
                    "megapixels": mp,
                    "image": what,
                    "setting": f"q{res.quality}",
                    "op": "decode",
                    "runtime": f"Pillow {codec.upper()}",
                    "bytes": res.nbytes,
                    "runs": runs,
                    "median": median_of(runs),
                }
                rows.append(row)
                print(_line(row), flush=True)
    doc = {
        "command": "python -m helpers.bench --cli " + " ".join(args.argv),
        "model": args.model,
        "coder": args.coder,
        "sizes": args.sizes,
        "peak_rss": "VmHWM",
        "first_onnx_run": first,
        "rows": rows,
        "machine": _machine(),
        "loadavg_start": round(load_start, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
        "photo_licence": PHOTO_LICENCE,
        "kodak": args.kodak,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps(doc, indent=1))
    text = summary(doc)
    (out / "summary.md").write_text(text)
    print(text)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _machine() -> dict:
    import platform

    info = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        import re

        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        info["cpu"] = m.group(1).strip() if m else platform.processor()
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("onnxruntime", "torch", "numpy", "pillow"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def _line(row: dict) -> str:
    m = row["median"]
    st = ", ".join(f"{s} {m['stage_wall'][s]:.2f}/{m['stage_cpu'][s]:.2f}" for s in m["stage_wall"])
    return (
        f"{row['size']}px {row['setting']} {row['op']} {row['runtime']}: {row['bytes']} B, wall {m['wall_s']:.2f} s, "
        f"CPU {m['cpu_s']:.2f} s, peak {m['peak_rss_MiB']:.0f} MiB (in {m['peak_stage']}); stages wall/CPU s: {st}"
    )


def _f(x: float, d: int = 2) -> str:
    return f"{x:.{d}f}"


#: how a records.json measured peak RSS: ``peak_rss`` in the document (absent: the first runs, ``ru_maxrss``)
PEAK_RSS_TEXT = {"ru_maxrss": "the child's `ru_maxrss`", "VmHWM": "the child's own peak (`VmHWM` in its stage log)"}


def summary(doc: dict) -> str:
    rows = doc["rows"]
    mach = doc["machine"]
    lines = [
        f"# CLI timing (`{doc['command'].strip()}`)",
        "",
        f"Real `python -m helpers encode/decode` subprocesses, model {doc['model']}, coder `{doc['coder']}`; "
        f"medians of the runs listed in `records.json`. Wall = process launch to exit; CPU = user + sys of the "
        f"child (all its threads); peak RSS = {PEAK_RSS_TEXT[doc.get('peak_rss', 'ru_maxrss')]} (MiB; MB = 10^6 bytes "
        f"in the targets). "
        f"Images: {doc['kodak']} centre crops up to 512 px, above that centre crops of a mosaic of real photos "
        f"({doc['photo_licence']}). Machine: {mach.get('cpu', '?')}, {mach['cpu_count']} cores, shared with "
        f"other developers' jobs (load average {doc['loadavg_start']} at the start, {doc['loadavg_end']} at the "
        f"end): wall times are inflated, CPU times much less. onnxruntime {mach.get('onnxruntime')}, "
        f"torch {mach.get('torch')}, numpy {mach.get('numpy')}, Pillow {mach.get('pillow')}.",
        "",
    ]
    first = doc.get("first_onnx_run")
    if first:
        lines += [
            f"First ONNX run for a set of weights ({first['size']}x{first['size']}, exports the ONNX graphs with "
            f"torch into the cache): {_f(first['wall_s'], 1)} s wall, {_f(first['cpu_s'], 1)} s CPU, "
            f"{first['peak_rss_MiB']:.0f} MiB peak; every later run finds them cached.",
            "",
        ]
    # targets at 512
    tgt = [r for r in rows if r["size"] == 512 and not r["runtime"].startswith("Pillow")]
    if tgt:
        lines += [
            "## 512x512 against the targets (process start to output written)",
            "",
            "| op | setting | runtime | wall s | CPU s | peak RSS MB | target | compute CPU s (VAE + palette + "
            "entropy) | fixed CPU s (start, imports, load, read, write, exit) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tgt:
            m = r["median"]
            tw, tm = TARGETS_512[r["op"]]
            if r["op"] == "encode" and not r["setting"].endswith(" B"):
                target = "-"
            else:
                ok = "met" if m["wall_s"] <= tw and m["peak_rss_MiB"] / MB <= tm else "not met"
                target = f"<= {tw} s, <= {tm} MB: {ok}"
            comp = sum(m["stage_cpu"].get(s, 0.0) for s in ("vae", "palette", "entropy"))
            fixed = sum(m["stage_cpu"].get(s, 0.0) for s in ("start", "imports", "load", "read", "write", "exit"))
            lines.append(
                f"| {r['op']} | {r['setting']} | {r['runtime']} | {_f(m['wall_s'])} | {_f(m['cpu_s'])} | "
                f"{m['peak_rss_MiB'] / MB:.0f} | {target} | {_f(comp)} | {_f(fixed)} |"
            )
        lines.append("")
    # scaling table
    lines += [
        "## All sizes: totals and per megapixel",
        "",
        "| size | setting | op | runtime | bytes | wall s | CPU s | peak RSS MiB | wall s/MP | CPU s/MP | "
        "VAE wall / CPU s/MP | VAE wall / CPU per MP vs 512 | peak RSS vs 512 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["op"], r["runtime"]): r for r in rows if r["size"] == 512 and r["setting"].startswith(("K=", "q"))}
    for r in rows:
        m, mp = r["median"], r["megapixels"]
        vw, vc = m["stage_wall"].get("vae", 0.0) / mp, m["stage_cpu"].get("vae", 0.0) / mp
        b = base.get((r["op"], r["runtime"]))
        rel_vae = rel_rss = "-"
        if b and r["setting"].startswith(("K=", "q")):
            bw = b["median"]["stage_wall"].get("vae", 0.0) / b["megapixels"]
            bc = b["median"]["stage_cpu"].get("vae", 0.0) / b["megapixels"]
            rel_vae = f"{vw / bw:.2f}x / {vc / bc:.2f}x" if bw and bc else "-"
            rel_rss = f"{m['peak_rss_MiB'] / b['median']['peak_rss_MiB']:.2f}x"
        lines.append(
            f"| {r['size']} | {r['setting']} | {r['op']} | {r['runtime']} | {r['bytes']} | {_f(m['wall_s'])} | "
            f"{_f(m['cpu_s'])} | {m['peak_rss_MiB']:.0f} | {_f(m['wall_s'] / mp)} | {_f(m['cpu_s'] / mp)} | "
            f"{_f(vw)} / {_f(vc)} | {rel_vae} | {rel_rss} |"
        )
    lines += [
        "",
        "## Stages: wall / CPU seconds (median), and where the peak RSS was reached",
        "",
        "| size | setting | op | runtime | " + " | ".join(STAGE_ORDER) + " | peak in |",
        "|---|---|---|---|" + "---|" * len(STAGE_ORDER) + "---|",
    ]
    for r in rows:
        m = r["median"]
        cells = [
            f"{_f(m['stage_wall'][s])} / {_f(m['stage_cpu'][s])}" if s in m["stage_wall"] else "-" for s in STAGE_ORDER
        ]
        lines.append(
            f"| {r['size']} | {r['setting']} | {r['op']} | {r['runtime']} | "
            + " | ".join(cells)
            + f" | {m['peak_stage']} |"
        )
    lines += [
        "",
        "Stages: start = launch until our code runs (interpreter); imports = CLI, codec, numpy/Pillow and "
        "the runtime (onnxruntime or torch); read = input image or .sdc file; load = weights / ONNX sessions; "
        "vae = the network (Pillow rows: the JXL/AVIF decode); palette = k-means palette and rate control; "
        "entropy = entropy coding / decoding; write = output file (decode: PNG encoding); exit = shutdown.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m helpers.bench --cli",
        description="Time the real CLI (encode/decode subprocesses) per stage, size and "
        "runtime, with Pillow's JPEG XL / AVIF decoding as a reference.",
    )
    ap.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES), help="square sides in pixels")
    ap.add_argument("--runtimes", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration up to 512x512 (median reported)")
    ap.add_argument("--repeat-large", type=int, default=1, help="runs per configuration above 512x512")
    ap.add_argument("--colors", type=int, default=256, help="fixed palette size of the per-size runs")
    ap.add_argument("--budget", type=int, default=5000, help="byte budget of the extra 512x512 run (0: none)")
    ap.add_argument("--coder", default="arith", choices=["zlib", "arith", "lzma"])
    ap.add_argument("--model", default="taef2")
    ap.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the Pillow JPEG XL / AVIF decoding reference",
    )
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Kodak folder (default ../shared/data/kodak)")
    ap.add_argument("--kodak", default="kodim23", help="Kodak image for the sizes up to 512")
    ap.add_argument(
        "--photos",
        default=str(Path(tempfile.gettempdir()) / "sdcomp-photos"),
        help="where the mate-backgrounds package is fetched to (a temporary folder)",
    )
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default results/cli_timing)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite summary.md from --out/records.json")
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.sizes = sorted(set(args.sizes))
    if args.report_only:
        doc = json.loads((Path(args.out) / "records.json").read_text())
        (Path(args.out) / "summary.md").write_text(summary(doc))
        print(f"wrote {Path(args.out) / 'summary.md'}")
        return 0
    run(args)
    return 0
