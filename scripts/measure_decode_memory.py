"""Peak RSS and wall/CPU time of a CLI decode against image size, both runtimes (issue 19).

    python scripts/measure_decode_memory.py [--sizes 256 512 ... 8192] [--runtimes onnx torch] [--out DIR]

For each size a raw-method .sdc file is built from real TAEF2 latents (kodim23's central 512x512 crop,
mirrored and tiled to the size: the decoder's work and memory do not depend on the content), then
``python -m helpers decode f.sdc out.png --runtime R`` runs as a subprocess (:func:`helpers.memory.run_child`):
its CPU seconds, and its peak RSS from its stage log (Linux VmHWM at each stage: the child's own peak after exec;
``ru_maxrss`` would also count the pages of the forked parent, which holds a PyTorch model). ONNX runs go under an
address-space limit (RLIMIT_AS, default 2.5 GiB, the issue's); PyTorch maps more virtual memory than that at
import, so its runs have none. Writes ``records.json`` and ``summary.md`` into ``--out`` (default
results/decode_memory), after every run, with the load average beside each figure (the machine is shared: wall
times are noisy).

The bound checked: peak RSS <= B + 12 bytes per pixel + the 8-bit output (3 bytes per pixel). B is a stated
constant per runtime: the runtime, the weights and one tile's activations. ONNX Runtime: 400 MiB (1024-pixel
tiles whose full-resolution layers run in 256-pixel inner tiles). PyTorch: 2048 MiB (about 600 MiB of
runtime plus a 1168-pixel halo tile of 64-channel activations run in one piece). The 12 bytes per pixel are
latent-resolution state (1/64 of the pixels): float latents (128 B per latent sample), the 8-bit latents
(32 B) and two 64-channel feature maps (512 B) = 672 B per latent sample = 10.5 B per pixel.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.memory import run_child  # noqa: E402

BYTES_PER_PIXEL_STATE = 12
BASE_MIB = {"onnx": 400, "torch": 2048}  # B: runtime + weights + one tile's activations (see the docstring)


def _latent_file(size: int, folder: Path) -> Path:
    from PIL import Image

    from helpers import bitstream
    from helpers.backends.taef2 import load_taef2
    from helpers.images import to_nchw
    from helpers.methods import registry  # noqa: F401 - hands the methods to the container
    from helpers.methods.palette.quantize import quantize_8bit

    path = folder / f"latents_{size}.sdc"
    if path.exists():
        return path
    backend = load_taef2(ROOT.parent / "shared" / "weights" / "taef2", device="cpu")
    im = Image.open(ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png").convert("RGB")
    w, h = im.size
    crop = im.crop(((w - 512) // 2, (h - 512) // 2, (w + 512) // 2, (h + 512) // 2))
    z = backend.encode_array(to_nchw(crop))[0]  # (32, 64, 64)
    tile = np.concatenate([z, z[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[:, :, ::-1]], axis=2)  # mirrored: no seams
    n = size // 8
    reps = -(-n // tile.shape[1])
    big = np.tile(tile, (1, reps, reps))[:, :n, :n]
    q8 = quantize_8bit(np.ascontiguousarray(big), backend.quant_span)
    import zlib

    header = bitstream.Header(
        method="raw",
        coder="zlib",
        model_id="taef2",
        fingerprint=backend.fingerprint,
        width=size,
        height=size,
        channels=32,
        latent_height=n,
        latent_width=n,
        quant_span=float(backend.quant_span),
        colors=0,
        policy="pad8",
        dithered=False,
    )
    path.write_bytes(bitstream.pack(header, zlib.compress(np.ascontiguousarray(q8).tobytes(), 6)))
    return path


def _run(src: Path, runtime: str, as_limit: int | None, folder: Path) -> dict:
    out = folder / f"out_{runtime}.png"
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}

    def limit():
        if as_limit:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    load0 = os.getloadavg()[0]
    r = run_child(
        [sys.executable, "-m", "helpers", "decode", str(src), str(out), "--runtime", runtime],
        env=env,
        cwd=ROOT,
        preexec_fn=limit,
        check=False,
    )
    rec = {
        "runtime": runtime,
        "rc": r["rc"],
        "wall_s": round(r["wall_s"], 2),
        "cpu_s": round(r["cpu_s"], 2),
        # the child's own peak since exec (VmHWM in its stage log, helpers.memory.run_child); None on failure
        "peak_rss_MiB": None if r["peak_rss_MiB"] is None else round(r["peak_rss_MiB"], 1),
        "as_limit_GiB": round(as_limit / 2**30, 2) if as_limit else None,
        "load_avg_start": round(load0, 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "stderr_tail": r["stderr"].strip().splitlines()[-2:],
        "stdout": r["stdout"].strip(),
    }
    if r["rc"] == 0 and r["log"]:
        rec["stages"] = {m["stage"]: round(m["hwm_MiB"], 1) for m in r["log"]["marks"]}
        rec["decode_wall_s"] = round(sum(r["log"]["codec_wall"].values()), 2)
    out.unlink(missing_ok=True)
    return rec


def _summary(records: list[dict], base: dict) -> str:
    lines = [
        "# Decode memory and time against size (issue 19)",
        "",
        "`python scripts/measure_decode_memory.py`: `python -m helpers decode` of a raw-method file of real TAEF2 "
        "latents (kodim23 crop, mirrored and tiled), as a subprocess; peak RSS = the child's VmHWM (its stage log, `SDCOMP_TIMING`). "
        "ONNX Runtime runs under an address-space limit (RLIMIT_AS) where shown. Shared 2-core machine: wall "
        "times depend on the other jobs (load average shown); CPU seconds are the steadier figure.",
        "",
        f"Bound: peak RSS <= B + {BYTES_PER_PIXEL_STATE} B/pixel (latent-resolution state) + 3 B/pixel (the 8-bit "
        f"output); B = runtime, weights and one tile's activations: {BASE_MIB['onnx']} MiB for ONNX Runtime "
        f"(1024-pixel tiles, 256-pixel inner tiles at full resolution), {BASE_MIB['torch']} MiB for PyTorch "
        f"(1024-pixel tiles with 72-pixel halos run in one piece).",
        "",
        "| size | runtime | exit | wall s | CPU s | CPU s / MP | peak RSS MiB | 8-bit output MiB | bound MiB | "
        "within | AS limit | load avg (start/end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        px = r["size"] ** 2
        out_mib = px * 3 / 2**20
        r0 = base.get(r["runtime"])
        bound = (r0 + (BYTES_PER_PIXEL_STATE * px) / 2**20 + out_mib) if r0 else None
        r["bound_MiB"] = round(bound, 1) if bound else None
        within = "-" if bound is None or r["rc"] != 0 else ("yes" if r["peak_rss_MiB"] <= bound else "**no**")
        lines.append(
            f"| {r['size']}x{r['size']} | {r['runtime']} | {r['rc']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['cpu_s'] / (px / 1e6):.1f} | {r['peak_rss_MiB']:.0f} | {out_mib:.0f} | "
            f"{'-' if bound is None else f'{bound:.0f}'} | {within} | "
            f"{'-' if not r['as_limit_GiB'] else str(r['as_limit_GiB']) + ' GiB'} | "
            f"{r['load_avg_start']:.1f} / {r['load_avg_end']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--runtimes", nargs="+", default=["onnx", "torch"])
    ap.add_argument("--as-limit-gib", type=float, default=2.5, help="RLIMIT_AS for ONNX runs (0: none)")
    ap.add_argument("--out", default=str(ROOT / "results" / "decode_memory"))
    ap.add_argument("--work", default=None, help="folder for the .sdc files (default: a temporary one)")
    ap.add_argument("--merge", nargs="*", default=[], help="records.json files of other runs to add (then report)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        records_path = out / "records.json"
        records = json.loads(records_path.read_text())["records"] if records_path.exists() else []
        for f in args.merge:
            records += json.loads(Path(f).read_text())["records"]
        _write(out, records)
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="decode-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.json"
    records = json.loads(records_path.read_text())["records"] if records_path.exists() else []
    done = {(r["size"], r["runtime"]) for r in records}
    for runtime in args.runtimes:
        for size in sorted(args.sizes):
            if (size, runtime) in done:
                continue
            src = _latent_file(size, work)
            limit = int(args.as_limit_gib * 2**30) if runtime == "onnx" and args.as_limit_gib else None
            rec = {"size": size, **_run(src, runtime, limit, work)}
            print(json.dumps(rec), flush=True)
            records.append(rec)
            _write(out, records)
    return 0


def _write(out: Path, records: list[dict]) -> None:
    records.sort(key=lambda r: (r["runtime"], r["size"]))
    text = _summary(records, BASE_MIB)
    (out / "records.json").write_text(
        json.dumps(
            {
                "records": records,
                "cpus": os.cpu_count(),
                "bytes_per_pixel_state": BYTES_PER_PIXEL_STATE,
                "base_MiB": BASE_MIB,
            },
            indent=1,
        )
    )
    (out / "summary.md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
