"""One-off: write .sdc v1 golden files with the code at commit 2bf8961 (format version 1)."""
import json, sys, tempfile
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from helpers.models import load_taef2, load_backend, make_tiny_sd
from helpers.codec import CodecParams, encode, decode, unpack_payload
from helpers import bitstream
sys.path.insert(0, str(Path(__file__).resolve().parent))
from picture import synthetic  # noqa: E402
out = Path(__file__).resolve().parent

taef2 = load_taef2(device="cpu")
img = synthetic(512, 384)
small = img.crop((300, 100, 428, 228))            # 128x128
odd = img.crop((200, 200, 300, 275))               # 100x75 -> pad8
cases = [
    ("v1_taef2_kmeans_zlib", small, CodecParams(method="kmeans", colors=32, coder="zlib"), None),
    ("v1_taef2_kmeans_arith", small, CodecParams(method="kmeans", colors=48, coder="arith"), None),
    ("v1_taef2_kmeans_lzma", small, CodecParams(method="kmeans", colors=16, coder="lzma"), None),
    ("v1_taef2_kmeans_arith_dither_pad8", odd, CodecParams(method="kmeans", colors=24, coder="arith", dither=1.0), None),
    ("v1_taef2_raw", odd, CodecParams(method="raw"), None),
    ("v1_taef2_kmeans_arith_budget", small, CodecParams(method="kmeans", colors=1024, coder="arith"), 1500),
]
manifest = {}
for name, im, p, budget in cases:
    enc = encode(im, taef2, p, target_bytes=budget)
    (out / f"{name}.sdc").write_bytes(enc.data)
    h, payload = bitstream.unpack(enc.data)
    q = unpack_payload(h, payload)[2]
    np.save(out / f"{name}.latent.npy", q)
    dec = decode(enc.data, taef2)
    dec.image.save(out / f"{name}.png")
    manifest[name] = {"bytes": len(enc.data), "method": h.method, "coder": h.coder, "colors": h.colors,
                      "size": [h.width, h.height], "latent": [h.channels, h.latent_height, h.latent_width]}
# 4-channel SD path (tiny random SD, libimagequant RGBA palette, denoise flag): latents only
tiny_dir = make_tiny_sd(Path(tempfile.mkdtemp()))
sd = load_backend(str(tiny_dir), device="cpu")
for name, p in [("v1_tinysd_liq_zlib_denoise", CodecParams(method="liq", colors=64, coder="zlib", denoise=True)),
                ("v1_tinysd_liq_arith", CodecParams(method="liq", colors=64, coder="arith"))]:
    enc = encode(small, sd, p)
    (out / f"{name}.sdc").write_bytes(enc.data)
    h, payload = bitstream.unpack(enc.data)
    np.save(out / f"{name}.latent.npy", unpack_payload(h, payload)[2])
    manifest[name] = {"bytes": len(enc.data), "method": h.method, "coder": h.coder, "colors": h.colors,
                      "size": [h.width, h.height], "latent": [h.channels, h.latent_height, h.latent_width],
                      "denoise": h.denoise}
(out / "manifest.json").write_text(json.dumps(manifest, indent=1))
print(json.dumps(manifest, indent=1))
