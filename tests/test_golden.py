"""Golden files keep decoding: format v1 (commit 2bf8961), the first tc files (tc payload version 1) and those of tc
payload version 2 (per-image scale offsets); latents bit-exactly, pixels within +-1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import bitstream
from helpers.codec import decode, unpack_payload

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
MANIFEST_TC = json.loads((GOLDEN / "manifest_tc.json").read_text())  # transform coding: make_golden_tc.py
# tc payload version 2: make_golden_tc2.py (with the scale offsets each file carries)
MANIFEST_TC.update(json.loads((GOLDEN / "manifest_tc2.json").read_text()))


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_latents_bit_exact(name):
    data = (GOLDEN / f"{name}.sdc").read_bytes()
    want = MANIFEST[name]
    assert len(data) == want["bytes"]
    header, payload = bitstream.unpack(data)
    assert (header.method, header.coder, header.colors) == (want["method"], want["coder"], want["colors"])
    assert [header.width, header.height] == want["size"]
    assert [header.channels, header.latent_height, header.latent_width] == want["latent"]
    q = unpack_payload(header, payload)[2]
    np.testing.assert_array_equal(q, np.load(GOLDEN / f"{name}.latent.npy"))


@pytest.mark.parametrize(
    "name",
    sorted(n for n in MANIFEST if n.startswith("v1_taef2"))
    + sorted(n for n in MANIFEST_TC if n.startswith("tc_taef2")),
)
def test_golden_pixels_within_one_level(name, taef2):
    dec = decode((GOLDEN / f"{name}.sdc").read_bytes(), taef2)
    want = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB"), dtype=np.int16)
    got = np.asarray(dec.image, dtype=np.int16)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1


# --- transform coding (method 3): files written when tc was introduced (make_golden_tc.py) ---


@pytest.mark.parametrize("name", sorted(MANIFEST_TC))
def test_golden_tc_symbols_bit_exact(name):
    """The range decoder's integer output is exact; the float latent (wavelet + KLT synthesis) is within float
    rounding, which BLAS and thread counts may change."""
    from helpers.methods.tc import tcoder

    data = (GOLDEN / f"{name}.sdc").read_bytes()
    want = MANIFEST_TC[name]
    assert len(data) == want["bytes"] and (want["budget"] is None or len(data) <= want["budget"])
    header, payload = bitstream.unpack(data)
    assert (header.method, header.coder, header.colors) == ("tc", "range", 0)
    assert [header.width, header.height] == want["size"]
    assert [header.channels, header.latent_height, header.latent_width] == want["latent"]
    q, k, tables, levels = tcoder.decode_symbols(
        payload, header.channels, header.latent_height, header.latent_width, header.fingerprint
    )
    assert (k, levels) == (want["k"], want["levels"])
    assert (f"{tables.table_id:08x}" if tables.table_id else "inline") == want["table_id"]
    assert payload[0] == want.get("payload_version", 1)
    if "offsets" in want:  # version 2: the base scales the file was coded with are the trained ones moved by these
        trained = tcoder.trained_tables(header.fingerprint, tables.table_id)
        groups = tcoder.comp_groups(header.channels)
        for gi, g in enumerate(groups):
            moved = tables.base[levels][:, g.start : g.stop] - trained.base[levels][:, g.start : g.stop]
            np.testing.assert_array_equal(moved, np.asarray(want["offsets"])[:, gi : gi + 1].repeat(len(g), 1))
    ref = np.load(GOLDEN / f"{name}.symbols.npz")
    assert len(q) == len(ref.files) - 1
    for i, band in enumerate(q):
        np.testing.assert_array_equal(band, ref[f"band{i}"])
    z = unpack_payload(header, payload)[2]
    np.testing.assert_allclose(z, np.load(GOLDEN / f"{name}.latent.npy"), rtol=0, atol=1e-4)
