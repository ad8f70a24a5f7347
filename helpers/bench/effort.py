"""What the tc encoder's extra work buys on one image (notebook 07): every ``--effort`` at one budget, the same
refinement without its detail term (what pixel error and rate alone do to texture), and the trained encoder
(:mod:`helpers.methods.tc.enc_train`). Each row carries the file size, the encode's wall time, the metrics and the
detail retention, so that a gain bought with blur shows beside the gain itself."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..codec import CodecParams, decode, encode
from ..images import model_input
from ..metrics import measure

DETAIL_KEY = "detail_retention"


def effort_study(
    img,
    backend,
    budget: int,
    efforts: Sequence[int] = (0, 1, 2, 3),
    metric_keys: Sequence[str] = ("psnr", "ms_ssim", "cvvdp", "ssimulacra2"),
    without_detail_term: int | None = 1,
    trained_encoder: bool = True,
    policy: str = "crop512",
    name: str = "image",
) -> tuple[list[dict], dict]:
    """(rows, pictures): one row per variant (``label``, ``effort``, ``detail`` weight, ``bytes``, ``encode_s``,
    each metric of ``metric_keys`` and ``detail_retention``) and the decoded pictures by label, with the reference
    (the policy-applied original) under ``"original"``. ``without_detail_term``: also this effort with the detail
    term off (None: skip); ``trained_encoder``: also the trained encoder's file (TAEF2 only; skipped when its
    weights are missing)."""
    from tqdm.auto import tqdm

    from ..methods.tc.refine import DETAIL_BETA

    _, ref = model_input(img, policy, backend.downsample)
    variants: list[tuple[str, CodecParams, object]] = [
        (f"effort {e}", CodecParams(method="tc", policy=policy, effort=e), backend) for e in efforts
    ]
    if without_detail_term is not None:
        variants.append(
            (
                f"effort {without_detail_term}, no detail term",
                CodecParams(method="tc", policy=policy, effort=without_detail_term, detail=0.0),
                backend,
            )
        )
    if trained_encoder and backend.kind == "taef2":
        from ..methods.tc import enc_train

        if enc_train.WEIGHTS.is_file():
            variants.append(("trained encoder", CodecParams(method="tc", policy=policy), enc_train.trained_backend()))
    keys = list(dict.fromkeys([*metric_keys, DETAIL_KEY]))
    rows, pictures = [], {"original": ref}
    for label, params, be in tqdm(variants, desc=f"{name}: effort study", leave=False):
        t0 = time.perf_counter()
        enc = encode(img, be, params, target_bytes=budget)
        seconds = time.perf_counter() - t0
        pictures[label] = decode(enc.data, backend).image  # files always decode with the stock decoder
        rows.append(
            {
                "image": name,
                "variant": label,
                "effort": params.effort,
                "detail": (DETAIL_BETA if params.detail is None else params.detail) if params.effort else None,
                "bytes": enc.nbytes,
                "encode_s": round(seconds, 1),
                **measure(ref, pictures[label], keys=keys),
            }
        )
    return rows, pictures
