"""Trial of a dynamically quantized (int8) TAEF2 decoder on ONNX Runtime against the float graphs (issue 19).

    python scripts/measure_onnx_int8.py [--images kodim01 ...] [--crop 512] [--out results/onnx_int8]

``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized per call; Conv becomes
ConvInteger) is applied to the decoder's tiled graphs ``dec_mid`` and ``dec_last`` (all but ~3 % of the decoder's
work; the GroupNorm blocks stay float). For each Kodak image, the central crop is encoded once by the float
ONNX encoder, and the same latents are decoded by the float and the int8 decoder: the largest pixel
difference (levels), the share of values that differ, PSNR against the original for both, and decoder wall /
CPU seconds per megapixel (best of ``--repeat`` runs; shared machine, load average recorded). Writes
``records.json`` and ``summary.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_IMAGES = ["kodim01", "kodim04", "kodim08", "kodim13", "kodim19", "kodim23"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", default=DEFAULT_IMAGES)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results" / "onnx_int8"))
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from PIL import Image

    from helpers.backends.onnx_runtime import load_taef2_onnx
    from helpers.images import to_nchw

    kodak = ROOT.parent / "shared" / "data" / "kodak"
    backend = load_taef2_onnx(ROOT.parent / "shared" / "weights" / "taef2")
    tmp = Path(tempfile.mkdtemp(prefix="int8-"))
    int8 = {}
    for name in ("dec_mid", "dec_last"):
        src = backend.folder / backend.manifest["graphs"][name]["file"]
        dst = tmp / f"{name}.int8.onnx"
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        int8[name] = ort.InferenceSession(
            str(dst), backend.settings.session_options(ort), providers=["CPUExecutionProvider"]
        )
    sizes = {n: (backend.folder / backend.manifest["graphs"][n]["file"]).stat().st_size for n in int8}
    sizes_q = {n: (tmp / f"{n}.int8.onnx").stat().st_size for n in int8}
    float_sessions = {n: backend.session(n) for n in int8}

    def decode(z, which):
        for n in int8:
            backend._sessions[n] = int8[n] if which == "int8" else float_sessions[n]
        best = None
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            px = backend.decode_uint8(z)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best = (wall, cpu) if best is None or wall < best[0] else best
        return px, best

    records = []
    for name in args.images:
        im = Image.open(kodak / f"{name}.png").convert("RGB")
        w, h = im.size
        c = args.crop
        ref = np.asarray(im.crop(((w - c) // 2, (h - c) // 2, (w + c) // 2, (h + c) // 2)))
        z = backend.encode_array(to_nchw(ref))
        load = os.getloadavg()[0]
        px_f, (wall_f, cpu_f) = decode(z, "float")
        px_q, (wall_q, cpu_q) = decode(z, "int8")
        diff = np.abs(px_f.astype(np.int16) - px_q)
        mp = c * c / 1e6
        rec = {
            "image": name,
            "crop": c,
            "max_level_diff": int(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "share_differing": float((diff > 0).mean()),
            "psnr_float": psnr(ref, px_f),
            "psnr_int8": psnr(ref, px_q),
            "float_wall_s_per_MP": wall_f / mp,
            "int8_wall_s_per_MP": wall_q / mp,
            "float_cpu_s_per_MP": cpu_f / mp,
            "int8_cpu_s_per_MP": cpu_q / mp,
            "load_avg": round(load, 2),
        }
        rec["psnr_change"] = rec["psnr_int8"] - rec["psnr_float"]
        print(json.dumps(rec), flush=True)
        records.append(rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mean = lambda k: float(np.mean([r[k] for r in records]))  # noqa: E731
    summary = {
        "max_level_diff": max(r["max_level_diff"] for r in records),
        "mean_psnr_change": mean("psnr_change"),
        "float_wall_s_per_MP": mean("float_wall_s_per_MP"),
        "int8_wall_s_per_MP": mean("int8_wall_s_per_MP"),
        "float_cpu_s_per_MP": mean("float_cpu_s_per_MP"),
        "int8_cpu_s_per_MP": mean("int8_cpu_s_per_MP"),
        "graph_bytes_float": sizes,
        "graph_bytes_int8": sizes_q,
        "onnxruntime": ort.__version__,
        "threads": backend.settings.intra_threads,
    }
    (out / "records.json").write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    lines = [
        "# int8 (dynamically quantized) TAEF2 decoder vs float, ONNX Runtime (issue 19)",
        "",
        f"`python scripts/measure_onnx_int8.py`: `quantize_dynamic` (QInt8 weights) on `dec_mid` and `dec_last`; "
        f"the same latents (float ONNX encoder, central {args.crop}x{args.crop} Kodak crops) decoded by both. "
        f"Decoder time = best of {args.repeat}, on the shared 2-core machine (load average per row).",
        "",
        "| image | max level diff | mean abs diff | values differing | PSNR float | PSNR int8 | change dB | "
        "float s/MP wall (CPU) | int8 s/MP wall (CPU) | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['image']} | {r['max_level_diff']} | {r['mean_abs_diff']:.2f} | {r['share_differing']:.1%} | "
            f"{r['psnr_float']:.2f} | {r['psnr_int8']:.2f} | {r['psnr_change']:+.2f} | "
            f"{r['float_wall_s_per_MP']:.2f} ({r['float_cpu_s_per_MP']:.2f}) | "
            f"{r['int8_wall_s_per_MP']:.2f} ({r['int8_cpu_s_per_MP']:.2f}) | {r['load_avg']:.1f} |"
        )
    lines += [
        "",
        f"Largest difference {summary['max_level_diff']} levels; mean PSNR change "
        f"{summary['mean_psnr_change']:+.2f} dB; decoder {summary['float_wall_s_per_MP']:.2f} s/MP float vs "
        f"{summary['int8_wall_s_per_MP']:.2f} s/MP int8 (wall), {summary['float_cpu_s_per_MP']:.2f} vs "
        f"{summary['int8_cpu_s_per_MP']:.2f} CPU s/MP. Graph sizes: {sizes} float, {sizes_q} int8.",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
