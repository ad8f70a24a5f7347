"""The trained-encoder machinery (helpers.methods.tc.enc_train): the loss trains the encoder only, export/load round trip."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from helpers.images import to_nchw
from helpers.methods.tc import enc_train, precision
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


def test_rd_loss_in_bf16_is_close_to_fp32_and_trains_the_encoder(taef2, kodak_dir):
    # --precision bf16 (autocast, channels-last): the same loss within a few per cent, float32 results, gradients
    if precision.resolve_precision("auto") != "bf16":
        import pytest

        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX): autocast would be emulated and slow")
    with Image.open(kodak_dir / "kodim23.png") as im:
        x = (to_nchw(im.convert("RGB").crop((200, 100, 328, 228))) + 1) / 2
    x = torch.as_tensor(x).float()
    enc, dec = taef2.encoder, taef2.decoder
    tables = T.trained_tables(taef2.fingerprint)
    ks = [T.k_of(100.0)]
    try:
        with torch.no_grad():
            ref, mse, bits = enc_train.rd_loss(enc, dec, x, tables, ks)
        fast, mse16, bits16 = enc_train.rd_loss(enc, dec, x, tables, ks, precision="bf16")
        assert fast.dtype == mse16.dtype == bits16.dtype == torch.float32
        assert abs(fast.item() / ref.item() - 1) < 0.05 and abs(float(bits16[0]) / float(bits[0]) - 1) < 0.05
        assert abs(float(mse16[0]) / float(mse[0]) - 1) < 0.1
        fast.backward()
        assert sum(float(p.grad.abs().sum()) for p in enc.parameters() if p.grad is not None) > 0
    finally:
        enc.zero_grad(set_to_none=True)
        dec.zero_grad(set_to_none=True)


def test_resolve_precision():
    assert precision.resolve_precision("auto") in ("fp32", "bf16")
    assert precision.resolve_precision("fp32") == "fp32"
    import pytest

    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16, not 'fp16'"):
        precision.resolve_precision("fp16")


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


def test_interpolate_mixes_two_checkpoints_weights(taef2, tmp_path):
    a = {k: v.clone() for k, v in taef2.encoder.state_dict().items()}
    b = {k: v + 1.0 if v.is_floating_point() else v for k, v in a.items()}
    torch.save({"encoder": a, "step": 10, "optimizer": {}}, tmp_path / "a.pt")
    torch.save({"encoder": b, "step": 20}, tmp_path / "b.pt")
    dest = enc_train.interpolate(tmp_path / "a.pt", tmp_path / "b.pt", 0.25, tmp_path / "mix.pt")
    st = torch.load(dest, weights_only=False)
    assert st["step"] == "10/20 mixed 0.25" and "optimizer" not in st
    for k, v in a.items():
        torch.testing.assert_close(st["encoder"][k], v + 0.25 if v.is_floating_point() else v, rtol=0, atol=1e-6)
    enc_train.load_trained_encoder(dest)  # loads as a checkpoint


def test_average_is_the_mean_of_the_checkpoints_and_the_export_says_so(taef2, tmp_path):
    a = {k: v.clone() for k, v in taef2.encoder.state_dict().items()}
    meta = {"batch": 4, "crop": 192, "fingerprint": 1, "table_id": 2, "alpha": 2.0}
    paths = []
    for i, shift in enumerate((0.0, 1.0, 5.0)):
        enc = {k: v + shift if v.is_floating_point() else v for k, v in a.items()}
        paths.append(tmp_path / f"ckpt_{i}.pt")
        torch.save({**meta, "encoder": enc, "step": 100 * (i + 1), "optimizer": {}}, paths[-1])
    assert enc_train.main(["--average", *map(str, paths), str(tmp_path / "avg.pt")]) == 0
    st = torch.load(tmp_path / "avg.pt", weights_only=False)
    assert st["step"] == "100/200/300" and "optimizer" not in st and st["alpha"] == 2.0
    for k, v in a.items():
        torch.testing.assert_close(st["encoder"][k], v + 2.0 if v.is_floating_point() else v, rtol=0, atol=1e-5)
    rec = enc_train.export(tmp_path / "avg.pt", tmp_path / "avg.pth").with_suffix(".md").read_text()
    assert "the mean weights of 3 checkpoints of one run (steps 100/200/300) of batch 4" in rec


def test_average_refuses_one_checkpoint_and_other_networks_in_one_line(tmp_path, capsys):
    assert enc_train.main(["--average", "a.pt", str(tmp_path / "m.pt")]) == 2
    torch.save({"encoder": {"w": torch.zeros(2)}}, tmp_path / "a.pt")
    torch.save({"encoder": {"v": torch.zeros(2)}}, tmp_path / "b.pt")
    assert enc_train.main(["--average", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: --average: pass at least two checkpoints and the destination last"
    assert len(err) == 2 and "hold different networks; pass checkpoints of one enc_train run" in err[1]
    assert not (tmp_path / "m.pt").exists()


def test_interpolate_refuses_t_outside_0_1_in_one_line(tmp_path, capsys):
    assert enc_train.main(["--interpolate", "a.pt", "b.pt", "1.5", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t must be in [0, 1], got 1.5" in err[0]


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


def test_compare_table_puts_the_training_photos_in_their_own_set():
    from helpers.methods.tc.enc_train import TRAINING_PREFIX, compare_table

    def row(image, enc, p):
        return {"image": image, "encoder": enc, "budget": 5000, "psnr": p, "detail": 0.8}

    rows = [
        row("kodim01", "stock", 24.0),
        row("kodim01", "new", 25.0),
        row("photo", "stock", 30.0),
        row("photo", "new", 30.5),
        row(TRAINING_PREFIX + "photo", "stock", 28.0),
        row(TRAINING_PREFIX + "photo", "new", 30.0),
    ]
    lines = compare_table(rows).splitlines()
    assert "| holdout | 5000 | new | 1 | 30.50 | 0.80 | 1/1 | 1/1 |" in lines
    assert "| training photos | 5000 | new | 1 | 30.00 | 0.80 | 1/1 | 1/1 |" in lines
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| Kodak"] * 2 + ["| holdout"] * 2 + [
        "| training photos"
    ] * 2


def test_compare_table_shows_the_perceptual_metrics_and_counts_jod():
    from helpers.methods.tc.enc_train import compare_table

    def row(image, enc, p, jod, ba, d):
        return {"image": image, "encoder": enc, "budget": 5000, "psnr": p, "cvvdp": jod, "butteraugli": ba, "detail": d}

    rows = [
        row("kodim01", "stock", 24.0, 7.30, 20.0, 0.80),
        row("kodim01", "new", 25.0, 7.10, 24.0, 0.80),  # PSNR up, JOD down
        row("kodim02", "stock", 26.0, 7.50, 18.0, 0.90),
        row("kodim02", "new", 25.0, 7.60, 16.0, 0.90),  # PSNR down, JOD up
    ]
    lines = compare_table(rows).splitlines()
    assert lines[0] == (
        "| set | budget | encoder | images | PSNR dB | CVVDP JOD | Butteraugli | detail | PSNR above stock on "
        "| CVVDP above stock on | detail kept on |"
    )
    assert "| Kodak | 5000 | new | 2 | 25.00 | 7.350 | 20.00 | 0.85 | 1/2 | 1/2 | 2/2 |" in lines
    assert "| Kodak | 5000 | stock | 2 | 25.00 | 7.400 | 19.00 | 0.85 | 0/2 | 0/2 | 2/2 |" in lines


def test_compare_without_kodak_images_is_one_line(tmp_path, capsys):
    assert enc_train.main(["--compare", "ckpt.pt", "--kodak", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: no kodim*.png in {tmp_path}: pass the Kodak folder with --kodak (e.g. ../shared/data/kodak)"
    ]


def test_train_checkpoints_and_resumes_with_the_perceptual_term(tmp_path, synthetic_training_images):
    # the loop enc_train shares with dec_train (enc_train.fit): two steps, then one more from the checkpoint; the
    # step count, the log (with the bits column) and the encoder carry on; synthetic pictures (never Kodak)
    import csv

    images = synthetic_training_images
    out = tmp_path / "run"
    kw = dict(batch=1, crop=128, threads=1, images=images, progress=False, gamma=1e-3, keep=True)
    ck = enc_train.train(out, 5.0, max_steps=2, **kw)
    first = torch.load(ck, weights_only=False)
    assert first["step"] == 2 and first["gamma"] == 1e-3 and first["alpha"] == enc_train.ALPHA
    assert first["precision"] == precision.resolve_precision("auto")
    assert sorted(f.name for f in out.glob("ckpt_*.pt")) == ["ckpt_2.pt"]  # --keep
    enc_train.train(out, 5.0, max_steps=3, **kw)
    st = torch.load(ck, weights_only=False)
    assert st["step"] == 3 and sorted(f.name for f in out.glob("ckpt_*.pt")) == ["ckpt_2.pt", "ckpt_3.pt"]
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and all(float(r["bpp"]) > 0 for r in rows)
    assert rows[0]["bits_vs_stock"] == "1.000"  # before the first update the encoder is TAEF2's own
    assert all(0.5 < float(r["bits_vs_stock"]) < 2 for r in rows)
    assert any(not torch.equal(st["encoder"][k], first["encoder"][k]) for k in st["encoder"])
    # a log from before the bits column: the run appends rows of its columns, not misaligned ones
    old = tmp_path / "old"
    old.mkdir()
    (old / "log.csv").write_text("step,wall_s,loss,psnr,bpp,step_delta\n")
    enc_train.train(old, 5.0, max_steps=1, **kw)
    with open(old / "log.csv") as fh:
        assert [len(r) for r in csv.reader(fh)] == [6, 6]


def test_cvvdp_term_is_zero_for_identical_pictures_and_grows_with_error():
    x = torch.rand(1, 3, 64, 64)
    same = float(enc_train.cvvdp_term(x, x))
    noisy = float(enc_train.cvvdp_term((x + 0.2 * torch.randn_like(x)).clamp(0, 1), x))
    assert abs(same) < 1e-3 and noisy > same + 0.5


def test_train_from_init_weights_starts_there_and_the_export_record_says_so(taef2, tmp_path, synthetic_training_images):
    # a new run from earlier trained weights (--init): the first step's encoder is those weights (not TAEF2's: its
    # bits differ from the stock encoder's before any update), a resumed run ignores --init, and the exported
    # record names the weights it started from with their own record
    shifted = {k: v * 1.01 if v.is_floating_point() else v for k, v in taef2.encoder.state_dict().items()}
    src = tmp_path / "ckpt0.pt"
    torch.save({"encoder": shifted, "step": 7, "batch": 4, "crop": 192, "fingerprint": 1, "table_id": 2}, src)
    init = enc_train.export(src, tmp_path / "first.pth")
    out = tmp_path / "run"
    kw = dict(batch=1, crop=128, threads=1, images=synthetic_training_images, progress=False, max_steps=1)
    ck = enc_train.train(out, 5.0, init=init, **kw)
    st = torch.load(ck, weights_only=False)
    assert st["init"] == str(init)
    for k, v in shifted.items():  # one Adam step of lr 3e-5 from the init weights
        torch.testing.assert_close(st["encoder"][k].float(), v.half().float(), rtol=0, atol=2e-3)
    import csv

    with open(out / "log.csv") as fh:
        assert next(csv.DictReader(fh))["bits_vs_stock"] != "1.000"
    before = {k: v.clone() for k, v in st["encoder"].items()}
    enc_train.train(out, 5.0, init=tmp_path / "missing.pth", **{**kw, "max_steps": 2})  # resumes, no init read
    st = torch.load(ck, weights_only=False)
    assert st["step"] == 2 and all(torch.allclose(st["encoder"][k], v, atol=1e-3) for k, v in before.items())
    rec = enc_train.export(ck, tmp_path / "second.pth").with_suffix(".md").read_text()
    assert "Started from the encoder weights first.pth (Started from TAEF2's encoder weights" in rec
    assert "7 steps of batch 4" in rec and "2 steps of batch 1" in rec


def test_random_crops_augment_turns_rescales_and_recolours(monkeypatch):
    # --augment: the plain draw stays as it was (same random numbers: a run without it is reproduced), and with it
    # crops come turned (a vertical ramp becomes horizontal), at other scales, with other tones, grey kept grey
    import random

    import numpy as np

    ramp = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 300, 1)[..., None], 3, -1)  # rows 0..255
    plain = enc_train.random_crops([ramp], 8, 64, random.Random(3))
    assert torch.equal(plain, enc_train.random_crops([ramp], 8, 64, random.Random(3)))
    # never turned: down the rows, one level a row
    assert all(bool(((c[0, :, 0].diff() * 255 - 1).abs() < 1e-4).all()) for c in plain)
    grey = np.full((100, 100, 3), 128, np.uint8)
    recoloured = enc_train.random_crops([grey], 8, 32, random.Random(0), augment=True)
    assert torch.equal(recoloured[:, 0], recoloured[:, 1]) and torch.equal(recoloured[:, 1], recoloured[:, 2])
    levels = recoloured[:, 0, 0, 0]
    assert float(levels.max() - levels.min()) > 0.02 and float(levels.min()) > 0.4 and float(levels.max()) < 0.6
    monkeypatch.setitem(enc_train.AUGMENT, "gamma", (1.0, 1.0))
    monkeypatch.setitem(enc_train.AUGMENT, "saturation", (1.0, 1.0))
    monkeypatch.setitem(enc_train.AUGMENT, "scale", (1.0, 1.0))
    turned = enc_train.random_crops([ramp], 16, 64, random.Random(3), augment=True)
    across = [bool((c[0, 0, :].diff().abs() > 0).all()) for c in turned]
    assert 0 < sum(across) < 16  # some turned a quarter, some not
    monkeypatch.setitem(enc_train.AUGMENT, "scale", (0.5, 0.5))
    half = enc_train.random_crops([ramp], 4, 64, random.Random(3), augment=True)
    steps = [float(c[0].diff(dim=0).abs().mean() + c[0].diff(dim=1).abs().mean()) for c in half]
    assert all(abs(s * 255 - 2) < 0.2 for s in steps)  # half scale: two levels a pixel instead of one


def test_resume_with_other_settings_uses_them_and_records_the_change(tmp_path, synthetic_training_images, capsys):
    # a run resumed with another detail weight and learning rate goes on with them (Adam's saved learning rate used to
    # win silently), says so in one line, keeps the change in its checkpoint and the exported record names it
    out = tmp_path / "run"
    kw = dict(batch=1, crop=128, threads=1, images=synthetic_training_images, progress=False)
    ck = enc_train.train(out, 5.0, max_steps=1, beta=3e-3, lr=3e-5, **kw)
    assert torch.load(ck, weights_only=False)["changes"] == []
    enc_train.train(out, 5.0, max_steps=2, beta=1e-2, lr=1e-5, augment=True, **kw)
    st = torch.load(ck, weights_only=False)
    assert st["beta"] == 1e-2 and st["lr"] == 1e-5 and st["optimizer"]["param_groups"][0]["lr"] == 1e-5
    assert st["changes"] == [
        {"step": 1, "settings": {"beta": [3e-3, 1e-2], "augment": [None, dict(enc_train.AUGMENT)], "lr": [3e-5, 1e-5]}}
    ]
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert note == [
        f"note: {out} resumes at step 1 with other settings (beta 0.003 -> 0.01, augment off -> on, lr 3e-05 -> "
        "1e-05); recorded in its checkpoint"
    ]
    enc_train.train(out, 5.0, max_steps=3, beta=1e-2, lr=1e-5, augment=True, **kw)  # the same again: no new change
    st = torch.load(ck, weights_only=False)
    assert st["step"] == 3 and len(st["changes"]) == 1 and "note:" not in capsys.readouterr().err
    rec = enc_train.export(ck, tmp_path / "w.pth").with_suffix(".md").read_text()
    assert "; settings changed on resume: at step 1 beta 0.003 -> 0.01, augment off -> on, lr 3e-05 -> 1e-05." in rec


def test_train_from_freezes_the_earlier_layers_only_and_the_checkpoint_says_so(
    taef2, tmp_path, synthetic_training_images
):
    # --train-from N: layers 0..N-1 keep TAEF2's weights exactly, layer N on moves; an index the encoder lacks is a
    # one-line error naming the range
    out = tmp_path / "run"
    kw = dict(batch=1, crop=128, threads=1, images=synthetic_training_images, progress=False, max_steps=2)
    st = torch.load(enc_train.train(out, 5.0, train_from=13, **kw), weights_only=False)
    assert st["train_from"] == 13
    stock = taef2.encoder.state_dict()
    frozen = [k for k in stock if int(k.split(".")[0]) < 13]
    trained = [k for k in stock if int(k.split(".")[0]) >= 13]
    assert frozen and trained
    assert all(torch.equal(st["encoder"][k], stock[k]) for k in frozen)
    assert any(not torch.equal(st["encoder"][k], stock[k]) for k in trained)
    with pytest.raises(ValueError, match=r"train_from 15: the encoder has layers 0\.\.14"):
        enc_train.train(tmp_path / "bad", 5.0, train_from=15, **kw)
