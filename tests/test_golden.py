"""Files written by format v1 (commit 2bf8961) keep decoding: latents bit-exactly, pixels within +-1."""

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


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if n.startswith("v1_taef2")))
def test_golden_pixels_within_one_level(name, taef2):
    dec = decode((GOLDEN / f"{name}.sdc").read_bytes(), taef2)
    want = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB"), dtype=np.int16)
    got = np.asarray(dec.image, dtype=np.int16)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1
