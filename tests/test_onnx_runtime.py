"""TAEF2 on ONNX Runtime: agreement with PyTorch, the graph cache (fingerprint, stale/corrupt graphs, no torch),
the runtime switch, and what the CLI imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers.codec import CodecParams, decode, encode, encode_latents
from helpers.errors import SDCError
from helpers.images import from_nchw, to_nchw
from helpers.methods.palette.quantize import quantize_8bit
from tests.conftest import KODAK, ROOT, TAEF2_DIR, need_shared

pytest.importorskip("onnxruntime")

#: what the ONNX path must never import (torch and everything that drags it in, plotting, metrics, SciPy)
HEAVY = (
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "accelerate",
    "matplotlib",
    "scipy",
    "skimage",
    "cvvdp",
    "lpips",
    "flip_evaluator",
    "ssimulacra2",
    "DISTS_pytorch",
    "pytorch_msssim",
    "huggingface_hub",
    "pandas",
    "libimagequant",
    "onnx",
    "helpers.metrics",
    "helpers.plots",
    "helpers.baselines",
    "helpers.backends.torch_base",
    "helpers.backends.load",
    "helpers.backends.sd",
    "helpers.backends.taef2",
    "helpers.backends.denoise",
)


@pytest.fixture(scope="session")
def onnx_taef2(taef2):
    from helpers.backends.onnx_runtime import load_taef2_onnx

    return load_taef2_onnx(TAEF2_DIR)


@pytest.fixture(scope="session")
def crop256():
    need_shared()
    im = Image.open(KODAK / "kodim23.png").convert("RGB")
    w, h = im.size
    return im.crop(((w - 256) // 2, (h - 256) // 2, (w + 256) // 2, (h + 256) // 2))


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_from_nchw_matches_the_torch_conversion():
    import torch

    rng = np.random.default_rng(0)
    x = rng.uniform(-1.2, 1.2, (1, 3, 17, 23)).astype(np.float32)
    x[0, 0, 0, :6] = np.array([-1, 1, 0, 1 / 255, (0.5 / 127.5) - 1, (1.5 / 127.5) - 1], np.float32)  # .5 ties
    t = torch.from_numpy(x)
    ref = ((t[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.asarray(from_nchw(x)), ref)
    np.testing.assert_array_equal(np.asarray(from_nchw(t)), ref)
    img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    np.testing.assert_array_equal(to_nchw(img), (np.asarray(img, np.float32) / 127.5 - 1).transpose(2, 0, 1)[None])


def test_same_fingerprint_and_geometry_as_pytorch(taef2, onnx_taef2):
    from helpers.backends.taef2 import halos

    assert onnx_taef2.fingerprint == taef2.fingerprint
    assert (onnx_taef2.latent_channels, onnx_taef2.downsample, onnx_taef2.quant_span) == (
        taef2.latent_channels,
        taef2.downsample,
        taef2.quant_span,
    )
    assert (onnx_taef2.enc_halo, onnx_taef2.dec_halo) == halos()
    assert onnx_taef2.model_id == taef2.model_id == "taef2"
    assert "ONNX Runtime" in onnx_taef2.describe()


def test_both_runtimes_implement_the_backend_protocol(taef2, onnx_taef2):
    """One protocol, subclassed explicitly: where a backend runs is a string, not a (fake) torch device."""
    from helpers.backends.base import Backend
    from helpers.backends.torch_base import TorchBackend

    assert isinstance(taef2, TorchBackend) and not isinstance(onnx_taef2, TorchBackend)
    for b, runtime in ((taef2, "torch"), (onnx_taef2, "onnx")):
        assert isinstance(b, Backend) and b.runtime == runtime and b.kind == "taef2"
        assert b.device_name == "cpu" and b.device_type == "cpu"
        assert not b.has_unet and not b.random_weights
        b.synchronize()  # a no-op on the CPU
    assert str(taef2.device) == taef2.device_name
    assert not hasattr(onnx_taef2, "device") and not hasattr(onnx_taef2, "dtype")


def test_onnx_agrees_with_pytorch_within_one_level(taef2, onnx_taef2, crop256):
    """The measured bound (README, Runtimes): latents within 1e-4, at most 1 of 8-bit latent levels and decoded
    pixel levels apart, on well under 0.1 % of the values."""
    x = to_nchw(crop256)
    z_t, z_o = taef2.encode_array(x), onnx_taef2.encode_array(x)
    assert z_o.shape == z_t.shape == (1, 32, 32, 32)
    assert float(np.abs(z_o - z_t).max()) < 1e-4
    dq = np.abs(quantize_8bit(z_o[0], 8.0).astype(int) - quantize_8bit(z_t[0], 8.0).astype(int))
    assert dq.max() <= 1 and dq.mean() < 1e-3
    p_t, p_o = _pixels(from_nchw(taef2.decode_array(z_t))), _pixels(from_nchw(onnx_taef2.decode_array(z_t)))
    diff = np.abs(p_o - p_t)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # the whole chain (ONNX encoder + ONNX decoder) against PyTorch's
    p_oo = _pixels(from_nchw(onnx_taef2.decode_array(z_o)))
    assert np.abs(p_oo - p_t).max() <= 1


def test_same_latents_give_the_same_bytes_and_cross_decode(taef2, onnx_taef2, crop256):
    z = encode_latents(taef2, crop256)
    for coder in ("zlib", "arith"):
        params = CodecParams(method="palette", colors=1024, coder=coder)
        a = encode(crop256, taef2, params, target_bytes=2000, latents=z)
        b = encode(crop256, onnx_taef2, params, target_bytes=2000, latents=z)
        assert a.data == b.data and a.nbytes <= 2000
    d_t, d_o = decode(a.data, taef2), decode(a.data, onnx_taef2)
    np.testing.assert_array_equal(d_t.latents, d_o.latents)  # entropy decoding is runtime-independent
    diff = np.abs(_pixels(d_o.image) - _pixels(d_t.image))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_tiling_is_exact_and_threads_arena_do_not_change_pixels(onnx_taef2):
    from helpers.backends.onnx_runtime import OrtSettings, load_taef2_onnx

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:320, 0:256]
    img = np.stack([np.sin(xx / 9) * 90 + 128, np.cos(yy / 13) * 90 + 128, (xx * yy) % 256], 0)
    x = ((img + rng.normal(0, 10, img.shape)).clip(0, 255)[None].astype(np.float32) / 127.5 - 1).astype(np.float32)
    old = onnx_taef2.tile, onnx_taef2.inner_tile
    try:
        onnx_taef2.tile = onnx_taef2.inner_tile = 10**6
        z_ref = onnx_taef2.encode_array(x)
        y_ref = onnx_taef2.decode_array(z_ref)
        onnx_taef2.tile = 128  # 3x2 encoder tiles, 3x2 decoder tiles
        np.testing.assert_array_equal(onnx_taef2.encode_array(x), z_ref)
        np.testing.assert_array_equal(onnx_taef2.decode_array(z_ref), y_ref)
        onnx_taef2.tile, onnx_taef2.inner_tile = 192, 64  # 2x2 outer tiles, each cut into 4x4 inner tiles
        np.testing.assert_array_equal(onnx_taef2.encode_array(x), z_ref)
        np.testing.assert_array_equal(onnx_taef2.decode_array(z_ref), y_ref)
    finally:
        onnx_taef2.tile, onnx_taef2.inner_tile = old
    for settings in (
        OrtSettings(threads=1),
        OrtSettings(threads=2, arena=True, mem_pattern=True),
        OrtSettings(threads=3, spinning=True),
    ):
        other = load_taef2_onnx(TAEF2_DIR, settings=settings)
        other.tile = other.inner_tile = 10**6
        np.testing.assert_array_equal(other.encode_array(x), z_ref)
        np.testing.assert_array_equal(other.decode_array(z_ref), y_ref)


def test_stale_and_corrupt_caches_are_reexported(taef2, tmp_path, monkeypatch):
    from helpers.backends import onnx_runtime as ox

    monkeypatch.setenv("SDCOMP_CACHE", str(tmp_path / "cache"))
    notes: list[str] = []
    b = ox.load_taef2_onnx(TAEF2_DIR, purpose="decode", log=notes.append)
    assert len(notes) == 1 and "exporting TAEF2 to ONNX once" in notes[0] and "re-" not in notes[0]
    folder = b.folder
    assert folder.parent.parent == tmp_path / "cache" and (folder / "manifest.json").is_file()
    assert not list(folder.parent.glob(".*"))  # no temporary or old folders left beside it
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fingerprint"] == taef2.fingerprint and manifest["weights_sha256"] == ox.weights_digest(
        ox.taef2_weight_files(TAEF2_DIR)
    )
    z = np.zeros((1, 32, 4, 4), np.float32)
    y_ref = b.decode_array(z)
    # a flipped byte inside a graph (same size): caught by the SHA-256 when the session opens, re-exported
    g = folder / "dec_last.onnx"
    data = bytearray(g.read_bytes())
    data[len(data) // 2] ^= 0xFF
    g.write_bytes(bytes(data))
    notes.clear()
    b2 = ox.load_taef2_onnx(TAEF2_DIR, purpose="decode", log=notes.append)
    assert notes and "re-exporting" in notes[0]
    np.testing.assert_array_equal(b2.decode_array(z), y_ref)
    # a manifest of other weights (stale): re-exported too; the result is identical
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights_sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    notes.clear()
    b3 = ox.load_taef2_onnx(TAEF2_DIR, purpose="decode", log=notes.append)
    assert notes and "stale or corrupt" in notes[0]
    np.testing.assert_array_equal(b3.decode_array(z), y_ref)
    # intact: no note, nothing rewritten
    notes.clear()
    mtime = (folder / "manifest.json").stat().st_mtime_ns
    ox.load_taef2_onnx(TAEF2_DIR, log=notes.append)
    assert notes == [] and (folder / "manifest.json").stat().st_mtime_ns == mtime


def test_other_weights_get_their_own_graphs(taef2, tmp_path, monkeypatch):
    """Weights edited on disk: a new digest, a new export whose fingerprint differs, so a file made with the
    original weights is refused exactly as with PyTorch."""
    import torch

    from helpers.backends.onnx_runtime import load_taef2_onnx

    monkeypatch.setenv("SDCOMP_CACHE", str(tmp_path / "cache"))
    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(TAEF2_DIR / "taef2_encoder.pth", wdir)
    state = torch.load(TAEF2_DIR / "taef2_decoder.pth", weights_only=True)
    key = sorted(state)[0]
    state[key] = state[key] + 0.01
    torch.save(state, wdir / "taef2_decoder.pth")
    other = load_taef2_onnx(wdir, purpose="decode", log=lambda m: None)
    assert other.fingerprint != taef2.fingerprint
    from helpers.backends.taef2 import load_taef2

    assert other.fingerprint == load_taef2(wdir, device="cpu").fingerprint


# ------------------------------------------------------------------------------------------
# the runtime switch
# ------------------------------------------------------------------------------------------


def test_choose_runtime(monkeypatch, tmp_path):
    from helpers.backends import resolve as rt

    monkeypatch.setattr(rt, "gpu_visible", lambda: False)
    assert rt.choose_runtime("auto", tmp_path, "auto") == "onnx"
    assert rt.choose_runtime("auto", tmp_path, "cpu") == "onnx"
    assert rt.choose_runtime("auto", None, "cpu") == "torch"  # Stable Diffusion
    assert rt.choose_runtime("auto", tmp_path, "cuda") == "torch"
    assert rt.choose_runtime("torch", tmp_path, "cpu") == "torch"
    monkeypatch.setattr(rt, "gpu_visible", lambda: True)
    assert rt.choose_runtime("auto", tmp_path, "auto") == "torch"  # a GPU: PyTorch
    assert rt.choose_runtime("auto", tmp_path, "cpu") == "onnx"
    with pytest.raises(SDCError, match="runs TAEF2 only"):
        rt.choose_runtime("onnx", None, "cpu")
    with pytest.raises(SDCError, match="CPU only"):
        rt.choose_runtime("onnx", tmp_path, "cuda")
    with pytest.raises(SDCError, match="unknown runtime"):
        rt.choose_runtime("tensorflow", tmp_path, "cpu")
    monkeypatch.setattr(rt, "onnxruntime_available", lambda: False)
    assert rt.choose_runtime("auto", tmp_path, "cpu") == "torch"
    with pytest.raises(SDCError, match=r"onnxruntime is not installed: pip install onnxruntime==1\.32\.0"):
        rt.choose_runtime("onnx", tmp_path, "cpu")


def test_taef2_dir_of(tmp_path, monkeypatch):
    from helpers.backends import resolve as rt

    assert rt.taef2_dir_of("taef2") == rt.default_taef2_dir()
    assert rt.taef2_dir_of(str(TAEF2_DIR)) == TAEF2_DIR
    assert rt.taef2_dir_of("CompVis/stable-diffusion-v1-4") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # empty hub cache, offline: auto means TAEF2
    assert rt.taef2_dir_of("auto") == rt.default_taef2_dir()
    (tmp_path / "models--CompVis--stable-diffusion-v1-4" / "snapshots" / "abc" / "vae").mkdir(parents=True)
    (tmp_path / "models--CompVis--stable-diffusion-v1-4" / "snapshots" / "abc" / "vae" / "config.json").write_text("{}")
    assert rt.taef2_dir_of("auto") is None  # SD v1.4 cached: auto means SD (PyTorch)


def test_cli_refuses_onnx_for_sd_and_gpu(tiny_sd_dir, tmp_path, capsys):
    from helpers.cli import main

    src = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(src)
    assert main(["encode", str(src), str(tmp_path / "o.sdc"), "--model", str(tiny_sd_dir), "--runtime", "onnx"]) == 2
    assert "runs TAEF2 only" in capsys.readouterr().err
    assert (
        main(["encode", str(src), str(tmp_path / "o.sdc"), "--model", "taef2", "--runtime", "onnx", "--device", "cuda"])
        == 2
    )
    assert "CPU only" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# the CLI in subprocesses: both runtimes, what gets imported, no torch, no onnxruntime
# ------------------------------------------------------------------------------------------


def _cli(argvs, block=(), env=None):
    """Run helpers.cli.main on each argv in one fresh interpreter (modules in ``block`` made unimportable);
    returns (completed process, sorted sys.modules at the end, return codes)."""
    code = (
        "import sys, json\n"
        f"for m in {list(block)!r}:\n    sys.modules[m] = None\n"
        "from helpers.cli import main\n"
        f"rcs = [main(a) for a in {argvs!r}]\n"
        "print('RESULT ' + json.dumps({'rcs': rcs, 'modules': sorted(k for k, v in sys.modules.items() "
        "if v is not None)}))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stderr[-3000:]
    res = json.loads(line[-1][7:])
    return r, res["modules"], res["rcs"]


@pytest.fixture(scope="session")
def cached_graphs(onnx_taef2):
    return onnx_taef2.folder  # exported into the session cache by the fixture


def test_onnx_cli_imports_no_heavy_module_and_logs_stages(cached_graphs, crop256, tmp_path):
    src, sdc, png = tmp_path / "in.png", tmp_path / "o.sdc", tmp_path / "o.png"
    crop256.save(src)
    log = tmp_path / "timing.json"
    r, modules, rcs = _cli(
        [
            [
                "encode",
                str(src),
                str(sdc),
                "--model",
                "taef2",
                "--runtime",
                "onnx",
                "--target-bytes",
                "2000",
                "--coder",
                "arith",
            ],
            ["decode", str(sdc), str(png), "--runtime", "onnx"],
        ],
        env={"SDCOMP_TIMING": str(log)},
    )
    assert rcs == [0, 0], r.stderr
    assert "via ONNX Runtime" in r.stderr and "exporting" not in r.stderr
    loaded = [m for m in HEAVY if m in modules or any(k.startswith(m + ".") for k in modules)]
    assert loaded == [], f"the ONNX CLI path imported {loaded}"
    assert "onnxruntime" in modules and "helpers.backends.onnx_runtime" in modules
    assert Image.open(png).size == (256, 256) and sdc.stat().st_size <= 2000
    doc = json.loads(log.read_text())  # the decode's log (the last command) overwrote the encode's
    assert doc["command"] == "decode" and doc["runtime"] == "onnx"
    assert [m["stage"] for m in doc["marks"]] == ["main", "imports", "read", "imports", "load", "decode", "write"]
    t = [m["t"] for m in doc["marks"]]
    assert t == sorted(t) and all(m["hwm_MiB"] > 10 for m in doc["marks"])
    assert set(doc["codec_wall"]) >= {"unpack", "vae_decode"} and doc["pixels"] == 256 * 256


def test_cli_without_torch_uses_cached_graphs_and_explains_missing_ones(cached_graphs, crop256, tmp_path):
    src = tmp_path / "in.png"
    crop256.resize((64, 48)).save(src)
    from helpers.backends.resolve import gpu_visible

    pick = ["--runtime", "onnx"] if gpu_visible() else []  # the default (auto) means ONNX Runtime on a CPU
    args = [
        ["encode", str(src), str(tmp_path / "o.sdc"), "--model", "taef2", "--colors", "8", *pick],
        ["decode", str(tmp_path / "o.sdc"), str(tmp_path / "o.png"), *pick],
    ]
    r, modules, rcs = _cli(args, block=("torch",))
    assert rcs == [0, 0], r.stderr
    assert "torch" not in [m.split(".")[0] for m in modules]
    # an empty cache and no torch: one line naming the fixes
    r, _, rcs = _cli(args[:1], block=("torch",), env={"SDCOMP_CACHE": str(tmp_path / "empty")})
    err = r.stderr.strip().splitlines()
    assert rcs == [2] and err[-1].startswith("error: no ONNX graphs of these TAEF2 weights")
    assert "PyTorch is not installed" in err[-1] and "--runtime torch" in err[-1] and "Traceback" not in r.stderr
    # a corrupt cache and no torch
    broken = tmp_path / "broken"
    shutil.copytree(cached_graphs.parent.parent, broken)
    victim = broken / "onnx" / cached_graphs.name / "enc_first.onnx"  # the stock encoder's (other graphs may be cached)
    victim.write_bytes(victim.read_bytes()[:1000])
    r, _, rcs = _cli(args[:1], block=("torch",), env={"SDCOMP_CACHE": str(broken)})
    assert rcs == [2] and "stale or corrupt" in r.stderr and "delete that folder" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_without_onnxruntime(cached_graphs, crop256, tmp_path):
    src = tmp_path / "in.png"
    crop256.resize((64, 48)).save(src)
    out = str(tmp_path / "o.sdc")
    r, _, rcs = _cli(
        [["encode", str(src), out, "--model", "taef2", "--colors", "8", "--runtime", "onnx"]], block=("onnxruntime",)
    )
    assert rcs == [2]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: onnxruntime is not installed: pip install onnxruntime==1.32.0, or use --runtime torch"
    )
    r, modules, rcs = _cli([["encode", str(src), out, "--model", "taef2", "--colors", "8"]], block=("onnxruntime",))
    assert rcs == [0] and "torch" in modules  # auto falls back to PyTorch


def test_cli_runtimes_cross_decode_within_the_bound(cached_graphs, crop256, tmp_path):
    """Files written by either runtime decode on either; the pixels agree to the measured bound."""
    from helpers.cli import main

    src = tmp_path / "in.png"
    crop256.save(src)
    pixels = {}
    for enc_rt in ("torch", "onnx"):
        sdc = tmp_path / f"{enc_rt}.sdc"
        assert main(["encode", str(src), str(sdc), "--model", "taef2", "--runtime", enc_rt, "--colors", "64"]) == 0
        for dec_rt in ("torch", "onnx"):
            png = tmp_path / f"{enc_rt}-{dec_rt}.png"
            assert main(["decode", str(sdc), str(png), "--runtime", dec_rt]) == 0
            pixels[enc_rt, dec_rt] = _pixels(Image.open(png))
    for enc_rt in ("torch", "onnx"):
        diff = np.abs(pixels[enc_rt, "onnx"] - pixels[enc_rt, "torch"])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
