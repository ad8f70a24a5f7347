"""Cost of the 2022 method at SD v1.4's full size, on the random-weight stand-in (helpers.backends.sd14), on CPU.

    python scripts/measure_sd_fullsize.py [--out results/sd_fullsize] [--image ../shared/data/kodak/kodim23.png]

Writes ``summary.md`` and ``results.json``: per stage (stand-in build, load, VAE encode, 8-bit, palette, pack,
tc coding, denoiser load, each UNet step, VAE decode) wall seconds, CPU seconds and peak RSS (the process's
high-water mark, reset before each stage through ``/proc/self/clear_refs``), parameter counts per component,
file sizes (palette vs tc with inline tables at the palette file's size and at tc's default step), and the
real CLI (``python -m helpers encode/decode`` subprocesses: wall time and peak RSS per process).

The weights are RANDOM: the pictures are noise. Only cost and plumbing are measured; latent errors are given
to compare the two latent coders at equal bytes on a 4-channel latent, not as image quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.memory import process_memory, reset_peak, run_child  # noqa: E402


class Stages:
    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, fn, note: str = ""):
        reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = process_memory()
        self.rows.append(
            {
                "stage": name,
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "peak_rss_MiB": round(m["hwm_MiB"]),
                "rss_after_MiB": round(m["rss_MiB"]),
                "note": note,
            }
        )
        print(f"{name}: {wall:.2f} s wall, {cpu:.2f} s CPU, peak {m['hwm_MiB']:.0f} MiB {note}", flush=True)
        return value


def _cli(args: list[str]) -> dict:
    r = run_child(
        [sys.executable, "-m", "helpers", *args, "--device", "cpu"],
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)},
    )
    log = r["log"]
    marks = log["marks"]
    return {
        "command": " ".join(["python -m helpers", *args]),
        "wall_s": round(r["wall_s"], 2),
        "peak_rss_MiB": round(r["peak_rss_MiB"]),
        "stages_s": {b["stage"]: round(b["t"] - a["t"], 2) for a, b in zip(marks, marks[1:])},
        "codec_wall_s": {k: round(v, 3) for k, v in log.get("codec_wall", {}).items()},
        "denoise": log.get("denoise"),
        "stderr_tail": r["stderr"].strip().splitlines()[-1],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "sd_fullsize"))
    ap.add_argument("--image", default=str(ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"))
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess runs")
    ap.add_argument("--report-only", action="store_true", help="rewrite summary.md from results.json (adds FLOPs)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        result = json.loads((out / "results.json").read_text())
        result["flops"] = flops()
        (out / "results.json").write_text(json.dumps(result, indent=1))
        (out / "summary.md").write_text(_markdown(result))
        return 0
    load0 = os.getloadavg()

    import numpy as np
    import torch

    from helpers.backends import sd14
    from helpers.backends.denoise import denoise_latents
    from helpers.backends.load import load_backend
    from helpers.backends.torch_base import parameter_count
    from helpers.codec import CodecParams, decode_latents, encode, encode_latents
    from helpers.images import apply_policy, load_image

    st = Stages()
    folder = sd14.default_dir()
    reused = sd14.is_complete(folder)
    st.run(
        "stand-in build" + (" (reused)" if reused else ""),
        lambda: sd14.build(folder),
        "seeded random weights, fp32 safetensors",
    )
    backend = st.run(
        "load VAE",
        lambda: load_backend(str(folder), device="cpu"),
        "safetensors are memory-mapped: pages are read on first use",
    )
    img = load_image(args.image)
    model_img = apply_policy(img, "crop512", backend.downsample, None)[0]
    latents = st.run("VAE encode 512x512", lambda: encode_latents(backend, model_img, 0))
    pal = st.run(
        "palette file (8-bit + libimagequant 256 + zlib)",
        lambda: encode(
            img,
            backend,
            CodecParams(method="liq", colors=256, coder="zlib", policy="crop512", denoise=True),
            latents=latents,
        ),
        "stages below from the codec's own timings",
    )
    for k in ("quantize8", "palette", "pack"):
        st.rows.append(
            {
                "stage": f"  {k}",
                "wall_s": round(pal.timings.get(k, 0.0), 4),
                "cpu_s": round(pal.cpu_timings.get(k, 0.0), 4),
                "peak_rss_MiB": None,
                "rss_after_MiB": None,
                "note": "inside the palette file stage",
            }
        )
    tc_same = st.run(
        "tc file at the palette file's size",
        lambda: encode(
            img,
            backend,
            CodecParams(method="tc", coder="range", policy="crop512", denoise=True),
            target_bytes=pal.nbytes,
            latents=latents,
        ),
        "inline tables (no trained tables for this model)",
    )
    tc_def = st.run(
        "tc file at its default rate",
        lambda: encode(
            img, backend, CodecParams(method="tc", coder="range", policy="crop512", denoise=True), latents=latents
        ),
    )
    parts = st.run("load UNet + CLIP text encoder + scheduler", backend.denoiser)
    z_pal = pal.decoder_latent()
    z_dn = st.run(
        "denoise (3 of 66 steps, incl. empty-prompt CLIP)",
        lambda: denoise_latents(backend, torch.from_numpy(z_pal)[None], progress=False)[0].numpy(),
    )
    ran = backend.extras["last_denoise"]
    for i, (t, s) in enumerate(zip(ran["timesteps"], ran["unet_step_seconds"])):
        st.rows.append(
            {
                "stage": f"  UNet step {i + 1} (t={t})",
                "wall_s": round(s, 3),
                "cpu_s": None,
                "peak_rss_MiB": None,
                "rss_after_MiB": None,
                "note": "inside the denoise stage",
            }
        )
    counts = {
        "vae": parameter_count(backend.vae),
        "unet": parameter_count(parts["unet"]),
        "text_encoder": parameter_count(parts["text_encoder"]),
    }
    del parts  # the backend's reference is the only one left: release_denoiser frees the weights
    st.run("free UNet + text encoder", backend.release_denoiser, "peak = RSS before freeing; see RSS after")
    decoded = st.run("VAE decode 512x512", lambda: decode_latents(backend, z_dn))
    assert decoded.size == (512, 512)
    load1 = os.getloadavg()

    def rmse(a, b):
        return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))

    tc_inline = 2 * 4 + 2 * 4 * 4 + (3 * tc_same.coded.levels + 1) * 4  # mu, A (float16), base (int8): tcoder
    sizes = {
        "palette_bytes": pal.nbytes,
        "palette_colors": pal.header.colors,
        "tc_same_size_bytes": tc_same.nbytes,
        "tc_same_size_step": round(float(tc_same.coded.step), 4),
        "tc_default_bytes": tc_def.nbytes,
        "tc_default_step": round(float(tc_def.coded.step), 4),
        "tc_inline_tables_bytes": tc_inline,
        "tc_wavelet_levels": tc_same.coded.levels,
        "latent_rmse_palette": round(rmse(z_pal, latents), 4),
        "latent_rmse_tc_same_size": round(rmse(tc_same.decoder_latent(), latents), 4),
        "latent_rmse_tc_default": round(rmse(tc_def.decoder_latent(), latents), 4),
        "latent_std": round(float(np.std(latents)), 4),
    }
    cli = []
    if not args.no_cli:
        del backend
        import gc

        gc.collect()
        tmp = out / ".tmp"
        tmp.mkdir(exist_ok=True)
        m = str(folder)
        runs = [
            [
                "encode",
                args.image,
                str(tmp / "p.sdc"),
                "--model",
                m,
                "--method",
                "palette",
                "--policy",
                "crop512",
                "--denoise",
            ],
            ["decode", str(tmp / "p.sdc"), str(tmp / "p.png"), "--model", m],
            [
                "encode",
                args.image,
                str(tmp / "t.sdc"),
                "--model",
                m,
                "--method",
                "tc",
                "--policy",
                "crop512",
                "--denoise",
            ],
            ["decode", str(tmp / "t.sdc"), str(tmp / "t.png"), "--model", m, "--no-denoise"],
        ]
        for r in runs:
            cli.append(_cli(r))
            print(cli[-1]["command"], cli[-1]["wall_s"], "s", cli[-1]["peak_rss_MiB"], "MiB", flush=True)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    load2 = os.getloadavg()
    result = {
        "note": (
            "SD v1.4 architecture with RANDOM weights (helpers.backends.sd14): pictures are noise; cost and "
            "plumbing only"
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "loadavg_start": [round(v, 2) for v in load0],
            "loadavg_after_in_process": [round(v, 2) for v in load1],
            "loadavg_end": [round(v, 2) for v in load2],
            "shared": "2-core machine shared with other engineers' jobs",
        },
        "standin": {
            "folder_hash": sd14.config_hash(),
            "parameters": counts,
            "total_parameters": sum(counts.values()),
            "disk_bytes": sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()),
        },
        "image": Path(args.image).name + " (crop512)",
        "stages": st.rows,
        "denoise": ran,
        "sizes": sizes,
        "cli": cli,
        "flops": flops(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "summary.md").write_text(_markdown(result))
    print(f"wrote {out / 'summary.md'} and {out / 'results.json'}")
    return 0


def flops() -> dict:
    """Floating-point operations of one pass at 512x512 (torch's FlopCounterMode on the meta device: no weights,
    no compute): VAE encode, VAE decode, one UNet step (batch 1, no classifier-free guidance)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from helpers.backends import sd14

    c = sd14.configs()
    out = {}
    with torch.device("meta"), torch.no_grad():
        vae, unet = AutoencoderKL.from_config(c["vae"]), UNet2DConditionModel.from_config(c["unet"])
        x, z, e = torch.randn(1, 3, 512, 512), torch.randn(1, 4, 64, 64), torch.randn(1, 77, 768)
        for name, fn in (
            ("vae_encode", lambda: vae.encode(x)),
            ("vae_decode", lambda: vae.decode(z)),
            ("unet_step", lambda: unet(z, 31, encoder_hidden_states=e)),
        ):
            with FlopCounterMode(display=False) as counter:
                fn()
            out[name] = int(counter.get_total_flops())
    return out


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def _markdown(r: dict) -> str:
    m, s, p = r["machine"], r["sizes"], r["standin"]["parameters"]
    lines = [
        "# SD v1.4 at full size on CPU: cost and plumbing (random weights)",
        "",
        "**The weights are random** (`helpers.backends.sd14`: SD v1.4's published VAE / UNet / CLIP text encoder / PNDM "
        "configurations, seeded random weights): the decoded pictures are noise. Only time, memory, shapes and "
        "file sizes are measured here; the latent errors below compare the two latent coders at equal bytes on a "
        "4-channel latent, they say nothing about image quality.",
        "",
        f"Made by `python scripts/measure_sd_fullsize.py` on {m['cpus']} CPU cores ({m['torch_threads']} torch threads), "
        f"fp32, {r['image']}. The machine was **shared** with other engineers' jobs: load average "
        f"{m['loadavg_start'][0]} at the start, {m['loadavg_after_in_process'][0]} after the in-process stages, "
        f"{m['loadavg_end'][0]} at the end (1-minute averages), so wall times are inflated; CPU seconds are steadier.",
        "",
        f"Parameters: UNet {p['unet']:,}, VAE {p['vae']:,}, CLIP text encoder {p['text_encoder']:,}; total "
        f"{r['standin']['total_parameters']:,} ({r['standin']['disk_bytes'] / 1e9:.2f} GB of fp32 safetensors).",
        "",
        "## Stages, in one process (peak RSS = the process's high-water mark during that stage)",
        "",
        "| stage | wall s | CPU s | peak RSS MiB | RSS after MiB | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["stages"]:
        lines.append(
            f"| {row['stage']} | {_fmt(row['wall_s'], '.3f')} | {_fmt(row['cpu_s'], '.2f')} | "
            f"{_fmt(row['peak_rss_MiB'], 'd')} | {_fmt(row['rss_after_MiB'], 'd')} | {row['note']} |"
        )
    dn = r["denoise"]
    lines += [
        "",
        f"Denoising ran {dn['steps_run']} of {dn['schedule_steps']} PNDM steps (strength {dn['strength']}, "
        f"timesteps {dn['timesteps']}). The first UNet step includes reading the memory-mapped UNet weights "
        "(3.4 GB) into memory: loading itself is nearly free with fp32 safetensors.",
        "",
        "## File sizes on the 4-channel 64x64 latent",
        "",
        "| file | bytes | setting | latent RMSE (raw latent units) |",
        "|---|---|---|---|",
        f"| palette (libimagequant, {s['palette_colors']} colours, zlib; the 2022 method) | {s['palette_bytes']} | "
        f"K={s['palette_colors']} | {s['latent_rmse_palette']} |",
        f"| tc, inline tables, at the palette file's size | {s['tc_same_size_bytes']} | step {s['tc_same_size_step']} | "
        f"{s['latent_rmse_tc_same_size']} |",
        f"| tc, inline tables, default rate (0.3 bit per latent value) | {s['tc_default_bytes']} | "
        f"step {s['tc_default_step']} | {s['latent_rmse_tc_default']} |",
        "",
        f"Inline tables cost {s['tc_inline_tables_bytes']} bytes of each tc file here (channel means and a 4x4 KLT in "
        f"float16, {s['tc_wavelet_levels']} wavelet levels x 3 bands + LL scales in int8). Latent standard deviation: "
        f"{s['latent_std']}.",
    ]
    if r.get("flops"):
        f = r["flops"]
        lines += [
            "",
            "## Work per pass (FLOPs at 512x512, counted by torch's FlopCounterMode)",
            "",
            f"VAE encode {f['vae_encode'] / 1e12:.2f} TFLOP, VAE decode {f['vae_decode'] / 1e12:.2f} TFLOP, one UNet "
            f"step {f['unet_step'] / 1e12:.2f} TFLOP (3 steps: {3 * f['unet_step'] / 1e12:.2f}). A T4's published "
            f"peak is 65 TFLOPS fp16 (tensor cores) / 8.1 TFLOPS fp32: at that peak these would take "
            f"{f['vae_encode'] / 65e12 * 1e3:.0f} / {f['vae_decode'] / 65e12 * 1e3:.0f} / "
            f"{f['unet_step'] / 65e12 * 1e3:.0f} ms in fp16, a lower bound (real kernels reach a fraction of it); "
            f"not measured, this project has no GPU.",
        ]
    if r["cli"]:
        lines += [
            "",
            "## The real CLI (one process per command)",
            "",
            "| command | wall s | peak RSS MiB | load / VAE / codec stages (s) |",
            "|---|---|---|---|",
        ]
        for c in r["cli"]:
            cmd = re.sub(r"\S*/\.tmp/", "", c["command"]).replace(str(ROOT.parent), "..")
            cmd = re.sub(r"--model \S+", "--model STANDIN", cmd)
            lines.append(
                f"| `{cmd}` | {c['wall_s']} | {c['peak_rss_MiB']} | "
                + ", ".join(f"{k} {v}" for k, v in c["codec_wall_s"].items())
                + " |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
