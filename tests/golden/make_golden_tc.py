"""One-off: write golden .sdc files of the transform coding method (method 3, tc payload version 1).

Run once with the code that introduced tc (format v1 container, TAEF2 tables 5e694a5d); do not regenerate:
these files pin what later readers must accept. The entropy-decoded integer coefficients must match
``*.symbols.npz`` exactly; the float latent and the TAEF2 pixels within tolerances (BLAS and threads)."""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from helpers import bitstream  # noqa: E402
from helpers.codec import CodecParams, decode, encode, unpack_payload  # noqa: E402
from helpers.methods.tc import tcoder  # noqa: E402
from helpers.models import load_backend, load_taef2, make_tiny_sd  # noqa: E402

out = Path(__file__).resolve().parent
sys.path.insert(0, str(out))
from picture import synthetic  # noqa: E402

img = synthetic(512, 384)
small = img.crop((300, 100, 428, 228))  # 128x128
odd = img.crop((200, 200, 300, 275))  # 100x75 -> pad8

taef2 = load_taef2(device="cpu")
tiny_dir = make_tiny_sd(Path(tempfile.mkdtemp()))
sd = load_backend(str(tiny_dir), device="cpu")
cases = [
    ("tc_taef2_budget", taef2, small, CodecParams(method="tc", coder="range"), 1500),
    ("tc_taef2_step_pad8", taef2, odd, CodecParams(method="tc", coder="range", step=1.0), None),
    ("tc_tinysd_inline", sd, small, CodecParams(method="tc", coder="range"), 800),
]
manifest = {}
for name, backend, im, p, budget in cases:
    enc = encode(im, backend, p, target_bytes=budget)
    (out / f"{name}.sdc").write_bytes(enc.data)
    h, payload = bitstream.unpack(enc.data)
    q, k, tables, levels = tcoder.decode_symbols(payload, h.channels, h.latent_height, h.latent_width,
                                                 h.fingerprint)
    np.savez(out / f"{name}.symbols.npz", k=np.array(k), **{f"band{i}": b for i, b in enumerate(q)})
    np.save(out / f"{name}.latent.npy", unpack_payload(h, payload)[2])
    entry = {"bytes": len(enc.data), "method": h.method, "coder": h.coder, "size": [h.width, h.height],
             "latent": [h.channels, h.latent_height, h.latent_width], "k": int(k), "levels": int(levels),
             "table_id": f"{tables.table_id:08x}" if tables.table_id else "inline", "budget": budget}
    if backend is taef2:
        decode(enc.data, taef2).image.save(out / f"{name}.png")
    manifest[name] = entry
(out / "manifest_tc.json").write_text(json.dumps(manifest, indent=1) + "\n")
print(json.dumps(manifest, indent=1))
