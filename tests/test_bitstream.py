import struct
import zlib

import numpy as np
import pytest

from helpers import bitstream
from helpers.bitstream import Header
from helpers.errors import BitstreamError
from helpers.methods import registry

assert registry.SHIPPED  # importing the registry hands the shipped methods to the container


def _header(**kw):
    base = dict(
        method="kmeans",
        coder="zlib",
        model_id="taef2",
        fingerprint=0xDEADBEEF,
        width=500,
        height=333,
        channels=32,
        latent_height=42,
        latent_width=63,
        quant_span=8.0,
        colors=77,
        policy="pad8",
        dithered=False,
    )
    base.update(kw)
    return Header(**base)


def test_header_roundtrip_all_fields():
    h = _header(
        denoise=True,
        denoise_strength=0.04,
        denoise_steps=66,
        model_id="CompVis/stable-diffusion-v1-4",
        method="liq",
        channels=4,
        quant_span=255 * 0.18215,
        dithered=True,
    )
    payload = bytes(range(200))
    data = bitstream.pack(h, payload)
    h2, p2 = bitstream.unpack(data)
    assert p2 == payload
    assert h2.denoise_strength == pytest.approx(0.04)
    assert h2.quant_span == pytest.approx(255 * 0.18215, rel=1e-6)
    h2.denoise_strength, h2.quant_span = h.denoise_strength, h.quant_span
    assert h2 == h


def test_layout_and_overhead():
    h = _header()
    data = bitstream.pack(h, b"xyz" * 3)
    assert data[:4] == b"SDC\x1a" and data[4] == 1
    # 37 fixed bytes + model id ("taef2" = 5) ; denoise fields absent
    assert bitstream.header_size(h) == 37 + 5
    assert len(data) == 37 + 5 + 9
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert bitstream.header_size(_header(denoise=True, denoise_steps=66, denoise_strength=0.04)) == 37 + 5 + 6


def test_every_truncation_is_rejected():
    data = bitstream.pack(_header(), b"payload-bytes" * 5)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            bitstream.unpack(data[:n])


def test_every_single_bit_flip_is_rejected():
    data = bytearray(bitstream.pack(_header(), bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8))))
    for i in range(len(data)):
        for bit in (0, 5):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(BitstreamError):
                bitstream.unpack(bytes(bad))


def test_foreign_files_and_versions():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    with pytest.raises(BitstreamError, match="not an .sdc file"):
        bitstream.unpack(png)
    data = bytearray(bitstream.pack(_header(), b"abc" * 3))
    data[4] = 9
    with pytest.raises(BitstreamError, match="version 9 is not supported"):
        bitstream.unpack(bytes(data))
    with pytest.raises(BitstreamError):
        bitstream.unpack(b"")


def test_messages_are_one_line():
    data = bitstream.pack(_header(), b"abc" * 3)
    for bad in (b"nope", data[:20], data[:-1], data[:-4] + b"\0\0\0\0"):
        with pytest.raises(BitstreamError) as exc:
            bitstream.unpack(bad)
        assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


def test_header_checks_run_before_any_allocation():
    """A 60-byte file announcing a huge latent is refused by the header alone (no payload decoding)."""
    h = _header(width=8192, height=8192, latent_height=1024, latent_width=1024, channels=32, colors=4096)
    data = bitstream.pack(h, b"\0" * 16)
    assert len(data) < 80
    header, _ = bitstream.unpack(data)  # within the default cap: the header itself is consistent
    with pytest.raises(BitstreamError, match="pixel cap"):
        bitstream.unpack(data, bitstream.Limits(max_pixels=4_000_000))
    assert bitstream.downsample_factors(header) == [8]
