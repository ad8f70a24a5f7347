"""What a decoder guarantees, measured: latents bit-exact, pixels across thread counts and tilings.

    python scripts/measure_determinism.py [--out results/large_photo/determinism.md]

1. Entropy-decoded latents: the same file decoded in processes with 1 and 2 torch threads gives identical
   8-bit latents (integer arithmetic only).
2. Pixels: TAEF2 decodes of that file (kodim23, centre 512x512, 5000 B, arith) with torch.set_num_threads(1)
   and (2), compared pixel by pixel.
3. Tiling: a 1024x1024 crop of the large-photo mosaic (scripts/bench_large_photo.py) encoded and decoded
   untiled and with 256-pixel tiles; latents (8-bit) and pixels compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"

CHILD = r"""
import sys, json, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from helpers import bitstream
from helpers.codec import decode
from helpers.backends.taef2 import load_taef2
data = open(sys.argv[2], 'rb').read()
h, p = bitstream.unpack(data)
q = bitstream.decode_payload(h, p)[2]
img = decode(data, load_taef2(device='cpu')).image
np.save(sys.argv[3], np.asarray(img)); np.save(sys.argv[4], q)
"""


def threads_check(tmp: Path) -> dict:
    import os

    from helpers.backends.taef2 import load_taef2
    from helpers.codec import CodecParams, encode
    from helpers.images import load_image

    enc = encode(
        load_image(KODAK / "kodim23.png"),
        load_taef2(device="cpu"),
        CodecParams(method="palette", policy="crop512", coder="arith"),
        target_bytes=5000,
    )
    f = tmp / "k23.sdc"
    f.write_bytes(enc.data)
    out = {}
    for n in (1, 2):
        subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(f), str(tmp / f"px{n}.npy"), str(tmp / f"q{n}.npy")],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        out[n] = (np.load(tmp / f"px{n}.npy").astype(np.int16), np.load(tmp / f"q{n}.npy"))
    d = np.abs(out[1][0] - out[2][0])
    return {
        "file_bytes": len(enc.data),
        "latents_identical": bool(np.array_equal(out[1][1], out[2][1])),
        "pixels_differing": int((d > 0).any(-1).sum()),
        "samples_differing": int((d > 0).sum()),
        "max_diff": int(d.max()),
        "pixels": int(d.shape[0] * d.shape[1]),
    }


def tiling_check() -> dict:
    import torch
    from PIL import Image

    from helpers.backends.taef2 import load_taef2
    from helpers.images import to_pil, to_tensor
    from helpers.methods.palette.quantize import quantize_8bit

    mosaic = Path(tempfile.gettempdir()) / "sdcomp-photos" / "mosaic_4000x3000.png"
    if not mosaic.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_large_photo.py"), "--sizes"], check=True)
    img = Image.open(mosaic).convert("RGB").crop((1488, 988, 2512, 2012))  # 1024x1024 across the 4 photos
    b = load_taef2(device="cpu")
    x = to_tensor(img)
    b.tile = 10**6
    z_ref = b.encode(x)
    y_ref = np.asarray(to_pil(b.decode(z_ref)), dtype=np.int16)
    b.tile = 256
    z = b.encode(x)
    y = np.asarray(to_pil(b.decode(z_ref)), dtype=np.int16)
    q_ref, q = quantize_8bit(z_ref[0].numpy(), b.quant_span), quantize_8bit(z[0].numpy(), b.quant_span)
    return {
        "size": "1024x1024",
        "tile": 256,
        "encoder_tiles": 16,
        "latent_max_abs_diff": float((z - z_ref).abs().max()),
        "latent_8bit_differing": int((q != q_ref).sum()),
        "pixel_max_diff": int(np.abs(y - y_ref).max()),
        "pixels_differing": int((y != y_ref).any(-1).sum()),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "large_photo" / "determinism.md"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        th = threads_check(Path(tmp))
    ti = tiling_check()
    print(json.dumps({"threads": th, "tiling": ti}, indent=1))
    text = (
        f"# Decoder determinism (`python scripts/measure_determinism.py`)\n\n"
        f"* kodim23 (centre 512x512, {th['file_bytes']} B, TAEF2, arith) decoded in separate processes with 1 and 2 "
        f"torch threads: entropy-decoded latents identical: {th['latents_identical']}; pixels differing: "
        f"{th['pixels_differing']} of {th['pixels']} ({th['samples_differing']} RGB samples), max difference "
        f"{th['max_diff']} level(s).\n"
        f"* Tiled vs untiled TAEF2 on a {ti['size']} photo crop, {ti['tile']}-pixel tiles ({ti['encoder_tiles']} "
        f"encoder tiles): latent max |difference| {ti['latent_max_abs_diff']:.3g}, 8-bit latents differing "
        f"{ti['latent_8bit_differing']}; decoded pixels max difference {ti['pixel_max_diff']}, pixels differing "
        f"{ti['pixels_differing']}.\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
