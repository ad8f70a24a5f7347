"""``python -m helpers.metrics --status`` (what runs here and why not) or ``--time`` (seconds per metric)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import guarded


def _pair(image: str, quality: int, size: int):
    import numpy as np

    from ..baselines import decode_bytes, encode_jpeg
    from ..images import load_image

    img = load_image(image)
    w, h = img.size
    s = min(size, w, h)
    left, top = (w - s) // 2, (h - s) // 2
    ref = img.crop((left, top, left + s, top + s))
    return np.asarray(ref), np.asarray(decode_bytes(encode_jpeg(ref, quality)))


def _status() -> int:
    from . import describe

    for key, d in describe().items():
        state = f"available  {d['library']}" if d["status"] == "available" else f"unavailable: {d['reason']}"
        print(f"{key:15s} {d['arrow'] or '·'} {state}")  # ·: a reported measure, no direction (detail retention)
    return 0


def _time(args) -> int:
    import os

    from . import METRICS, time_metrics

    a, b = _pair(args.image, args.quality, args.size)
    t = time_metrics(a, b, repeat=args.repeat)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.size}x{args.size} crop of {Path(args.image).name}, JPEG q={args.quality}; minimum of "
        f"{args.repeat} runs; load average {load1:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"{'metric':15s} {'first load s':>12s} {'wall s':>8s} {'cpu s':>8s}")
    for key, row in t.items():
        label = "all (default)" if key == "all" else f"{key} {METRICS[key].arrow}"
        if key == "all":
            print("-" * 46)
        print(f"{label:15s} {row['load']:12.3f} {row['wall']:8.3f} {row['cpu']:8.3f}")
    print(
        "wall: each metric alone (ssim and ms_ssim share one pass inside 'all'); cpu: this process only "
        "(a command-line tool's own CPU time is not counted); all: helpers.metrics.measure of the default set "
        "(lpips_vgg and dists only with CUDA), tools in parallel"
    )
    return 0


def main(argv=None) -> int:
    from ..cli import _default_kodak

    ap = argparse.ArgumentParser(prog="python -m helpers.metrics", description=__doc__)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--status", action="store_true", help="which metrics run here, and why the others do not")
    g.add_argument("--time", action="store_true", help="seconds per metric on one image pair")
    ap.add_argument("--image", default=str(_default_kodak() / "kodim23.png"), help="reference image")
    ap.add_argument("--quality", type=int, default=30, help="JPEG quality of the test image")
    ap.add_argument("--size", type=int, default=512, help="center crop side")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    return guarded(_status) if args.status else guarded(_time, args)


if __name__ == "__main__":
    sys.exit(main())
