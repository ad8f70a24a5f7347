"""The decoder-training machinery (helpers.methods.tc.dec_train): the loss trains the decoder only, on the latents a
file carries; training checkpoints and resumes; export/load round trip; one-line errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.errors import SDCError
from helpers.images import to_nchw
from helpers.methods.tc import dec_train
from helpers.methods.tc import tcoder as T


@pytest.fixture(scope="module")
def crop(kodak_dir):
    with Image.open(kodak_dir / "kodim23.png") as im:
        return torch.as_tensor((to_nchw(im.convert("RGB").crop((200, 100, 328, 228))) + 1) / 2).float()


def test_quantized_latents_are_what_the_coder_reconstructs(taef2, crop):
    # the training input is the tc coder's own reconstruction of the stock encoder's latent at that step
    tables = T.trained_tables(taef2.fingerprint)
    k = T.k_of(100.0)
    zq = dec_train.quantized_latents(taef2.encoder, crop, tables, [k])
    assert not zq.requires_grad
    with torch.no_grad():
        z = taef2.encoder(crop)[0].numpy()
    ref = T.synthesize(T.dequantize(T.quantize(T.analyze(z, tables, 4), k), k), tables, 4)
    np.testing.assert_allclose(zq[0].numpy(), ref, rtol=0, atol=1e-3)


def test_dec_loss_trains_the_decoder_only(taef2, crop):
    tables = T.trained_tables(taef2.fingerprint)
    zq = {s: dec_train.quantized_latents(taef2.encoder, crop, tables, [T.k_of(s)]) for s in (30.0, 200.0)}
    try:
        loss, mse = dec_train.dec_loss(taef2.decoder, crop, zq[200.0])
        loss.backward()
        assert all(p.grad is None for p in taef2.encoder.parameters())
        assert sum(float(p.grad.abs().sum()) for p in taef2.decoder.parameters() if p.grad is not None) > 0
        # a coarser step decodes worse
        assert 0 < float(dec_train.dec_loss(taef2.decoder, crop, zq[30.0])[1][0]) < float(mse[0]) < 0.05
    finally:
        taef2.decoder.zero_grad(set_to_none=True)


def test_train_checkpoints_resumes_and_exports(tmp_path, synthetic_training_images):
    # two steps, then one more from the checkpoint: the step count, the log and the decoder carry on; synthetic
    # pictures (never Kodak), small crops, so that it runs in seconds
    images = synthetic_training_images
    out = tmp_path / "run"
    kw = dict(batch=1, crop=128, threads=1, images=images, progress=False)
    ck = dec_train.train(out, 5.0, max_steps=2, **kw)
    first = torch.load(ck, weights_only=False)
    assert first["step"] == 2 and first["beta"] == dec_train.BETA
    dec_train.train(out, 5.0, max_steps=3, **kw)
    st = torch.load(ck, weights_only=False)
    assert st["step"] == 3
    with open(out / "log.csv") as fh:
        assert [r["step"] for r in csv.DictReader(fh)] == ["1", "2", "3"]
    assert any(not torch.equal(st["decoder"][k], first["decoder"][k]) for k in st["decoder"])
    dest = dec_train.export(ck, tmp_path / "dec.pth")
    assert dest.stat().st_size < 5e6 and "CC-BY" in dest.with_suffix(".md").read_text()
    dec = dec_train.load_trained_decoder(dest)
    full = dec_train.load_trained_decoder(ck)
    z = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(dec(z), full(z), atol=2e-2, rtol=0)


def test_load_trained_decoder_errors_are_one_line(tmp_path):
    with pytest.raises(SDCError, match="missing: train it with python -m helpers.methods.tc.dec_train"):
        dec_train.load_trained_decoder(tmp_path / "nope.pth")
    torch.save({"encoder": {"0.weight": torch.zeros(1)}}, tmp_path / "enc.pt")
    with pytest.raises(SDCError, match="holds no TAEF2 decoder") as e:
        dec_train.load_trained_decoder(tmp_path / "enc.pt")
    assert "\n" not in str(e.value)


def test_compare_table_names_the_decoders(capsys):
    rows = [
        {"image": "kodim01", "decoder": "stock", "budget": 5000, "psnr": 24.0, "detail": 0.8},
        {"image": "kodim01", "decoder": "tuned", "budget": 5000, "psnr": 25.0, "detail": 0.7},
    ]
    lines = dec_train.compare_table(rows, column="decoder").splitlines()
    assert lines[0].startswith("| set | budget | decoder | images | PSNR dB | detail | PSNR above stock on")
    assert "| Kodak | 5000 | tuned | 1 | 25.00 | 0.70 | 1/1 | 0/1 |" in lines


def test_compare_without_kodak_images_is_one_line(tmp_path, capsys):
    assert dec_train.main(["--compare", "ckpt.pt", "--kodak", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no kodim*.png in" in err[0]
