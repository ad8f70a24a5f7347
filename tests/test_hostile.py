"""Issue 9, one test per row: crafted .sdc files and odd inputs end in one `error: ...` line and exit
status 2 (or in correct output), before anything big is allocated or a model runs."""

from __future__ import annotations

import math
import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import bitstream
from helpers.bitstream import Header, Limits
from helpers.cli import main
from helpers.errors import BitstreamError
from helpers.fuzz import _Raw
from helpers.methods.palette import entropy


def _valid(coder="zlib", K=8, C=32, lh=4, lw=5, method="kmeans", seed=0, fingerprint=1) -> bytes:
    """A small valid taef2-shaped file built without a model (distinct palette colours, smooth map)."""
    rng = np.random.default_rng(seed)
    if method == "raw":
        payload, K = zlib.compress(rng.integers(0, 256, C * lh * lw, dtype=np.uint8).tobytes(), 9), 0
    else:
        pal = np.unique(rng.integers(0, 256, (K, C), dtype=np.uint8), axis=0)
        K = len(pal)
        idx = (np.add.outer(np.arange(lh), np.arange(lw)) % K).astype(np.int64)
        payload = entropy.CODERS[coder][0](pal, idx)
    h = Header(
        method=method,
        coder=coder,
        model_id="taef2",
        fingerprint=fingerprint,
        width=lw * 8 - 3,
        height=lh * 8,
        channels=C,
        latent_height=lh,
        latent_width=lw,
        quant_span=8.0,
        colors=K,
        dithered=False,
    )
    return bitstream.pack(h, payload)


def _crafted(base: bytes | None = None, reseal_inner=True, **fields) -> bytes:
    raw = _Raw.parse(base or _valid())
    for k, v in fields.items():
        raw.set(k, v)
    if reseal_inner:
        raw.reseal_inner()
    return raw.sealed()


def _cli_decode(tmp_path, data: bytes, capsys, *extra) -> str:
    src = tmp_path / "crafted.sdc"
    src.write_bytes(data)
    out = tmp_path / "out.png"
    rc = main(["decode", str(src), str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "model:" not in err  # refused before any model was loaded
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.png")]
    return err


# ------------------------------------------------------------------------------------------
# header fields
# ------------------------------------------------------------------------------------------


def test_k_zero(tmp_path, capsys):
    assert "palette size K=0 outside 1..20" in _cli_decode(tmp_path, _crafted(colors=0), capsys)


@pytest.mark.parametrize("w,h", [(0, 32), (37, 0), (0, 0)])
def test_image_size_zero(tmp_path, capsys, w, h):
    assert "image size" in _cli_decode(tmp_path, _crafted(width=w, height=h), capsys)


def test_image_65535_square_hits_the_pixel_cap(tmp_path, capsys):
    err = _cli_decode(tmp_path, _crafted(width=65535, height=65535, latent_height=8192, latent_width=8192), capsys)
    assert "exceeds the pixel cap of 67,108,864" in err and "--max-pixels" in err


@pytest.mark.parametrize("lh,lw", [(0, 5), (4, 0), (0, 0)])
def test_latent_size_zero(tmp_path, capsys, lh, lw):
    assert "latent size" in _cli_decode(tmp_path, _crafted(latent_height=lh, latent_width=lw), capsys)


def test_latent_65535_square_in_a_tiny_file(tmp_path, capsys):
    data = _crafted(latent_height=65535, latent_width=65535)
    tracemalloc.start()
    err = _cli_decode(tmp_path, data, capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "latent" in err and peak < 16 << 20


def test_latent_1024_square_in_a_1kb_file(tmp_path, capsys):
    # inconsistent with the image size: refused by the geometry check
    assert "cannot decode to" in _cli_decode(tmp_path, _crafted(latent_height=1024, latent_width=1024), capsys)
    # consistent (an 8192x8192 image) but over a lowered cap: refused by the cap, before any model
    data = _crafted(latent_height=1024, latent_width=1024, width=8192, height=8192)
    assert len(data) < 1024
    assert "pixel cap" in _cli_decode(tmp_path, data, capsys, "--max-pixels", "4000000")


def test_raw_zlib_bomb_is_bounded():
    base = _valid(method="raw", C=32, lh=4, lw=5)
    bomb = zlib.compress(bytes(1 << 30), 9)  # 1 MB that expands to 1 GiB
    raw = _Raw.parse(base)
    raw.set_payload(bomb)
    data = raw.sealed()
    header, payload = bitstream.unpack(data)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(BitstreamError, match="expected 640 bytes"):
        bitstream.decode_payload(header, payload)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20 and time.perf_counter() - t0 < 1


@pytest.mark.parametrize("coder", ["zlib", "lzma"])
def test_palette_coder_bombs_are_bounded(coder):
    import lzma

    raw = _Raw.parse(_valid(coder=coder))
    blob = bytes(64 << 20)
    comp = (
        b"\0" * 4 + lzma.compress(blob, format=lzma.FORMAT_RAW, filters=entropy._LZMA_FILTERS)
        if coder == "lzma"
        else zlib.compress(blob, 9)
    )
    raw.set_payload(comp)
    header, payload = bitstream.unpack(raw.sealed())
    tracemalloc.start()
    with pytest.raises(BitstreamError):
        bitstream.decode_payload(header, payload)
    assert tracemalloc.get_traced_memory()[1] < 8 << 20
    tracemalloc.stop()


def test_arith_k_65535_on_a_small_latent_is_refused_at_once(tmp_path, capsys):
    data = _crafted(_valid(coder="arith"), colors=65535)
    assert "K=65535 outside 1..20" in _cli_decode(tmp_path, data, capsys)
    # the largest K the header allows for this latent decodes in well under a second
    big = _valid(coder="arith", K=20, C=32, lh=4, lw=5)
    t0 = time.perf_counter()
    header, payload = bitstream.unpack(big)
    bitstream.decode_payload(header, payload)
    assert time.perf_counter() - t0 < 1


def test_image_larger_than_the_latent_is_not_padded_with_black(tmp_path, capsys):
    data = _crafted(width=10000, height=10000, latent_height=1, latent_width=1, colors=1)
    assert len(data) < 1100
    assert "pixel cap" in _cli_decode(tmp_path, data, capsys)
    data = _crafted(width=4000, height=4000, latent_height=1, latent_width=1, colors=1)
    assert "cannot decode to a 4000x4000 image" in _cli_decode(tmp_path, data, capsys)


def test_image_size_must_match_the_models_factor():
    data = _crafted(width=64, height=64, latent_height=4, latent_width=4)  # fine for d=16, not for TAEF2's 8
    header, _ = bitstream.unpack(data)
    bitstream.check_geometry(header, 16)
    with pytest.raises(BitstreamError, match="8x downsampling"):
        bitstream.check_geometry(header, 8)


@pytest.mark.parametrize("span", [math.nan, math.inf, -math.inf, 0.0, -8.0, 1e30])
def test_quantization_span(tmp_path, capsys, span):
    assert "quantization span" in _cli_decode(tmp_path, _crafted(quant_span=span), capsys)


@pytest.mark.parametrize(
    "strength,steps,needle",
    [
        (math.nan, 66, "strength"),
        (0.0, 66, "strength"),
        (2.0, 66, "strength"),
        (0.04, 0, "steps"),
        (0.04, 65535, "steps"),
    ],
)
def test_denoise_parameters(strength, steps, needle):
    h = Header(
        method="liq",
        coder="zlib",
        model_id="m/x",
        fingerprint=1,
        width=64,
        height=64,
        channels=4,
        latent_height=8,
        latent_width=8,
        quant_span=46.4,
        colors=4,
        denoise=True,
        denoise_strength=0.04,
        denoise_steps=66,
    )
    good = bitstream.pack(h, zlib.compress(bytes(4 * 4 + 64), 9))
    bitstream.unpack(good)
    raw = bytearray(good)
    off = 10 + len("m/x") + 19
    struct.pack_into("<fH", raw, off, strength, steps)
    body = bytes(raw[:-4])
    with pytest.raises(BitstreamError, match=needle):
        bitstream.unpack(body + struct.pack("<I", zlib.crc32(body)))


def test_arith_payload_shorter_than_it_claims():
    """Reading zeros past the end is allowed only for the bytes the encoder drops (at most 8)."""
    pal = np.unique(np.random.default_rng(3).integers(0, 256, (30, 8), dtype=np.uint8), axis=0)
    idx = np.random.default_rng(4).integers(0, len(pal), (12, 12))
    stream = entropy.pack_arith(pal, idx)
    K, C, H, W = len(pal), 8, 12, 12
    entropy.unpack_arith(stream, K, C, H, W)
    for cut in (9, 20, len(stream) // 2):
        short = entropy._seal(stream[4:-cut], K, C, H, W)
        with pytest.raises(BitstreamError, match="ran out of payload|does not end where"):
            entropy.unpack_arith(short, K, C, H, W)


def test_arith_truncations_are_caught_by_the_final_state():
    pal = np.unique(np.random.default_rng(5).integers(0, 256, (40, 4), dtype=np.uint8), axis=0)
    idx = np.random.default_rng(6).integers(0, len(pal), (16, 16))
    stream = entropy.pack_arith(pal, idx)
    caught = 0
    for cut in range(1, 9):
        try:
            entropy.unpack_arith(entropy._seal(stream[4:-cut], len(pal), 4, 16, 16), len(pal), 4, 16, 16)
        except BitstreamError:
            caught += 1
    assert caught >= 6  # 1..8 missing bytes: the decoder's end state or its length check notices


def test_encoder_drops_at_most_max_implicit_zeros():
    pal = np.full((1, 64), 128, np.uint8)  # delta-coded: all zero deltas, a stream of zero bytes
    stream = entropy.pack_arith(pal, np.zeros((4, 4), np.int64))
    pal2, _ = entropy.unpack_arith(stream, 1, 64, 4, 4)
    np.testing.assert_array_equal(pal2, pal)


# ------------------------------------------------------------------------------------------
# model ids
# ------------------------------------------------------------------------------------------


def test_model_id_tilde_user_in_the_file(tmp_path, capsys):
    h = Header(
        method="kmeans",
        coder="zlib",
        model_id="~nosuchuser",
        fingerprint=1,
        width=40,
        height=32,
        channels=32,
        latent_height=4,
        latent_width=5,
        quant_span=8.0,
        colors=2,
        dithered=False,
    )
    data = bitstream.pack(h, entropy.pack_zlib(np.array([[0] * 32, [1] * 32], np.uint8), np.zeros((4, 5), int)))
    err = _cli_decode(tmp_path, data, capsys)
    assert "names a path, which a file may not choose" in err


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("~nosuchuser", "no user 'nosuchuser'"),
        ("~nosuchuser/sd", "no user 'nosuchuser'"),
        ("a/b/c", "neither an existing folder nor a valid Hugging Face id"),
        (" taef2", "surrounding spaces"),
        ("x" * 300, "neither an existing folder"),
    ],
)
def test_odd_model_ids_on_the_command_line(tmp_path, capsys, spec, needle):
    img = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (90, 120, 150)).save(img)
    assert main(["encode", str(img), str(tmp_path / "o.sdc"), "--model", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and needle in err
    assert not (tmp_path / "o.sdc").exists()


# ------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def png(tmp_path):
    p = tmp_path / "x.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
    return p


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_encode_never_overwrites_its_input(png, tmp_path, capsys, how):
    before = png.read_bytes()
    target = png
    if how == "symlink":
        target = tmp_path / "link.png"
        target.symlink_to(png)
    elif how == "hardlink":
        target = tmp_path / "hard.png"
        os.link(png, target)
    assert main(["encode", str(png), str(target), "--model", "taef2", "--colors", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is the input file" in err and "\n" not in err
    assert png.read_bytes() == before


def test_decode_never_overwrites_its_input(tmp_path, capsys):
    src = tmp_path / "a.png"  # an .sdc file with an image name
    src.write_bytes(_valid())
    assert main(["decode", str(src), str(src)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert src.read_bytes() == _valid()


@pytest.mark.parametrize("cmd", ["encode", "decode"])
def test_output_in_a_missing_folder_or_a_directory(png, tmp_path, capsys, cmd):
    src = png
    if cmd == "decode":
        src = tmp_path / "a.sdc"
        src.write_bytes(_valid())
    name = "o.sdc" if cmd == "encode" else "o.png"
    for out, needle in ((tmp_path / "missing" / name, "does not exist"), (tmp_path, "is a directory")):
        assert main([cmd, str(src), str(out), "--model", "taef2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err


def test_atomic_write_leaves_no_partial_file(tmp_path):
    from helpers.cli import write_atomic

    out = tmp_path / "o.sdc"
    out.write_bytes(b"old complete file")

    def failing(tmp):
        tmp.write_bytes(b"half of a new fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(out, failing)
    assert out.read_bytes() == b"old complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sdc"]
    write_atomic(out, lambda tmp: tmp.write_bytes(b"new"))
    assert out.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["o.sdc"]


def test_failed_decode_leaves_no_file(taef2, tmp_path, capsys):
    """A file whose header is fine but whose payload is corrupt fails after the model loaded: nothing written,
    and an existing output stays as it was."""
    raw = _Raw.parse(_valid(coder="zlib", fingerprint=taef2.fingerprint))
    p = bytearray(raw.payload)
    p[5] ^= 0xFF
    raw.set_payload(bytes(p))
    src = tmp_path / "bad.sdc"
    src.write_bytes(raw.sealed())
    out = tmp_path / "o.png"
    out.write_bytes(b"previous")
    assert main(["decode", str(src), str(out), "--model", "taef2"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "model: taef2" in err and last.startswith("error: zlib palette/index stream is corrupted")
    assert last.endswith("re-copy the file or re-encode the image")
    assert out.read_bytes() == b"previous" and sorted(q.name for q in tmp_path.iterdir()) == ["bad.sdc", "o.png"]


# ------------------------------------------------------------------------------------------
# option ranges
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--colors", "0"], "--colors: must be in [1, 4096] (libimagequant: 2..256), got 0"),
        (["--colors", "5000"], "--colors: must be in [1, 4096]"),
        (
            ["--target-bytes", "900", "--max-colors", "0"],
            "--max-colors: must be in [2, 4096] (libimagequant stops at 256), got 0",
        ),
        (["--target-bytes", "900", "--max-colors", "100000"], "--max-colors: must be in [2, 4096]"),
        (["--target-bytes", "0"], "--target-bytes: must be in [1, "),
        (["--dither", "1.5"], "--dither: must be in [0, 1]"),
        (["--dither", "nan"], "not a finite number"),
        (["--denoise-strength", "0"], "--denoise-strength: must be in (0, 1]"),
        (["--denoise-steps", "0"], "--denoise-steps: must be in [1, 1000]"),
        (["--max-pixels", "0"], "--max-pixels: must be in [1, ]"),
        (["--coder", "brotli"], "invalid choice: 'brotli'"),
    ],
)
def test_out_of_range_options_are_refused_at_parsing(png, tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        main(["encode", str(png), str(tmp_path / "o.sdc"), "--model", "taef2", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "model:" not in err


def test_limits_default_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SDCOMP_MAX_PIXELS", "1000")
    assert Limits.default().max_pixels == 1000
    assert Limits.default(5).max_pixels == 5
    monkeypatch.setenv("SDCOMP_MAX_PIXELS", "lots")
    with pytest.raises(BitstreamError, match="SDCOMP_MAX_PIXELS"):
        Limits.default()


def test_subprocess_cli_no_traceback(tmp_path, png):
    """The real command line: one `error:` line, exit status 2, no traceback (crafted file, odd model id)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    bad = tmp_path / "k0.sdc"
    bad.write_bytes(_crafted(colors=0))
    for args in (
        ["decode", str(bad), str(tmp_path / "o.png")],
        ["encode", str(png), str(tmp_path / "o.sdc"), "--model", "~nosuchuser"],
    ):
        r = subprocess.run([sys.executable, "-m", "helpers", *args], cwd=ROOT, capture_output=True, text=True, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: ")
