"""The tc method through the codec and the CLI: real TAEF2 (trained tables, 32 channels) and a tiny random SD
model (4 channels, inline tables); budgets, bit-exact decoding, effort, header checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import bitstream
from helpers.codec import CodecParams, decode, encode
from helpers.errors import BitstreamError
from helpers.images import apply_policy, load_image
from helpers.methods.tc import tcoder
from helpers.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kodim23(kodak_dir):
    return apply_policy(load_image(kodak_dir / "kodim23.png"), "crop512")[0]


def test_taef2_has_shipped_tables(taef2):
    t = tcoder.trained_tables(taef2.fingerprint)
    assert t is not None and t.channels == 32 and set(t.A) == set(range(tcoder.MAX_LEVELS + 1))
    for L, A in t.A.items():  # analysis and synthesis matrices are inverses
        np.testing.assert_allclose(np.einsum("bij,bjk->bik", t.Ai[L], A), np.eye(32)[None].repeat(len(A), 0), atol=1e-4)


@pytest.mark.parametrize("budget", [2000, 5000, 12000])
def test_taef2_budget_bit_exact_and_quality(taef2, kodim23, budget):
    params = CodecParams(method="tc", policy="crop512")
    enc = encode(kodim23, taef2, params, target_bytes=budget)
    assert enc.nbytes <= budget and enc.nbytes > 0.97 * budget  # fits, and spends what it may
    assert enc.header.method == "tc" and enc.header.coder == "range" and enc.header.colors == 0
    assert enc.coded.tables.table_id == tcoder.trained_tables(taef2.fingerprint).table_id
    dec = decode(enc.data, taef2)
    np.testing.assert_array_equal(dec.latents, enc.decoder_latent())  # the decoder sees exactly the coded latent
    # measured on this crop: 24.7 / 27.2 / 30.0 dB (the palette method, arith coder: 20.9 / 22.7 / 24.4 dB)
    assert psnr(kodim23, dec.image) > {2000: 23.5, 5000: 26.0, 12000: 28.5}[budget]


def test_taef2_beats_the_palette_method_at_5kb(taef2, kodim23):
    tc = decode(encode(kodim23, taef2, CodecParams(method="tc", policy="crop512"), target_bytes=5000).data, taef2)
    pal = decode(
        encode(
            kodim23,
            taef2,
            CodecParams(method="palette", coder="arith", colors=1024, policy="crop512"),
            target_bytes=5000,
        ).data,
        taef2,
    )
    assert psnr(kodim23, tc.image) > psnr(kodim23, pal.image) + 3.0


def test_any_image_size_round_trips(taef2, kodak_dir):
    img = load_image(kodak_dir / "kodim05.png").crop((17, 9, 17 + 203, 9 + 77))  # odd sizes, pad8
    enc = encode(img, taef2, CodecParams(method="tc"), target_bytes=900)
    dec = decode(enc.data, taef2)
    assert dec.image.size == (203, 77) and enc.nbytes <= 900
    np.testing.assert_array_equal(dec.latents, enc.decoder_latent())


def test_effort_improves_the_decoded_picture_at_the_same_budget(taef2, kodak_dir):
    img = apply_policy(load_image(kodak_dir / "kodim23.png"), "crop512")[0].crop((128, 128, 384, 384))
    res = {}
    for effort in (0, 1):
        enc = encode(img, taef2, CodecParams(method="tc", policy="none", effort=effort), target_bytes=1500)
        assert enc.nbytes <= 1500
        res[effort] = psnr(img, decode(enc.data, taef2).image)
    assert res[1] > res[0] + 0.3, res


def test_tiny_sd_four_channels_inline_tables(tiny_sd, kodim23):
    img = kodim23.resize((128, 128))
    enc = encode(img, tiny_sd, CodecParams(method="tc", denoise=True), target_bytes=600)
    assert enc.coded.tables.table_id == 0 and enc.header.channels == 4 and enc.header.denoise
    assert enc.nbytes <= 600
    h, payload = bitstream.unpack(enc.data)
    z = bitstream.decode_payload(h, payload)[2]
    np.testing.assert_array_equal(z, enc.decoder_latent())
    dec = decode(enc.data, tiny_sd, denoise=False)
    assert dec.image.size == (128, 128)


def test_tc_header_fields_are_checked(taef2, kodim23):
    enc = encode(kodim23.resize((64, 64)), taef2, CodecParams(method="tc"), target_bytes=800)
    h, payload = bitstream.unpack(enc.data)
    for change in ({"coder": "arith"}, {"colors": 5}):
        bad = bitstream.Header(**{**h.__dict__, **change})
        with pytest.raises(BitstreamError):
            bitstream.check_header(bad, len(payload))


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_default_is_tc_and_palette_reproduces_the_2022_method(tmp_path, kodak_dir):
    src = tmp_path / "in.png"
    load_image(kodak_dir / "kodim23.png").crop((200, 100, 456, 356)).save(src)
    r = _cli("encode", str(src), "a.sdc", "--model", "taef2", "--target-bytes", "2000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert bitstream.unpack((tmp_path / "a.sdc").read_bytes())[0].method == "tc"
    r = _cli("encode", str(src), "b.sdc", "--model", "taef2", "--method", "palette", "--colors", "32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    h = bitstream.unpack((tmp_path / "b.sdc").read_bytes())[0]
    assert (h.method, h.coder, h.colors) == ("kmeans", "zlib", 32)
    r = _cli("decode", "a.sdc", "a.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "a.png").size == (256, 256)


@pytest.mark.parametrize(
    "args,method,coder",
    [
        (["--coder", "arith"], "kmeans", "arith"),
        (["--colors", "16"], "kmeans", "zlib"),
        ([], "tc", "range"),
    ],
)
def test_cli_palette_flags_without_method_mean_palette(tmp_path, kodak_dir, args, method, coder):
    """Command lines written for the 2022 method keep meaning it: palette-only flags pick the palette method."""
    src = tmp_path / "in.png"
    load_image(kodak_dir / "kodim23.png").crop((0, 0, 64, 64)).save(src)
    r = _cli("encode", str(src), "x.sdc", "--model", "taef2", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    h = bitstream.unpack((tmp_path / "x.sdc").read_bytes())[0]
    assert (h.method, h.coder) == (method, coder)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--method", "tc", "--coder", "arith"], "tc has its own range coder"),
        (["--method", "palette", "--effort", "1"], "--method tc only"),
        (["--method", "kmeans", "--coder", "range"], "tc method's coder"),
        (["--method", "tc", "--colors", "16"], "sets a palette size"),
        (["--coder", "range", "--colors", "16"], "tc method's coder"),
        (["--effort", "1", "--precision", "fp16"], "invalid choice: 'fp16'"),
    ],
)
def test_cli_refuses_mixed_method_options(tmp_path, kodak_dir, args, msg):
    src = tmp_path / "in.png"
    load_image(kodak_dir / "kodim23.png").crop((0, 0, 64, 64)).save(src)
    r = _cli("encode", str(src), "x.sdc", "--model", "taef2", *args, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 or "error:" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.sdc").exists()
