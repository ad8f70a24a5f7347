"""Large-photo benchmark: the real CLI (`python -m helpers encode/decode`) as subprocesses, wall time and peak RSS.

    python scripts/bench_large_photo.py                    # 512x512 .. 4000x3000, writes results/large_photo/
    python scripts/bench_large_photo.py --sizes 512 4000x3000 --out /tmp/lp

The test picture is a 4000x3000 mosaic of four real photographs at their native resolution (no upscaling):
2000x1500 crops of Aqua, Garden, LadyBird and YellowFlower from Debian's `mate-backgrounds` package
(nature/, (c) 2008 Charles Barbin, GPL-2+). The script fetches the package with `apt-get download`
into a temporary folder (nothing is committed). Smaller sizes are centre crops of the mosaic.
Peak RSS is the child's own peak (VmHWM from its stage log, :func:`helpers.memory.run_child`); "work s" is what the CLI reports after
loading the model (encode/decode proper), so per-megapixel figures show how the work scales.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the photographs, the mosaic and the measured child process are shared with `python -m helpers.bench --cli`
from helpers.bench.cli_timing import PHOTO_LICENCE as LICENCE  # noqa: E402
from helpers.bench.cli_timing import fetch_photos, mosaic, run_measured  # noqa: E402


def work_seconds(stdout: str) -> float:
    """The CLI's own timing (after model load): 'X.XXs' at the end of its summary line."""
    import re

    found = re.findall(r"(\d+\.\d+)s\b", stdout)
    return float(found[-1]) if found else float("nan")


def parse_size(text: str) -> tuple[int, int]:
    if "x" in text:
        w, h = text.split("x")
        return int(w), int(h)
    return int(text), int(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=["512", "1024", "2000x1500", "4000x3000"])
    ap.add_argument("--photos", default=str(Path(tempfile.gettempdir()) / "sdcomp-photos"))
    ap.add_argument("--out", default=str(ROOT / "results" / "large_photo"))
    ap.add_argument("--model", default="taef2")
    ap.add_argument("--extra", nargs="*", default=[], help="extra encode options, e.g. --coder arith")
    ap.add_argument(
        "--runtime",
        default="torch",
        choices=["torch", "onnx", "auto"],
        help="the CLI's --runtime (default torch: the committed results/large_photo figures)",
    )
    args = ap.parse_args(argv)

    work = Path(args.photos)
    big = mosaic(fetch_photos(work), work / "mosaic_4000x3000.png")
    src = Image.open(big)
    tmp = Path(tempfile.mkdtemp(prefix="sdcomp-lp-"))
    rows = []
    # fixed cost of a run (interpreter, imports, model load, file I/O): a 64x64 image, subtracted below
    src.crop((0, 0, 64, 64)).save(tmp / "tiny.png")
    rt = ["--runtime", args.runtime]
    fixed = {
        "encode": run_measured(
            [
                sys.executable,
                "-m",
                "helpers",
                "encode",
                str(tmp / "tiny.png"),
                str(tmp / "tiny.sdc"),
                "--model",
                args.model,
                *rt,
                *args.extra,
            ]
        )
    }
    fixed["decode"] = run_measured(
        [sys.executable, "-m", "helpers", "decode", str(tmp / "tiny.sdc"), str(tmp / "tiny.dec.png"), *rt]
    )
    print(
        json.dumps({k: {"wall_s": round(v["wall_s"], 2), "cpu_s": round(v["cpu_s"], 2)} for k, v in fixed.items()}),
        flush=True,
    )
    for spec in args.sizes:
        w, h = parse_size(spec)
        left, top = (4000 - w) // 2, (3000 - h) // 2
        img = tmp / f"photo_{w}x{h}.png"
        src.crop((left, top, left + w, top + h)).save(img)
        sdc, png = tmp / f"photo_{w}x{h}.sdc", tmp / f"photo_{w}x{h}.dec.png"
        enc = run_measured(
            [sys.executable, "-m", "helpers", "encode", str(img), str(sdc), "--model", args.model, *rt, *args.extra]
        )
        dec = run_measured([sys.executable, "-m", "helpers", "decode", str(sdc), str(png), *rt])
        assert Image.open(png).size == (w, h)
        mp = w * h / 1e6
        row = {"size": f"{w}x{h}", "megapixels": round(mp, 3), "bytes": sdc.stat().st_size}
        for name, r in (("encode", enc), ("decode", dec)):
            ws = work_seconds(r["stdout"])
            cpu_work = r["cpu_s"] - fixed[name]["cpu_s"]
            row[name] = {
                "wall_s": round(r["wall_s"], 2),
                "cpu_s": round(r["cpu_s"], 2),
                "work_s": round(ws, 2),
                "peak_rss_MiB": round(r["peak_rss_MiB"]),
                "wall_s_per_MP": round(r["wall_s"] / mp, 2),
                "work_s_per_MP": round(ws / mp, 2),
                "cpu_work_s_per_MP": round(cpu_work / mp, 2),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]
    load = os.getloadavg()[0]
    lines = [
        f"# Large-photo benchmark (`python scripts/bench_large_photo.py`, model {args.model}"
        f"{', ' + ' '.join(args.extra) if args.extra else ''})",
        "",
        f"Picture: 4000x3000 mosaic of four photographs at native resolution ({LICENCE}); smaller sizes are "
        f"centre crops. Real CLI subprocesses; peak RSS = the child's own peak (VmHWM); wall = process start to "
        f"exit; CPU = user + sys of the child; work CPU = CPU minus that of a 64x64 run (interpreter, imports, "
        f"model load: encode {fixed['encode']['cpu_s']:.1f} s, decode {fixed['decode']['cpu_s']:.1f} s CPU). "
        f"Machine: {os.cpu_count()} CPU cores, torch threads default, load average {load:.1f} at the end "
        f"(wall times are inflated by other processes; CPU times much less so).",
        "",
        "| size | MP | bytes | encode wall s | enc work CPU s/MP | enc peak RSS MiB | decode wall s | "
        "dec work CPU s/MP | dec peak RSS MiB | work CPU per MP vs first row (enc / dec) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, d = r["encode"], r["decode"]
        re_ = e["cpu_work_s_per_MP"] / base["encode"]["cpu_work_s_per_MP"]
        rd = d["cpu_work_s_per_MP"] / base["decode"]["cpu_work_s_per_MP"]
        lines.append(
            f"| {r['size']} | {r['megapixels']} | {r['bytes']} | {e['wall_s']} | {e['cpu_work_s_per_MP']} | "
            f"{e['peak_rss_MiB']} | {d['wall_s']} | {d['cpu_work_s_per_MP']} | {d['peak_rss_MiB']} | "
            f"{re_:.2f}x / {rd:.2f}x |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "records.json").write_text(
        json.dumps({"model": args.model, "extra": args.extra, "licence": LICENCE, "rows": rows}, indent=1)
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
