"""The trained-encoder machinery (helpers.methods.tc.enc_train): the loss trains the encoder only, export/load round trip."""

from __future__ import annotations

import torch
from PIL import Image

from helpers.images import to_nchw
from helpers.methods.tc import enc_train
from helpers.methods.tc import tcoder as T


def test_rd_loss_trains_the_encoder_only_and_lower_alpha_costs_more_bits(taef2, kodak_dir):
    with Image.open(kodak_dir / "kodim23.png") as im:
        x = (to_nchw(im.convert("RGB").crop((200, 100, 328, 228))) + 1) / 2
    x = torch.as_tensor(x).float()
    enc, dec = taef2.encoder, taef2.decoder
    tables = T.trained_tables(taef2.fingerprint)
    for p in dec.parameters():
        p.requires_grad_(False)
    try:
        loss, mse, bits = enc_train.rd_loss(enc, dec, x, tables, [T.k_of(100.0)])
        loss.backward()
        assert all(p.grad is None for p in dec.parameters())
        assert sum(float(p.grad.abs().sum()) for p in enc.parameters() if p.grad is not None) > 0
        assert 0 < float(mse[0]) < 0.01 and float(bits[0]) > 100
        # a finer step costs more bits and decodes closer
        _, mse2, bits2 = enc_train.rd_loss(enc, dec, x, tables, [T.k_of(30.0)])
        assert float(bits2[0]) > 2 * float(bits[0]) and float(mse2[0]) < float(mse[0])
    finally:
        enc.zero_grad(set_to_none=True)
        for p in dec.parameters():
            p.requires_grad_(True)


def test_export_and_load_round_trip(taef2, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    torch.save(
        {
            "encoder": taef2.encoder.state_dict(),
            "step": 0,
            "batch": 4,
            "crop": 192,
            "fingerprint": taef2.fingerprint,
            "table_id": 1,
        },
        ckpt,
    )
    dest = enc_train.export(ckpt, tmp_path / "enc.pth")
    assert dest.stat().st_size < 5e6 and "CC-BY" in dest.with_suffix(".md").read_text()
    enc = enc_train.load_trained_encoder(dest)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), taef2.encoder(x), atol=2e-2, rtol=0)


def test_compare_table_counts_images_against_the_stock_encoder():
    from helpers.methods.tc.enc_train import compare_table

    def row(image, enc, budget, p, d):
        return {"image": image, "encoder": enc, "budget": budget, "psnr": p, "detail": d}

    rows = [
        row("kodim01", "stock", 5000, 24.0, 0.80),
        row("kodim01", "new", 5000, 25.0, 0.70),  # better PSNR, detail lost
        row("kodim02", "stock", 5000, 26.0, 0.90),
        row("kodim02", "new", 5000, 25.5, 0.88),  # worse PSNR, detail kept (within 0.02)
        row("photo", "stock", 5000, 30.0, 1.00),
        row("photo", "new", 5000, 31.0, 1.10),
    ]
    lines = compare_table(rows).splitlines()
    assert "| Kodak | 5000 | new | 2 | 25.25 | 0.79 | 1/2 | 1/2 |" in lines
    assert "| Kodak | 5000 | stock | 2 | 25.00 | 0.85 | 0/2 | 2/2 |" in lines
    assert "| holdout | 5000 | new | 1 | 31.00 | 1.10 | 1/1 | 1/1 |" in lines
    assert len(lines) == 2 + 4


def test_compare_without_kodak_images_is_one_line(tmp_path, capsys):
    assert enc_train.main(["--compare", "ckpt.pt", "--kodak", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: no kodim*.png in {tmp_path}: pass the Kodak folder with --kodak (e.g. ../shared/data/kodak)"
    ]
