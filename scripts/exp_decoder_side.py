"""Two cheap ideas for the tc default at 5 KB, measured (issue 15): neither ships.

    python scripts/exp_decoder_side.py [--steps 2000] [--out results/decoder_side]

1. **A latent post-filter before the frozen decoder.** A small CNN (about 0.4 M parameters) takes the
   dequantized tc latent and the quantizer step and predicts the unquantized latent. It is trained without the
   decoder in the loop: the loss is the squared error in the tc coefficient domain, where (to first order, the
   decoder-metric transform of :mod:`helpers.methods.tc.tcoder`) squared coefficient error is squared pixel
   error. Training data: TAEF2 latents of 512x512 crops of the licensed training photos (never Kodak, never the
   holdout), quantized at steps drawn log-uniformly over 40..300 (what the rate control picks for 2..20 KB).
   The script prints the predicted gain (coefficient-domain error, on latents of two held-back training photos)
   and then the real one: Kodak crops and holdout photos coded at 5000 / 12000 B, decoded by the stock TAEF2
   decoder with and without the filter.
2. **Coding a downscaled picture.** The 512x512 crop resized to 448 / 384 / 320 / 256 (Lanczos), coded at
   5000 B, decoded and resized back: PSNR and detail retention against the original.

Writes ``summary.md`` and ``records.json`` to ``--out``. CPU only; about 25 minutes on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from helpers.backends.taef2 import load_taef2
from helpers.bench.config import DEFAULT_DATA
from helpers.codec import CodecParams, decode_pixels, encode, encode_latents
from helpers.methods.tc import rate_model as R
from helpers.methods.tc import tcoder as T
from helpers.metrics import psnr
from helpers.metrics.retention import detail_retention
from helpers.photos import crop512, holdout_photos, train_photos

ROOT = Path(__file__).resolve().parents[1]
LEVELS = 4  # a 64x64 latent (512x512 picture)
STEPS = (40.0, 300.0)


class _Res(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(w, w, 3, padding=1), nn.Conv2d(w, w, 3, padding=1)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


class PostFilter(nn.Module):
    """Dequantized latent (N, 32, h, w) and log step -> restored latent (a residual on the input); one
    stride-2 level so that its reach (about 40 latent samples) covers the coarse wavelet bands."""

    def __init__(self, w: int = 64, blocks: int = 4, channels: int = 32):
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, w, 3, padding=1)
        self.down = nn.Conv2d(w, w, 4, stride=2, padding=1)
        self.body = nn.Sequential(*[_Res(w) for _ in range(blocks)])
        self.up = nn.ConvTranspose2d(w, w, 4, stride=2, padding=1)
        self.fine = nn.Sequential(_Res(w), _Res(w))
        self.out = nn.Conv2d(w, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, zq, step):
        s = (torch.log(step) / 5 - 1).reshape(-1, 1, 1, 1).expand(-1, 1, *zq.shape[2:])
        h = torch.relu(self.inp(torch.cat([zq, s], 1)))
        h = h + self.up(self.body(torch.relu(self.down(h))))
        return zq + self.out(self.fine(h))


def training_latents(backend, cache: Path) -> torch.Tensor:
    if cache.is_file():
        return torch.from_numpy(np.load(cache))
    rng, out = random.Random(0), []
    for p in tqdm(train_photos(), desc="training latents"):
        with Image.open(p) as im:
            im = im.convert("RGB")
            for short, n in ((512, 2), (768, 3), (1024, 2)):
                f = short / min(im.size)
                a = np.asarray(im.resize((round(im.size[0] * f), round(im.size[1] * f)), Image.Resampling.LANCZOS))
                for _ in range(n):
                    y, x = rng.randrange(a.shape[0] - 511), rng.randrange(a.shape[1] - 511)
                    out.append(encode_latents(backend, Image.fromarray(a[y : y + 512, x : x + 512])))
    z = np.stack(out).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, z)
    return torch.from_numpy(z)


def train_filter(
    z: torch.Tensor, tables, steps: int, minutes: float, held_back: int = 14
) -> tuple[PostFilter, list[dict]]:
    """Train on all but the last ``held_back`` latents (the last two training photos); return the filter and the
    predicted gains (dB of coefficient-domain error) on the held-back ones at four steps."""
    torch.manual_seed(0)
    val, tr = z[-held_back:], z[:-held_back]
    mu = torch.as_tensor(np.asarray(tables.mu), dtype=torch.float32)[:, None, None]

    def quant(zz, step):
        d = step.reshape(-1, 1, 1, 1)
        c = R.analyze(zz, tables, LEVELS)
        return R.synthesize([torch.round(x / d) * d for x in c], tables, LEVELS)

    def coef_err(a, b):  # squared error of (a - b) in the coefficient domain (analyze removes mu: add it back)
        return sum((x**2).flatten(1).sum(1) for x in R.analyze(a - b + mu, tables, LEVELS))

    net = PostFilter()
    opt = torch.optim.Adam(net.parameters(), 2e-4)
    g = torch.Generator().manual_seed(0)
    t0, n = time.time(), 0
    bar = tqdm(total=steps, desc="post-filter training")
    while n < steps and time.time() - t0 < minutes * 60:
        zz = tr[torch.randint(len(tr), (4,), generator=g)]
        zz = zz.flip(-1) if n % 2 else zz
        step = torch.exp(torch.empty(4).uniform_(math.log(STEPS[0]), math.log(STEPS[1]), generator=g))
        loss = coef_err(net(quant(zz, step), step), zz).mean() / zz[0, 0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += 1
        bar.update()
    bar.close()
    net.eval()
    pred = []
    with torch.no_grad():
        for s in (40.0, 80.0, 150.0, 300.0):
            step = torch.full((len(val),), s)
            zq = quant(val, step)
            gain = 10 * math.log10(float(coef_err(zq, val).sum() / coef_err(net(zq, step), val).sum()))
            pred.append({"step": s, "predicted_gain_db": round(gain, 2)})
    return net, pred + [{"training_steps": n, "minutes": round((time.time() - t0) / 60, 1)}]


def eval_images() -> dict[str, np.ndarray]:
    imgs = {p.stem: np.asarray(crop512(Image.open(p)).convert("RGB")) for p in sorted(DEFAULT_DATA.glob("kodim*.png"))}
    imgs.update({p.stem: np.asarray(crop512(Image.open(p)).convert("RGB")) for p in holdout_photos()})
    return imgs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="training steps of the post-filter (batch 4)")
    ap.add_argument("--minutes", type=float, default=30.0, help="stop training after this many minutes")
    ap.add_argument("--out", default=str(ROOT / "results" / "decoder_side"))
    ap.add_argument("--cache", default="/tmp/sdcomp_exp_decoder_side/latents.npy")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    be = load_taef2(None, device="cpu")
    tables = T.trained_tables(be.fingerprint)
    net, predicted = train_filter(training_latents(be, Path(args.cache)), tables, args.steps, args.minutes)

    params = CodecParams(method="tc", policy="none")
    rows = []
    for name, a in tqdm(eval_images().items(), desc="images"):
        kodak = name.startswith("kodim")
        for budget in (5000, 12000):
            enc = encode(Image.fromarray(a), be, params, target_bytes=budget)
            zq = enc.decoder_latent()
            with torch.no_grad():
                zf = net(torch.from_numpy(zq)[None], torch.tensor([enc.coded.step]))[0].numpy()
            d0, d1 = decode_pixels(be, zq), decode_pixels(be, zf)
            rows.append(
                {"exp": "postfilter", "image": name, "kodak": kodak, "budget": budget, "bytes": enc.nbytes}
                | {"step": round(enc.coded.step, 1), "psnr": [psnr(a, d0), psnr(a, d1)]}
                | {"detail": [detail_retention(a, d0), detail_retention(a, d1)]}
            )
        for side in (448, 384, 320, 256):
            small = Image.fromarray(a).resize((side, side), Image.Resampling.LANCZOS)
            enc = encode(small, be, params, target_bytes=5000)
            d = Image.fromarray(decode_pixels(be, enc.decoder_latent())).resize((512, 512), Image.Resampling.LANCZOS)
            d = np.asarray(d)
            rows.append(
                {"exp": "downscale", "image": name, "kodak": kodak, "side": side, "bytes": enc.nbytes}
                | {"psnr": psnr(a, d), "detail": detail_retention(a, d)}
            )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps({"predicted": predicted, "rows": rows}, indent=1))
    (out / "summary.md").write_text(summarize(predicted, rows))
    print((out / "summary.md").read_text())
    return 0


def summarize(predicted: list[dict], rows: list[dict]) -> str:
    def mean(xs):
        return float(np.mean(xs)) if xs else float("nan")

    lines = [
        "# Decoder-side ideas for the tc default (`python scripts/exp_decoder_side.py`)",
        "",
        "TAEF2 (PyTorch, CPU), 512x512 crops (24 Kodak, 8 holdout), whole `.sdc` files at the budget. Neither idea ships.",
        "",
        "## 1. Latent post-filter trained in the decoder-metric coefficient domain",
        "",
        "Predicted gain (coefficient-domain squared error, latents of two held-back training photos): "
        + ", ".join(f"step {p['step']:.0f}: {p['predicted_gain_db']:+.2f} dB" for p in predicted if "step" in p)
        + f" ({predicted[-1]['training_steps']} training steps, {predicted[-1]['minutes']} min).",
        "",
        "| set | budget | images | PSNR stock -> filtered | detail stock -> filtered | PSNR better on |",
        "|---|---|---|---|---|---|",
    ]
    for kodak, setname in ((True, "Kodak"), (False, "holdout")):
        for budget in (5000, 12000):
            rs = [r for r in rows if r["exp"] == "postfilter" and r["kodak"] == kodak and r["budget"] == budget]
            p0, p1 = mean([r["psnr"][0] for r in rs]), mean([r["psnr"][1] for r in rs])
            d0, d1 = mean([r["detail"][0] for r in rs]), mean([r["detail"][1] for r in rs])
            better = sum(r["psnr"][1] > r["psnr"][0] for r in rs)
            lines.append(
                f"| {setname} | {budget} | {len(rs)} | {p0:.2f} -> {p1:.2f} | {d0:.2f} -> {d1:.2f} | {better}/{len(rs)} |"
            )
    lines += [
        "",
        "## 2. Coding a downscaled picture at 5000 B (resized back with Lanczos)",
        "",
        "| set | 512 (as today) | 448 | 384 | 320 | 256 |",
        "|---|---|---|---|---|---|",
    ]
    for kodak, setname in ((True, "Kodak"), (False, "holdout")):
        base = [r for r in rows if r["exp"] == "postfilter" and r["kodak"] == kodak and r["budget"] == 5000]
        cells = [f"{mean([r['psnr'][0] for r in base]):.2f} dB / {mean([r['detail'][0] for r in base]):.2f}"]
        for side in (448, 384, 320, 256):
            rs = [r for r in rows if r["exp"] == "downscale" and r["kodak"] == kodak and r["side"] == side]
            cells.append(f"{mean([r['psnr'] for r in rs]):.2f} dB / {mean([r['detail'] for r in rs]):.2f}")
        lines.append(f"| {setname} PSNR / detail | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
