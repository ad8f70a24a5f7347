"""The latent-method interface (helpers.methods): registry lookups, the container's dispatch by method id,
the one rate-control search, and a method added by a test alone (a class and a registration, no shared code)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from helpers import bitstream
from helpers.backends.base import Backend
from helpers.bitstream import Header, Limits
from helpers.codec import CodecParams, decode, encode
from helpers.errors import BitstreamError, BudgetError, SDCError
from helpers.methods import registry
from helpers.methods.base import EncodeJob, LatentMethod, Output, fit_budget
from helpers.methods.palette.method import KMEANS, LIQ, RAW
from helpers.methods.tc.method import TC


def _header(**kw):
    base = dict(
        method="kmeans",
        coder="zlib",
        model_id="taef2",
        fingerprint=0xDEADBEEF,
        width=40,
        height=32,
        channels=3,
        latent_height=4,
        latent_width=5,
        quant_span=8.0,
        colors=0,
        policy="pad8",
        dithered=False,
    )
    base.update(kw)
    return Header(**base)


def test_registry_lookup_by_name_id_and_alias():
    assert [registry.by_id(i) for i in range(4)] == [LIQ, KMEANS, RAW, TC]
    assert registry.get("tc") is TC and registry.DEFAULT == "tc" and CodecParams().method == "tc"
    assert registry.resolve(None, 32) is TC
    assert registry.resolve("palette", 4) is LIQ and registry.resolve("palette", 32) is KMEANS
    assert registry.resolve("auto", 32) is KMEANS  # the CLI's older name of the palette method
    assert {m.name: m.id for m in registry.SHIPPED} == bitstream.METHODS
    assert registry.coder_names() == ["arith", "lzma", "range", "zlib"]
    for bad in (lambda: registry.get("jpeg"), lambda: registry.by_id(77), lambda: registry.resolve("liq", 32)):
        with pytest.raises(SDCError) as exc:
            bad()
        assert "\n" not in str(exc.value)


def test_unknown_method_id_in_a_file_is_one_line():
    good = bytearray(bitstream.pack(_header(method="raw", coder="zlib"), zlib.compress(bytes(60), 9)))
    good[6] = 77  # method byte: no method has id 77
    bad = bytes(good[:-4]) + struct.pack("<I", zlib.crc32(bytes(good[:-4])))
    with pytest.raises(BitstreamError) as exc:
        bitstream.unpack(bad)
    msg = str(exc.value)
    assert "method 77" in msg and "upgrade sdcomp-notebooks" in msg and "\n" not in msg


def test_fit_budget_is_each_methods_search():
    """One bisection for every method: the palette's largest K and tc's finest step are the same search."""
    sizes = {k: 100 + 10 * k for k in range(0, 70)}  # bytes grow with the setting
    tried: list[int] = []

    def attempt(k):
        tried.append(k)
        return k, sizes[k]

    assert fit_budget(attempt, 1, 65, 500) == 40  # largest setting whose file fits, searched in 2..64
    assert fit_budget(attempt, 1, 65, 50) is None
    tried.clear()
    assert fit_budget(lambda k: (k, 1000 - 10 * k), 69, 0, 700, best=69) == 30  # towards smaller settings
    with pytest.raises(TypeError):
        LatentMethod()  # abstract


# --- a method defined here, registered here, and coded through the unchanged codec and container ---


@dataclass
class _ConstCoded:
    payload: bytes
    shape: tuple

    def header_fields(self):
        return {"coder": "toy-bytes", "colors": 0, "dithered": False}

    def latent(self):
        return _ConstMethod.expand(self.payload, self.shape)


class _ConstMethod(LatentMethod):
    """Each channel becomes its rounded mean, one signed byte (a tenth of a unit) per channel."""

    name, id, coders = "toy-const", 200, {"toy-bytes": 200}

    @staticmethod
    def expand(payload, shape):
        c, h, w = shape
        return np.repeat(np.frombuffer(payload, np.int8).astype(np.float32) / 10, h * w).reshape(c, h, w)

    def check(self, h, payload_len, limits):
        if h.colors != 0 or payload_len != h.channels:
            raise BitstreamError("toy method: one byte per channel and no palette")

    def encode(self, latent, job: EncodeJob) -> Output:
        payload = np.clip(np.rint(latent.mean(axis=(1, 2)) * 10), -128, 127).astype(np.int8).tobytes()
        if job.target_bytes is not None and job.overhead + len(payload) > job.target_bytes:
            raise BudgetError("toy method: the budget is too small")
        return Output(_ConstCoded(payload, latent.shape), [(0, job.overhead + len(payload))], latent)

    def unpack(self, h, payload, limits):
        return None, None, self.expand(payload, (h.channels, h.latent_height, h.latent_width))

    def dequantize(self, header, stored):
        return stored


class _FlatBackend(Backend):
    """A model stand-in: the latent of an image is its 8x8-block means per RGB channel (in -1..1)."""

    model_id, kind, runtime, device_name, load_seconds = "flat", "flat", "numpy", "cpu", 0.0
    fingerprint, latent_channels, downsample, quant_span = 7, 3, 8, 8.0

    def describe(self) -> str:
        return "flat 8x8 means"

    def encode_array(self, x, seed):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 8, 8, w // 8, 8).mean(axis=(3, 5))

    def decode_array(self, z):
        return np.repeat(np.repeat(z, 8, axis=2), 8, axis=3)


@pytest.fixture
def toy_method():
    method = registry.register(_ConstMethod())
    try:
        yield method
    finally:
        bitstream.unregister_method(method.name)


def test_a_method_added_by_a_folder_and_a_registration_round_trips(toy_method):
    img = Image.new("RGB", (40, 32), (200, 30, 120))
    enc = encode(img, _FlatBackend(), CodecParams(method="toy-const"))
    assert enc.header.method == "toy-const" and enc.data[6] == 200 and enc.header.coder == "toy-bytes"
    assert enc.nbytes == bitstream.header_size(enc.header) + 3
    header, payload = bitstream.unpack(enc.data)
    assert registry.by_id(200) is toy_method and header == enc.header
    np.testing.assert_array_equal(toy_method.decode(payload, header), enc.decoder_latent())
    dec = decode(enc.data, _FlatBackend())
    np.testing.assert_array_equal(dec.latents, enc.decoder_latent())
    assert np.abs(np.asarray(dec.image, np.int16) - np.asarray(img, np.int16)).max() <= 13  # one tenth per step
    with pytest.raises(BitstreamError, match="toy method"):
        bitstream.pack(enc.header, b"\x01\x02")
    with pytest.raises(BudgetError):
        encode(img, _FlatBackend(), CodecParams(method="toy-const"), target_bytes=10)
    with pytest.raises(ValueError, match="taken"):
        registry.register(type("Other", (_ConstMethod,), {"name": "other"})())  # toy-const owns id 200


def test_the_container_imports_no_method_code():
    import ast
    from pathlib import Path

    import helpers.bitstream as container

    tree = ast.parse(Path(container.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if "method" in m or m.lstrip(".") in ("codec", "entropy", "quantize", "tcoder")]
    assert imported <= {
        "__future__",
        "errors",
        "math",
        "os",
        "struct",
        "zlib",
        "dataclasses",
        "collections.abc",
        "typing",
    }, imported
    assert Limits.default().max_pixels >= 1


def test_tc_train_uses_only_public_tcoder_names():
    import ast
    from pathlib import Path

    from helpers.methods.tc import tc_train

    tree = ast.parse(Path(tc_train.__file__).read_text())
    private = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "T"
        and n.attr.startswith("_")
    }
    assert not private
