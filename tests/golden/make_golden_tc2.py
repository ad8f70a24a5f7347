"""One-off: write golden .sdc files of tc payload version 2 (per-image scale offsets after the head).

Run once with the code that introduced payload version 2 (TAEF2 tables 5e694a5d, the trained tc encoder); do not
regenerate: these files pin what later readers must accept, as ``make_golden_tc.py``'s version-1 files do. The
entropy-decoded integer coefficients must match ``*.symbols.npz`` exactly and the scale offsets ``manifest_tc2.json``;
the float latent and the TAEF2 pixels within tolerances (BLAS and threads)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from helpers import bitstream  # noqa: E402
from helpers.codec import CodecParams, decode, encode, unpack_payload  # noqa: E402
from helpers.methods.tc import tcoder  # noqa: E402
from helpers.backends.taef2 import load_taef2  # noqa: E402

out = Path(__file__).resolve().parent
sys.path.insert(0, str(out))
from picture import synthetic  # noqa: E402

img = synthetic(512, 384)
taef2 = load_taef2(device="cpu")
cases = [
    ("tc2_taef2_budget", img.crop((40, 20, 168, 148)), CodecParams(method="tc", coder="range"), 1500),
    ("tc2_taef2_step_pad8", img.crop((200, 200, 300, 275)), CodecParams(method="tc", coder="range", step=1.0), None),
]
manifest = {}
for name, im, p, budget in cases:
    enc = encode(im, taef2, p, target_bytes=budget)
    (out / f"{name}.sdc").write_bytes(enc.data)
    h, payload = bitstream.unpack(enc.data)
    assert payload[0] == 2
    q, k, tables, levels = tcoder.decode_symbols(payload, h.channels, h.latent_height, h.latent_width, h.fingerprint)
    nb, ng = len(tables.A[levels]), len(tcoder.comp_groups(h.channels))
    offsets = tcoder.parse_offsets(payload[8:], nb, ng)
    np.savez_compressed(out / f"{name}.symbols.npz", k=np.array(k), **{f"band{i}": b for i, b in enumerate(q)})
    np.save(out / f"{name}.latent.npy", unpack_payload(h, payload)[2])
    manifest[name] = {
        "bytes": len(enc.data),
        "method": h.method,
        "coder": h.coder,
        "size": [h.width, h.height],
        "latent": [h.channels, h.latent_height, h.latent_width],
        "k": int(k),
        "levels": int(levels),
        "table_id": f"{tables.table_id:08x}",
        "budget": budget,
        "payload_version": 2,
        "offsets": offsets.tolist(),
    }
    decode(enc.data, taef2).image.save(out / f"{name}.png")
(out / "manifest_tc2.json").write_text(json.dumps(manifest, indent=1) + "\n")
print(json.dumps(manifest, indent=1))
