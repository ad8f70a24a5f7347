"""Encoder variants for the stock TAEF2 decoder (``--encoder``): the tc method's trained encoder by default, the
stock one on request, the same decoder and fingerprint either way; clear errors where a model has no such encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.backends import taef2_spec as spec
from helpers.codec import CodecParams, decode, encode, encoder_name
from helpers.errors import ModelNotFoundError, SDCError
from tests.conftest import KODAK, TAEF2_DIR, need_shared


@pytest.fixture(scope="module")
def crop128():
    need_shared()
    im = Image.open(KODAK / "kodim23.png").convert("RGB")
    return im.crop((300, 200, 428, 328))


def _direct_tc_latent(img) -> np.ndarray:
    """The tc encoder run directly: an independently built TAEF2 encoder with the shipped weights, untiled."""
    from helpers.backends.taef2 import make_encoder

    enc = make_encoder()
    enc.load_state_dict(
        {k: v.float() for k, v in torch.load(spec.encoder_variant_file("tc"), weights_only=True).items()}
    )
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        return enc.eval()(x)[0].numpy()


def test_registry_names_files_and_errors(tmp_path, monkeypatch):
    fp = spec.ENCODER_VARIANTS["tc"][1]
    assert spec.encoder_names() == ("stock", "tc")
    assert spec.encoder_names(fp) == ("stock", "tc") and spec.encoder_names(fp ^ 1) == ("stock",)
    assert spec.encoder_variant_file("tc").name == "taef2_tc_encoder.pth"
    assert spec.encoder_of_file(spec.encoder_variant_file("tc")) == "tc"
    assert spec.encoder_of_file(TAEF2_DIR / spec.TAEF2_ENCODER) == "stock"
    with pytest.raises(SDCError, match=r"^unknown TAEF2 encoder 'nope': choose one of stock, tc$"):
        spec.encoder_variant_file("nope")
    with pytest.raises(SDCError, match=r"trained for the stock TAEF2 decoder \(f75bba2b\).*pass --encoder stock$"):
        spec.encoder_variant_file("tc", fp ^ 1)
    monkeypatch.setattr(spec, "ENCODER_DATA_DIR", tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"taef2_tc_encoder.pth is missing: reinstall"):
        spec.encoder_variant_file("tc")


def test_torch_variant_shares_the_decoder_and_encodes_with_the_trained_weights(taef2, crop128):
    from helpers.codec import encode_latents

    tc = taef2.with_encoder("tc")
    assert tc.encoder_name == "tc" and taef2.encoder_name == "stock"
    assert tc.decoder is taef2.decoder and tc.fingerprint == taef2.fingerprint
    assert taef2.with_encoder("tc") is tc and tc.with_encoder("stock") is taef2  # loaded once, kept
    z_tc, z_stock = encode_latents(tc, crop128), encode_latents(taef2, crop128)
    np.testing.assert_allclose(z_tc, _direct_tc_latent(crop128), atol=1e-4)
    assert np.abs(z_tc - z_stock).mean() > 0.05  # another encoder, not the stock one under a new name


def test_tc_codes_with_its_encoder_by_default_and_files_decode_with_the_stock_decoder(taef2, crop128):
    tc = taef2.with_encoder("tc")
    assert encoder_name(CodecParams(method="tc"), taef2) == "tc"
    assert encoder_name(CodecParams(method="palette"), taef2) == "stock"
    assert encoder_name(CodecParams(method="tc", encoder="stock"), taef2) == "stock"
    assert encoder_name(CodecParams(method="palette", encoder="tc"), taef2) == "tc"
    default = encode(crop128, taef2, CodecParams(method="tc", step=120.0))
    via_variant = encode(crop128, tc, CodecParams(method="tc", step=120.0))
    stock = encode(crop128, taef2, CodecParams(method="tc", step=120.0, encoder="stock"))
    assert default.data == via_variant.data != stock.data
    assert default.header.fingerprint == stock.header.fingerprint == taef2.fingerprint
    a, b = decode(default.data, taef2), decode(default.data, tc)  # the encoder plays no part in decoding
    assert np.array_equal(a.pixels, b.pixels)


def test_models_without_the_variant(tiny_sd, taef2, tmp_path, crop128):
    # SD: tc keeps the model's own encoder; asking for tc's is a one-line error
    assert tiny_sd.encoder_names() == ("stock",) and tiny_sd.with_encoder("stock") is tiny_sd
    assert encoder_name(CodecParams(method="tc"), tiny_sd) == "stock"
    with pytest.raises(SDCError, match=r"^--encoder tc: '.*' has only its own encoder; pass --encoder stock"):
        encoder_name(CodecParams(method="tc", encoder="tc"), tiny_sd)
    # a TAEF2 folder with another decoder: the variant was trained for the stock one
    from helpers.backends.taef2 import load_taef2

    state = torch.load(TAEF2_DIR / "taef2_decoder.pth", weights_only=True)
    key = sorted(state)[0]
    state[key] = state[key] + 0.01
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "taef2_encoder.pth").write_bytes((TAEF2_DIR / "taef2_encoder.pth").read_bytes())
    torch.save(state, tmp_path / "w" / "taef2_decoder.pth")
    other = load_taef2(tmp_path / "w", device="cpu")
    assert other.encoder_names() == ("stock",) and encoder_name(CodecParams(method="tc"), other) == "stock"
    with pytest.raises(SDCError, match=r"trained for the stock TAEF2 decoder \(f75bba2b\), this model's decoder is"):
        encoder_name(CodecParams(method="tc", encoder="tc"), other)


def test_onnx_variant_matches_pytorch(taef2, crop128, tmp_path):
    pytest.importorskip("onnxruntime")
    from helpers.backends.onnx_runtime import load_taef2_onnx
    from helpers.codec import encode_latents

    logs: list[str] = []
    onnx_tc = load_taef2_onnx(TAEF2_DIR, purpose="encode", encoder="tc", log=logs.append)
    assert onnx_tc.encoder_name == "tc" and onnx_tc.fingerprint == taef2.fingerprint
    assert onnx_tc.weight_files[0] == spec.encoder_variant_file("tc")
    np.testing.assert_allclose(
        encode_latents(onnx_tc, crop128), encode_latents(taef2.with_encoder("tc"), crop128), atol=2e-3
    )
    assert onnx_tc.with_encoder("stock").encoder_name == "stock"
    assert onnx_tc.with_encoder("stock").with_encoder("tc") is onnx_tc


def test_cli_encoder_flag(taef2, crop128, tmp_path, capsys):
    from helpers.cli import main

    src = tmp_path / "in.png"
    crop128.save(src)
    sizes = {}
    for flag in ([], ["--encoder", "stock"], ["--encoder", "tc"]):
        out = tmp_path / f"o{len(flag)}{flag[-1] if flag else ''}.sdc"
        assert (
            main(["encode", str(src), str(out), "--model", "taef2", "--runtime", "torch", "--step", "120", *flag]) == 0
        )
        sizes[" ".join(flag)] = out.read_bytes()
    err = capsys.readouterr().err
    assert err.count("encoder tc") == 2
    assert sizes[""] == sizes["--encoder tc"] != sizes["--encoder stock"]
    assert sizes[""] == encode(crop128, taef2, CodecParams(method="tc", step=120.0)).data


def test_benchmark_remakes_records_of_another_encoder_or_refine_schedule():
    import zlib

    from helpers.backends.taef2_spec import ENCODER_DATA_DIR, encoder_digest
    from helpers.bench.config import refine_label
    from helpers.bench.runner import _coded_differently
    from helpers.methods.tc.refine import SCHEDULES, detail_weight, schedule_label

    ours = {"kind": "ours", "model_id": "taef2", "coder": "tc"}
    assert _coded_differently(ours)  # made before encoder variants: the stock encoder
    assert _coded_differently({**ours, "coder": "tc+e1", "encoder": "stock"})

    digest = f"{zlib.crc32((ENCODER_DATA_DIR / 'taef2_tc_encoder.pth').read_bytes()):08x}"
    assert encoder_digest("tc") == digest and encoder_digest("stock") is None
    today = {**ours, "encoder": "tc", "encoder_weights": digest, "payload": "tc payload 2"}
    assert not _coded_differently(today)
    # written by tc payload version 1 (no scale offsets), or before records named the payload: made again
    assert _coded_differently({**today, "payload": "tc payload 1"})
    assert _coded_differently({k: v for k, v in today.items() if k != "payload"})
    # the same name with other weights (a re-trained encoder shipped since), or a record from before the digest
    assert _coded_differently({**ours, "encoder": "tc", "encoder_weights": "0badf00d"})
    assert _coded_differently({**ours, "encoder": "tc"})
    assert not _coded_differently({**ours, "coder": "zlib"}) and not _coded_differently({**ours, "coder": "arith"})
    assert _coded_differently({**ours, "coder": "zlib", "encoder": "tc"})
    assert not _coded_differently({**ours, "model_id": "CompVis/stable-diffusion-v1-4", "payload": "tc payload 2"})
    assert not _coded_differently({"kind": "baseline", "codec": "avif", "model_id": "taef2", "coder": "tc"})
    # effort variants: refined with today's schedule, or made again (another schedule, or from before the field)
    e3 = {**today, "coder": "tc+e3"}
    from helpers.methods.tc.precision import resolve_precision

    base = "+".join(f"{n}x{lr:g}" for n, lr in SCHEDULES[3])
    beta = f" detail {detail_weight(3):g}"
    assert schedule_label(3) == base + beta and schedule_label(3, "bf16") == base + "@bf16" + beta
    assert schedule_label(3, detail=0.0) == base + " detail 0" and schedule_label(0) is None
    # refined at this CPU's default precision (auto); a record refined at the other one is made again
    label = schedule_label(3, resolve_precision("auto"))
    assert _coded_differently({**e3, "refine": schedule_label(3, "fp32" if "@bf16" in label else "bf16")})
    assert refine_label("tc", 3) == label and refine_label("tc", 0) is None and refine_label("palette", 0) is None
    assert not _coded_differently({**e3, "refine": label})
    # refined with another detail weight, or before the label named it: made again
    prec = "bf16" if "@bf16" in label else "fp32"
    assert _coded_differently({**e3, "refine": schedule_label(3, prec, detail=detail_weight(3) / 2)})
    assert _coded_differently({**e3, "refine": label.split(" ")[0]})
    assert _coded_differently(
        {**e3, "refine": "10x0.05+10x0.03+10x0.02" if label != "10x0.05+10x0.03+10x0.02" else "1x1"}
    )
    assert _coded_differently(e3)
    sd = {**e3, "model_id": "CompVis/stable-diffusion-v1-4", "encoder": "stock"}
    assert _coded_differently(sd) and not _coded_differently({**sd, "refine": label})
