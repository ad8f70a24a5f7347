"""A compression encoder for the frozen TAEF2 decoder: TAEF2's encoder fine-tuned end to end through the tc
quantizer and the tc rate model (:mod:`helpers.methods.tc.rate_model`), on the licensed training photos (never Kodak, never
the holdout photos)::

    python -m helpers.methods.tc.enc_train --budget-minutes 60 --out DIR [--resume]   # checkpoints DIR/ckpt.pt, DIR/log.csv
    python -m helpers.methods.tc.enc_train --export DIR/ckpt.pt                        # -> helpers/data/taef2_tc_encoder.pth

Each step takes a batch of random crops, encodes them, analyses the latents with the tc transform (4 wavelet
levels, as for 512x512 and larger images), quantizes the coefficients at a step ``delta`` drawn per crop
(log-uniform over the steps the rate control picks for 2-20 KB at 512x512; straight-through rounding), decodes
with the frozen decoder and minimises ``SSE(pixels) + lambda * bits``: ``bits`` from the rate model with the
coder's own classes, ``lambda = alpha * ln(2) / 6 * g * delta**2``, the high-rate slope of a uniform quantizer
(``g``, pixel squared error per unit of coefficient squared error of the decoder-metric transform, measured on
training photos). One network serves all budgets: the rate control still picks the step of each file.

The decoder, the tables and the ``.sdc`` format do not change; the trained encoder is a drop-in replacement of
TAEF2's encoder weights (:func:`load_trained_encoder`), and the exported one is what tc encodes with by default on
the stock TAEF2 (``--encoder tc``; ``--encoder stock`` for the stock one: ``helpers.backends.taef2_spec``). The
exported weights are float16 (about 2.7 MB) with a licence record of the training photos beside them
(``taef2_tc_encoder.md``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ...backends.taef2_spec import ENCODER_DATA_DIR, ENCODER_VARIANTS
from .precision import PRECISIONS, resolve_precision, run

DATA_DIR = ENCODER_DATA_DIR
WEIGHTS = DATA_DIR / ENCODER_VARIANTS["tc"][0]  # the shipped ``--encoder tc``
LEVELS = 4
STEP_RANGE = (40.0, 300.0)  # tc steps the rate control picks for about 20 KB .. 2 KB at 512x512
ALPHA = 0.3  # rate weight relative to the high-rate slope
BETA = 1e-3  # weight of the detail term (see rd_loss)
GAMMA = 0.0  # weight of the ColorVideoVDP term (see cvvdp_term)
# random_crops(augment=True): crop scale (output pixels per source pixel), gamma of the tone curve, saturation factor
AUGMENT = {"scale": (0.6, 1.0), "gamma": (0.8, 1.25), "saturation": (0.75, 1.25)}


def training_images(short_sides=(512, 768)) -> list[np.ndarray]:
    """The training photos (never Kodak, never the holdout), each resized to every short side in ``short_sides``
    (HxWx3 uint8 arrays to crop from)."""
    from PIL import Image

    from ...photos import train_photos

    out = []
    for p in train_photos():
        with Image.open(p) as im:
            im = im.convert("RGB")
            for s in short_sides:
                f = s / min(im.size)
                out.append(
                    np.asarray(im.resize((round(im.size[0] * f), round(im.size[1] * f)), Image.Resampling.LANCZOS))
                )
    return out


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    """A number drawn log-uniform in [lo, hi] with ``rng`` (one ``rng.uniform`` draw)."""
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def random_crops(images: list[np.ndarray], n: int, crop: int, rng: random.Random, augment: bool = False):
    """A batch (n, 3, crop, crop) in [0, 1] of random crops of ``images``, each mirrored with probability 1/2.

    ``augment`` (:data:`AUGMENT`): each crop is cut at a random scale (a square of ``crop / s`` pixels resized to
    ``crop``, ``s`` log-uniform), turned by one of the 8 rotations and mirrorings, and its tones and colours changed
    a little (a gamma curve, a saturation factor): what the encoder learns of the 27 training photos should be of
    photographs, not of these photos (the gain of the shipped encoder was 1.34 dB on its own photos and 0.93 on
    Kodak: ``results/encoder_training/generalization_gap.md``)."""
    import torch

    xs = []
    for _ in range(n):
        a = images[rng.randrange(len(images))]
        size = crop
        if augment:
            size = min(round(crop / log_uniform(rng, *AUGMENT["scale"])), *a.shape[:2])
        y, x = rng.randrange(a.shape[0] - size + 1), rng.randrange(a.shape[1] - size + 1)
        c = a[y : y + size, x : x + size]
        if size != crop:
            from PIL import Image

            c = np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((crop, crop), Image.Resampling.LANCZOS))
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if augment:
            c = np.rot90(c, rng.randrange(4))
        xs.append(np.ascontiguousarray(c))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
    if augment:
        from ...metrics.retention import LUMA

        weights = torch.tensor(LUMA).reshape(3, 1, 1)
        for i in range(n):
            gamma = log_uniform(rng, *AUGMENT["gamma"])
            sat = rng.uniform(*AUGMENT["saturation"])
            y = x[i].pow(gamma)
            luma = (y * weights).sum(0, keepdim=True)
            x[i] = (luma + sat * (y - luma)).clamp(0, 1)
    return x


def cvvdp_term(xh, x):
    """Mean over a batch of ColorVideoVDP's ``10 - JOD`` (display ``standard_fhd``, as the benchmark) of decoded crops
    ``xh`` against ``x``, both (N, 3, H, W) in [0, 1]: a differentiable perceptual term for the training losses."""
    import warnings

    from ...metrics.perceptual import _cvvdp

    vdp = _cvvdp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(vdp.loss(xh[i].clamp(0, 1), x[i], dim_order="CHW") for i in range(len(x))) / len(x)


def rd_loss(
    encoder,
    decoder,
    x,
    tables,
    ks: list[int],
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    precision: str = "fp32",
):
    """(loss, per-crop pixel MSE, per-crop bits) of a batch x (N, 3, H, W) in [0, 1] at tc step indices ``ks``;
    ``precision`` (``fp32`` / ``bf16``) is that of the two networks' passes (:func:`~.precision.run`).

    ``beta`` weighs a detail term, ``|log HF(x) - log HF(decoded)|`` over whole crops
    (:func:`helpers.methods.tc.detail_loss.detail_loss` with ``tile=None``): without it the rate term teaches the encoder
    to blur (measured at 5000 B on 4 holdout photos: alpha 1, beta 0, 38 steps: detail ratio 0.18-0.55, against
    0.88-1.01 for the stock encoder); one-sided (only lost energy penalised) with beta 4e-3 it invents texture
    instead (15 steps: ratio 1.1-1.7, PSNR -1.3 to -2.8 dB). ``gamma`` weighs :func:`cvvdp_term`."""
    import torch

    from . import rate_model as R
    from . import tcoder as T

    z = run(encoder, x, precision)
    coeffs = R.analyze(z, tables, LEVELS)
    delta = torch.tensor([T.step_of(k) for k in ks], dtype=z.dtype)
    zq = R.synthesize([y * delta.reshape(-1, 1, 1, 1) for y in R.quantize(coeffs, delta, "ste")], tables, LEVELS)
    xh = run(decoder, zq, precision)
    sse = ((xh - x) ** 2).flatten(1).sum(1)
    bits = R.rate_bits(coeffs, tables, LEVELS, ks, mode="ste")
    lam = alpha * math.log(2) / 6 * R.G_PIXEL * delta**2
    loss = ((sse + lam * bits) / x[0].numel()).mean()
    if beta:
        from .detail_loss import detail_loss

        loss = loss + beta * detail_loss(x, xh, tile=None)
    if gamma:
        loss = loss + gamma * cvvdp_term(xh, x)
    return loss, (sse / x[0].numel()).detach(), bits.detach()


def stock_bits(stock, x, tables, ks: list[int], precision: str = "fp32"):
    """Per-crop bits (rate model) of the ``stock`` encoder's latents of ``x`` at step indices ``ks``: the trained
    latent's bits over these (``bits_vs_stock`` in the log) say what the encoder spends at equal step. Above 1 the
    rate control must pick a coarser step for the same file size (how the alpha-0.3 run lost at equal bytes)."""
    import torch

    from . import rate_model as R

    with torch.no_grad():
        return R.rate_bits(R.analyze(run(stock, x, precision), tables, LEVELS), tables, LEVELS, ks, mode="ste")


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file renamed over ``path``: a run killed while saving keeps the last one."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def fit(
    out: Path,
    part: str,
    module,
    batch_loss,
    meta: dict,
    budget_minutes: float,
    lr: float,
    checkpoint_minutes: float = 5.0,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
    columns: tuple[str, ...] = ("loss", "psnr", "step_delta"),
    keep: bool = False,
) -> Path:
    """The training loop enc_train and dec_train share: Adam on ``module`` (the TAEF2 ``part`` being trained),
    resuming from ``out/ckpt.pt`` (weights, optimizer, step count, Python and torch random states), for
    ``budget_minutes`` of wall time or until ``max_steps`` steps in all; one ``log.csv`` row per step, a progress bar,
    a checkpoint every ``checkpoint_minutes`` and at the end (with ``meta``: the run's settings). ``batch_loss(rng)``
    draws a batch with ``rng`` (a :class:`random.Random`) and returns (loss tensor, {column: value}) for ``columns``.
    ``keep``: every checkpoint is also kept as ``ckpt_STEP.pt`` (to compare the run's stages)."""
    import torch
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "ckpt.pt"
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    step, rng = 0, random.Random(seed)
    settings, changes = {**meta, "lr": lr}, []
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        module.load_state_dict(st[part])
        opt.load_state_dict(st["optimizer"])
        step = st["step"]
        rng.setstate(st["rng"])
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])
        for g in opt.param_groups:  # the learning rate asked for now, not the one saved with Adam's state
            g["lr"] = lr
        changed = changed_settings(st, settings)
        changes = [*st.get("changes", []), *([{"step": step, "settings": changed}] if changed else [])]
        if changed:
            print(
                f"note: {out} resumes at step {step} with other settings ({say_changed(changed)}); recorded in its "
                "checkpoint",
                file=sys.stderr,
            )
    log = out / "log.csv"
    new_log = not log.is_file()
    if not new_log:  # a resumed run keeps its log's columns (one started before a column existed: without it)
        with open(log, newline="") as fh:
            columns = tuple(next(csv.reader(fh), ["step", "wall_s", *columns])[2:])
    t0 = last_ck = time.monotonic()
    budget = budget_minutes * 60
    name = {"encoder": "enc_train", "decoder": "dec_train"}.get(part, part)
    bar = tqdm(total=int(budget), desc=f"{name} (step {step})", unit="s", disable=not progress)

    def save():
        state = {part: module.state_dict(), "optimizer": opt.state_dict(), "step": step, "rng": rng.getstate()}
        save_checkpoint(ckpt, {**state, "torch_rng": torch.get_rng_state(), **settings, "changes": changes})
        if keep:
            shutil.copyfile(ckpt, out / f"ckpt_{step}.pt")

    with open(log, "a", newline="") as fh:
        w = csv.writer(fh)
        if new_log:
            w.writerow(["step", "wall_s", *columns])
        while time.monotonic() - t0 < budget and (max_steps is None or step < max_steps):
            loss, logged = batch_loss(rng)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            step += 1
            w.writerow([step, round(time.monotonic() - t0, 1), *(logged.get(c, "") for c in columns)])
            fh.flush()
            bar.n = min(int(time.monotonic() - t0), int(budget))
            bar.set_description(f"{name} (step {step})")
            bar.set_postfix({c: logged[c] for c in columns if c in logged and c != "step_delta"})
            if time.monotonic() - last_ck > checkpoint_minutes * 60:
                save()
                last_ck = time.monotonic()
    save()
    bar.close()
    return ckpt


RESUME_KEYS = ("crop", "batch", "alpha", "beta", "gamma", "precision", "augment", "lr")


def changed_settings(st: dict, settings: dict) -> dict:
    """Where ``settings`` (this run's loss weights, crop, batch, precision, augmentation, learning rate) differ from
    those the checkpoint ``st`` was saved with: ``{key: [before, now]}`` (a checkpoint from before precision was
    recorded is not compared on it). A run resumed with other options goes on with them (e.g. a stronger detail term
    from step N); the checkpoint keeps ``[{"step": N, "settings": <this>}, ...]`` as ``changes`` and the exported
    record says so."""
    return {
        k: [st.get(k), settings.get(k)]
        for k in RESUME_KEYS
        if st.get(k) != settings.get(k) and (k != "precision" or k in st)
    }


def say_changed(changed: dict) -> str:
    """:func:`changed_settings` in words: ``beta 0.003 -> 0.01, augment off -> on``."""

    def word(v):
        return "off" if v is None else "on" if isinstance(v, dict) else f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} {word(a)} -> {word(b)}" for k, (a, b) in changed.items())


def describe_changes(changes: list[dict]) -> str:
    """A checkpoint's ``changes`` (see :func:`changed_settings`) as the licence record's words, e.g. ``; settings
    changed on resume: at step 355 beta 0.001 -> 0.003``; empty without changes."""
    said = [f"at step {c['step']} {say_changed(c['settings'])}" for c in changes]
    return "; settings changed on resume: " + "; ".join(said) if said else ""


def training_setup(part: str, threads: int, weights_dir: Path | None = None):
    """(backend, tc tables) for training TAEF2's ``part`` (``encoder`` / ``decoder``) against the other half, frozen:
    torch threads set, ``part`` in train mode, the other half in eval mode without gradients; an error where these
    weights have no trained tc tables."""
    import torch

    from ...backends.taef2 import load_taef2
    from . import tcoder as T

    torch.set_num_threads(threads)
    backend = load_taef2(weights_dir, device="cpu", dtype=torch.float32)
    halves = {"encoder": backend.encoder, "decoder": backend.decoder}
    trained, frozen = halves.pop(part), next(iter(halves.values()))
    trained.train()
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    tables = T.trained_tables(backend.fingerprint)
    if tables is None or LEVELS not in tables.A:
        raise RuntimeError("no trained tc tables for these TAEF2 weights: run python -m helpers.tc_train first")
    return backend, tables


def draw_batch(images: list[np.ndarray], batch: int, crop: int, rng: random.Random, augment: bool = False):
    """(crops (batch, 3, crop, crop) in [0, 1] (:func:`random_crops`), a tc step index per crop drawn log-uniform over
    :data:`STEP_RANGE`)."""
    from . import tcoder as T

    x = random_crops(images, batch, crop, rng, augment)
    return x, [T.k_of(log_uniform(rng, *STEP_RANGE)) for _ in range(batch)]


def step_log(loss, mse, ks: list[int]) -> dict:
    """The log columns both trainers write for a step: loss, mean PSNR of the crops, mean tc step."""
    import torch

    from . import tcoder as T

    return {
        "loss": f"{loss.item():.6g}",
        "psnr": f"{float((-10 * torch.log10(mse.clamp_min(1e-10))).mean()):.3f}",
        "step_delta": f"{float(np.mean([T.step_of(k) for k in ks])):.1f}",
    }


def run_meta(backend, tables, crop: int, batch: int, **weights) -> dict:
    """What a checkpoint records of its run besides the weights: decoder fingerprint, tc table id, crop, batch and
    the loss weights."""
    return {"fingerprint": backend.fingerprint, "table_id": tables.table_id, "crop": crop, "batch": batch, **weights}


def train(
    out: Path,
    budget_minutes: float,
    batch: int = 4,
    crop: int = 192,
    lr: float = 3e-5,
    alpha: float = ALPHA,
    beta: float = BETA,
    checkpoint_minutes: float = 5.0,
    threads: int = 2,
    seed: int = 0,
    weights_dir: Path | None = None,
    progress: bool = True,
    gamma: float = GAMMA,
    images: list[np.ndarray] | None = None,
    max_steps: int | None = None,
    init: Path | None = None,
    precision: str = "auto",
    keep: bool = False,
    augment: bool = False,
    train_from: int = 0,
) -> Path:
    """Train (or resume from ``out/ckpt.pt``) for ``budget_minutes`` of wall time (or ``max_steps`` steps in all);
    returns the checkpoint path. ``images``: HxWx3 uint8 arrays to crop from (default: the training photos);
    ``augment``: :func:`random_crops`'s scales, rotations and colour changes; ``train_from``: the encoder's layers
    (its top-level modules, 0-14 for TAEF2) before this index keep their starting weights.
    ``init``: a new run starts from these encoder weights (exported ``.pth`` or a checkpoint) instead of TAEF2's;
    ignored when ``out`` holds a checkpoint to resume. ``precision``: :func:`resolve_precision`."""
    import copy

    import torch

    precision = resolve_precision(precision)
    backend, tables = training_setup("encoder", threads, weights_dir)
    encoder, decoder = backend.encoder, backend.decoder
    stock = copy.deepcopy(encoder).eval().requires_grad_(False)  # before fit loads a checkpoint: TAEF2's own
    if precision == "bf16":  # the weights in NHWC too, as precision.run puts the inputs
        for net in (encoder, decoder, stock):
            net.to(memory_format=torch.channels_last)
    if (out / "ckpt.pt").is_file():  # resuming: the run started where its checkpoint says
        start = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False).get("init")
    else:
        start = str(init) if init is not None else None
        if init is not None:
            encoder.load_state_dict(load_trained_encoder(init).state_dict())
    layers = list(encoder.children())
    if not 0 <= train_from < len(layers):
        raise ValueError(f"train_from {train_from}: the encoder has layers 0..{len(layers) - 1}; pick one of them")
    for layer in layers[:train_from]:
        layer.requires_grad_(False)
    images = training_images() if images is None else images

    def batch_loss(rng):
        x, ks = draw_batch(images, batch, crop, rng, augment)
        loss, mse, bits = rd_loss(encoder, decoder, x, tables, ks, alpha, beta, gamma, precision)
        ratio = float(bits.sum()) / float(stock_bits(stock, x, tables, ks, precision).sum())
        return loss, {
            **step_log(loss, mse, ks),
            "bpp": f"{float(bits.mean()) / (crop * crop):.4f}",
            "bits_vs_stock": f"{ratio:.3f}",
        }

    meta = run_meta(backend, tables, crop, batch, alpha=alpha, beta=beta, gamma=gamma, precision=precision)
    if augment:
        meta["augment"] = dict(AUGMENT)
    if train_from:
        meta["train_from"] = train_from
    if start:  # where the run started, kept across resumes
        meta["init"] = start
    columns = ("loss", "psnr", "bpp", "bits_vs_stock", "step_delta")
    return fit(
        out,
        "encoder",
        encoder,
        batch_loss,
        meta,
        budget_minutes,
        lr,
        checkpoint_minutes,
        seed,
        max_steps,
        progress,
        columns,
        keep,
    )


def export(ckpt: Path, dest: Path = WEIGHTS) -> Path:
    """Write a checkpoint's encoder as a float16 state dict (TAEF2 encoder keys) and the training photos' licences."""
    st = save_half(ckpt, "encoder", dest)
    loss = ", ".join(f"{k} {st[k]:g}" for k in ("alpha", "beta", "gamma") if k in st)
    mixed = st.get("mixed_from")
    if mixed:
        how = (
            f"the weights averaged {1 - mixed[2]:g} : {mixed[2]:g} from two checkpoints of one run (steps {st['step']})"
        )
    elif st.get("averaged_from"):
        how = f"the mean weights of {len(st['averaged_from'])} checkpoints of one run (steps {st['step']})"
    else:
        how = f"{st['step']} steps"
    start = "Started from TAEF2's encoder weights (madebyollin/taesd, MIT licence)"
    if st.get("init"):  # a run started from earlier trained weights: say what those were (their record)
        prev = Path(st["init"]).with_suffix(".md")
        earlier = prev.read_text().split("\n\n")[1].strip().rstrip(".") if prev.is_file() else "no record beside it"
        start = f"Started from the encoder weights {Path(st['init']).name} ({earlier})"
    write_licence_record(
        dest,
        "TAEF2's encoder fine-tuned for the tc coder (python -m helpers.methods.tc.enc_train)",
        f"{start}; {how} of batch "
        f"{st['batch']}, {st['crop']}x{st['crop']} crops, against the frozen TAEF2 decoder "
        f"(weights {st['fingerprint']:08x}) and tc tables {st['table_id']:08x}"
        + (f"; loss {loss}" if loss else "")
        + describe_changes(st.get("changes", []))
        + ".",
    )
    return dest


def save_half(ckpt: Path, part: str, dest: Path) -> dict:
    """Write checkpoint ``ckpt``'s ``part`` (``encoder`` / ``decoder``) to ``dest`` as a float16 state dict; returns
    the checkpoint (its step, batch, crop, ... for the licence record)."""
    import torch

    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in st[part].items()}, dest)
    return st


def write_licence_record(dest: Path, title: str, origin: str) -> Path:
    """``dest`` with suffix ``.md``: what the exported weights are (``title``), what they were trained from
    (``origin``) and the training photos' packages, licences and authors."""
    from ...photos import HOLDOUT, PHOTOS

    lines = [
        f"# {dest.name}: {title}",
        "",
        origin,
        "",
        "Training photos (Debian packages; never Kodak, never the holdout photos):",
        "",
        "| file | package | licence | author |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p.name} | {p.package} | {p.licence} | {p.author} |" for p in PHOTOS if p.name not in HOLDOUT]
    record = dest.with_suffix(".md")
    record.write_text("\n".join(lines) + "\n")
    return record


def interpolate(a: Path, b: Path, t: float, dest: Path) -> Path:
    """Write ``(1 - t) * A + t * B`` of two checkpoints' encoder weights (same network, e.g. one run continued
    with another detail weight) as a checkpoint :func:`load_trained_encoder` and :func:`export` read: a cheap way to
    trade the runs' PSNR against detail without training in between."""
    import torch

    from ...errors import SDCError

    if not 0.0 <= t <= 1.0:
        raise SDCError(f"--interpolate: t must be in [0, 1], got {t}")
    sa, sb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    ea, eb = sa.get("encoder", sa), sb.get("encoder", sb)
    if ea.keys() != eb.keys():
        raise SDCError(f"--interpolate: {a} and {b} hold different networks; pass two checkpoints of enc_train")
    mixed = {
        k: ea[k].float().lerp(eb[k].float(), t).to(ea[k].dtype) if ea[k].is_floating_point() else ea[k] for k in ea
    }
    meta = {k: v for k, v in sa.items() if k not in ("encoder", "optimizer")}
    meta["step"] = f"{sa.get('step', '?')}/{sb.get('step', '?')} mixed {t:g}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, {**meta, "encoder": mixed, "mixed_from": [str(a), str(b), t]})
    return dest


def average(ckpts: list[Path], dest: Path) -> Path:
    """Write the mean of several checkpoints' encoder weights (one run's checkpoints, e.g. kept with ``--keep``) as a
    checkpoint :func:`load_trained_encoder` and :func:`export` read. At a constant learning rate the weights wander
    around the optimum from checkpoint to checkpoint (measured: the fixed-crop PSNR of one run's checkpoints 200 steps
    apart varied by 0.9 dB); their mean sits nearer its centre (stochastic weight averaging, Izmailov et al. 2018)."""
    import torch

    from ...errors import SDCError

    if len(ckpts) < 2:
        raise SDCError("--average: pass at least two checkpoints and the destination last")
    states = [torch.load(p, map_location="cpu", weights_only=False) for p in ckpts]
    encs = [st.get("encoder", st) for st in states]
    for p, e in zip(ckpts[1:], encs[1:]):
        if e.keys() != encs[0].keys():
            raise SDCError(
                f"--average: {ckpts[0]} and {p} hold different networks; pass checkpoints of one enc_train run"
            )
    mean = {
        k: (sum(e[k].float() for e in encs) / len(encs)).to(v.dtype) if v.is_floating_point() else v
        for k, v in encs[0].items()
    }
    meta = {k: v for k, v in states[-1].items() if k not in ("encoder", "optimizer")}
    meta["step"] = "/".join(str(st.get("step", "?")) for st in states)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, {**meta, "encoder": mean, "averaged_from": [str(p) for p in ckpts]})
    return dest


def load_trained_encoder(path: str | Path | None = None, dtype=None):
    """TAEF2 encoder module (``helpers.taef2.make_encoder``) with the trained weights (default: the shipped
    ``helpers/data/taef2_tc_encoder.pth``; a training checkpoint ``ckpt.pt`` works too), in eval mode."""
    from ...backends.taef2 import make_encoder

    return load_part(Path(path) if path is not None else WEIGHTS, "encoder", make_encoder, "enc_train", dtype)


def load_part(path: Path, part: str, make, tool: str, dtype=None):
    """``make()`` (a TAEF2 ``part``: ``encoder`` / ``decoder``) with the weights in ``path``: exported float16
    weights or a training checkpoint of ``helpers.methods.tc.<tool>``, in eval mode; a missing file or one that holds
    no such network is a one-line error."""
    import torch

    from ...errors import SDCError

    if not path.is_file():
        raise SDCError(
            f"{path} is missing: train it with python -m helpers.methods.tc.{tool} or use the stock TAEF2 {part}"
        )
    st = torch.load(path, map_location="cpu", weights_only=path.suffix == ".pth")
    st = st.get(part, st) if isinstance(st, dict) else st
    module = make()
    try:
        if not isinstance(st, dict) or not all(torch.is_tensor(v) for v in st.values()):
            raise RuntimeError("not a state dict of tensors")
        module.load_state_dict({k: v.float() for k, v in st.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise SDCError(f"{path} holds no TAEF2 {part} ({first}); pass a {tool} checkpoint") from None
    return module.to(dtype or torch.float32).eval()


def trained_backend(path: str | Path | None = None, weights_dir: Path | None = None):
    """A TAEF2 backend (PyTorch, CPU) whose encoder carries the trained weights; the decoder (and with it the
    fingerprint, the tc tables and every file it writes) is the stock one."""
    from ...backends.taef2 import load_taef2

    stock = load_taef2(weights_dir, device="cpu")
    if path is None:
        return stock.with_encoder("tc")
    # under its own name: codec.encode keeps a backend's non-stock encoder
    return stock.add_encoder(f"checkpoint {Path(path).name}", load_trained_encoder(path))


#: what :func:`compare` measures besides PSNR and the detail ratio: the benchmark's perceptual metrics, because a
#: PSNR gain of the trained encoder can cost what they see (measured: the README, "The perceptual metrics say no")
COMPARE_METRICS = ("ms_ssim", "cvvdp", "ssimulacra2", "butteraugli")
#: table columns of the metrics: record key -> (header, decimals, higher is better)
_COLUMNS = {
    "psnr": ("PSNR dB", 2, True),
    "ms_ssim": ("MS-SSIM", 3, True),
    "cvvdp": ("CVVDP JOD", 3, True),
    "ssimulacra2": ("SSIMULACRA 2", 1, True),
    "butteraugli": ("Butteraugli", 2, False),
}


def compare(images: dict, backends: dict, budgets=(5000, 12000), metrics=COMPARE_METRICS) -> list[dict]:
    """Code every image (name -> PIL image, sides multiples of 8) with every backend (name -> backend) through the
    tc coder at each budget; records of bytes, PSNR, the detail ratio and ``metrics`` (keys of
    :func:`helpers.metrics.measure`; the unavailable ones are left out) of the decoded picture."""
    from tqdm.auto import tqdm

    from ...codec import CodecParams, decode, encode

    rows = []
    for name, img in tqdm(images.items(), desc="encoder comparison"):
        for bname, be in backends.items():
            for b in budgets:
                enc = encode(img, be, CodecParams(method="tc", policy="none", encoder=be.encoder_name), target_bytes=b)
                dec = decode(enc.data, be).image
                rows.append(
                    {
                        "image": name,
                        "encoder": bname,
                        "budget": b,
                        "bytes": enc.nbytes,
                        **scores(img, dec, metrics),
                    }
                )
    return rows


def scores(img, dec, metrics=COMPARE_METRICS) -> dict:
    """What :func:`compare` records of a decoded picture ``dec`` against ``img``: ``psnr``, ``detail`` (the detail
    ratio) and ``metrics`` (keys of :func:`helpers.metrics.measure`; the unavailable ones are left out)."""
    from ...metrics import measure, psnr
    from ...metrics.retention import detail_retention

    out = {"psnr": psnr(img, dec), "detail": detail_retention(img, dec)}
    if metrics:
        out.update(measure(img, dec, keys=[k for k in metrics if k != "psnr"]))
    return out


def compare_table(rows: list[dict], reference: str = "stock", column: str = "encoder") -> str:
    """Markdown table of :func:`compare` records: per image set (Kodak crops / others), budget and encoder, the
    mean PSNR, every other metric the records carry (MS-SSIM, ColorVideoVDP, ...), the detail ratio, and on how
    many images PSNR (and ColorVideoVDP, where measured) is better and detail kept (within 0.02) against
    ``reference`` (a value of the records' ``column``: ``encoder``, or ``decoder`` for
    :func:`helpers.methods.tc.dec_train.compare`)."""
    ref = {(r["image"], r["budget"]): r for r in rows if r[column] == reference}
    keys = [k for k in _COLUMNS if any(r.get(k) is not None for r in rows)]
    counted = [k for k in ("psnr", "cvvdp") if k in keys]
    head = [_COLUMNS[k][0] for k in keys] + ["detail"]
    head += [f"{_COLUMNS[k][0].split()[0]} above {reference} on" for k in counted] + ["detail kept on"]
    lines = [f"| set | budget | {column} | images | " + " | ".join(head) + " |", "|---" * (4 + len(head)) + "|"]
    sets = {
        "Kodak": lambda n: n.startswith("kodim"),
        "holdout": lambda n: not n.startswith(("kodim", TRAINING_PREFIX)),
        "training photos": lambda n: n.startswith(TRAINING_PREFIX),
    }

    def mean(rs, k):
        v = [r[k] for r in rs if r.get(k) is not None]
        return f"{np.mean(v):.{_COLUMNS[k][1]}f}" if v else ""

    for sname, member in sets.items():
        for budget in sorted({r["budget"] for r in rows}):
            for enc in dict.fromkeys(r[column] for r in rows):
                rs = [r for r in rows if r[column] == enc and r["budget"] == budget and member(r["image"])]
                if not rs:
                    continue
                cells = [mean(rs, k) for k in keys] + [f"{np.mean([r['detail'] for r in rs]):.2f}"]
                for k in counted:
                    better = sum(
                        r.get(k) is not None and (r[k] - ref[r["image"], budget][k]) * (1 if _COLUMNS[k][2] else -1) > 0
                        for r in rs
                    )
                    cells.append(f"{better}/{len(rs)}")
                kept = sum(r["detail"] >= ref[r["image"], budget]["detail"] - 0.02 for r in rs)
                cells.append(f"{kept}/{len(rs)}")
                lines.append(f"| {sname} | {budget} | {enc} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: image names of the training photos in :func:`comparison_images` (their own set in :func:`compare_table`)
TRAINING_PREFIX = "train:"


def comparison_images(kodak: Path, training: bool = False) -> dict:
    """Stem -> 512x512 centre crop of the Kodak images in ``kodak`` and of the licensed holdout photos; with
    ``training``, also of the training photos (named ``train:<stem>``): a gain there that Kodak and the holdout do
    not share is what the network learnt of its own photos (measured 2026-12-07 at 5000 B: the shipped encoder gains
    1.34 dB over the stock one on 81 crops of its training photos, 1.01 on the holdout, 0.93 on Kodak). A folder
    without ``kodim*.png`` is a one-line error (the tables split the sets by the Kodak names)."""
    from PIL import Image

    from ...errors import SDCError
    from ...photos import crop512, holdout_photos, train_photos

    kodak_paths = sorted(Path(kodak).glob("kodim*.png"))
    if not kodak_paths:
        raise SDCError(f"no kodim*.png in {kodak}: pass the Kodak folder with --kodak (e.g. ../shared/data/kodak)")
    out = {p.stem: crop512(Image.open(p).convert("RGB")) for p in kodak_paths + holdout_photos()}
    if training:
        out.update({TRAINING_PREFIX + p.stem: crop512(Image.open(p).convert("RGB")) for p in train_photos()})
    return out


def compare_checkpoints(
    ckpts: list[str], kodak: Path, budgets=(5000, 12000), metrics=COMPARE_METRICS, training: bool = False
) -> str:
    """The stock encoder against trained checkpoints (or exported weights) on the Kodak crops in ``kodak`` and the
    licensed holdout photos (512x512 centre crops; ``training``: the training photos' too), tc at each budget:
    :func:`compare_table`."""
    from ...backends.taef2 import load_taef2

    images = comparison_images(kodak, training)
    backends = {"stock": load_taef2(None, device="cpu")}  # the stock encoder (compare codes each with its own)
    backends.update({str(c): trained_backend(c) for c in ckpts})
    return compare_table(compare(images, backends, budgets, metrics))


def add_training_args(ap: argparse.ArgumentParser, part: str, weights: Path, lr: float) -> None:
    """The options enc_train and dec_train share: the run (--out, --budget-minutes, --batch, --crop, --lr,
    --checkpoint-minutes, --threads), --export (to ``weights``), and --compare with --kodak and --metrics; ``part``:
    ``encoder`` or ``decoder``."""
    ap.add_argument("--out", default=None, help="checkpoint folder (ckpt.pt, log.csv); training resumes from it")
    ap.add_argument("--budget-minutes", type=float, default=60.0, help="wall-time budget of this run")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep every checkpoint as ckpt_STEP.pt beside ckpt.pt")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("SDCOMP_TRAIN_THREADS", "2")))
    ap.add_argument("--export", default=None, metavar="CKPT", help=f"write CKPT's {part} to {weights.name} and stop")
    ap.add_argument("--compare", nargs="+", default=None, metavar="CKPT", help=f"compare these with the stock {part}")
    ap.add_argument("--kodak", default=None, help="Kodak folder for --compare (default: ../shared/data/kodak)")
    ap.add_argument(
        "--with-training",
        action="store_true",
        help="--compare: the training photos' centre crops too, as a third set (a gain there that Kodak and the "
        "holdout do not share is overfitting)",
    )
    ap.add_argument(
        "--metrics",
        nargs="*",
        default=list(COMPARE_METRICS),
        metavar="KEY",
        help="--compare: metrics besides PSNR and detail (default: %(default)s; none: PSNR and detail only)",
    )


def run_compare(args: argparse.Namespace, compare_checkpoints) -> int:
    """``--compare`` of enc_train and dec_train (the options of :func:`add_training_args`): print
    ``compare_checkpoints(ckpts, kodak, metrics=..., training=...)`` (that tool's) with ``--threads`` torch threads."""
    import torch

    from ...bench.config import DEFAULT_DATA

    torch.set_num_threads(args.threads)
    kodak = Path(args.kodak or DEFAULT_DATA)
    print(compare_checkpoints(args.compare, kodak, metrics=tuple(args.metrics), training=args.with_training))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.methods.tc.enc_train", description=__doc__.splitlines()[0])
    add_training_args(ap, part="encoder", weights=WEIGHTS, lr=3e-5)
    ap.add_argument("--alpha", type=float, default=ALPHA, help="rate weight relative to the high-rate slope")
    ap.add_argument("--beta", type=float, default=BETA, help="weight of the detail term")
    ap.add_argument("--gamma", type=float, default=GAMMA, help="weight of a ColorVideoVDP term (10 - JOD)")
    ap.add_argument(
        "--interpolate",
        nargs=4,
        default=None,
        metavar=("A", "B", "T", "DEST"),
        help="write (1-T)*A + T*B of two checkpoints' encoders to DEST and stop",
    )
    ap.add_argument(
        "--average",
        nargs="+",
        default=None,
        metavar="CKPT",
        help="CKPT CKPT [...] DEST: write the mean of these checkpoints' encoders (one run's, e.g. --keep) to DEST and stop",
    )
    ap.add_argument(
        "--init",
        default=None,
        metavar="WEIGHTS",
        help="a new run starts from these encoder weights (e.g. helpers/data/taef2_tc_encoder.pth) instead of TAEF2's",
    )
    ap.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the networks' passes: bf16 autocast + channels-last (3-4x faster on CPUs with AMX / AVX512-BF16), "
        "fp32, or auto (bf16 where the CPU has it natively)",
    )
    ap.add_argument(
        "--augment",
        action="store_true",
        help="crops at random scales, turned and mirrored, tones and colours changed a little (see random_crops)",
    )
    ap.add_argument(
        "--train-from",
        type=int,
        default=0,
        metavar="N",
        help="train only the encoder's layers N.. (top-level modules; TAEF2 has 0-14), the earlier ones frozen",
    )
    ap.add_argument("--max-steps", type=int, default=None, help="stop at this many steps in all (besides the budget)")
    args = ap.parse_args(argv)
    from ...errors import guarded

    def run():
        if args.compare:
            return run_compare(args, compare_checkpoints)
        if args.export:
            print(export(Path(args.export)))
            return 0
        if args.interpolate:
            a, b, t, dest = args.interpolate
            print(interpolate(Path(a), Path(b), float(t), Path(dest)))
            return 0
        if args.average:
            *ckpts, dest = args.average
            print(average([Path(c) for c in ckpts], Path(dest)))
            return 0
        if not args.out:
            ap.error("--out is required for training")
        print(
            train(
                Path(args.out),
                args.budget_minutes,
                args.batch,
                args.crop,
                args.lr,
                args.alpha,
                args.beta,
                args.checkpoint_minutes,
                args.threads,
                gamma=args.gamma,
                init=Path(args.init) if args.init else None,
                precision=args.precision,
                keep=args.keep,
                augment=args.augment,
                train_from=args.train_from,
                max_steps=args.max_steps,
            )
        )
        return 0

    return guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())
