"""What the tc encoder's extra work buys on one image (notebook 07): every ``--effort`` at one budget, the same
refinement without its detail term (what pixel error and rate alone do to texture), and the stock encoder where tc
codes with its trained one (:mod:`helpers.methods.tc.enc_train`) by default. Each row carries the file size, the
encode's wall time, the metrics and the detail retention, so that a gain bought with blur shows beside the gain
itself."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..codec import CodecParams, decode, encode, encoder_name
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
    stock_encoder: bool = True,
    policy: str = "crop512",
    name: str = "image",
) -> tuple[list[dict], dict]:
    """(rows, pictures): one row per variant (``label``, ``effort``, ``detail`` weight, ``bytes``, ``encode_s``,
    each metric of ``metric_keys`` and ``detail_retention``) and the decoded pictures by label, with the reference
    (the policy-applied original) under ``"original"``. ``without_detail_term``: also this effort with the detail
    term off (None: skip); ``stock_encoder``: also the file of the model's stock encoder, where tc's default is
    another one (the stock TAEF2: its trained ``tc`` encoder, which every other row starts from)."""
    from tqdm.auto import tqdm

    from ..methods.tc.refine import detail_weight

    _, ref = model_input(img, policy, backend.downsample)
    variants: list[tuple[str, CodecParams]] = [
        (f"effort {e}", CodecParams(method="tc", policy=policy, effort=e)) for e in efforts
    ]
    if without_detail_term is not None:
        variants.append(
            (
                f"effort {without_detail_term}, no detail term",
                CodecParams(method="tc", policy=policy, effort=without_detail_term, detail=0.0),
            )
        )
    if stock_encoder and encoder_name(CodecParams(method="tc"), backend) != "stock":
        variants.append(("stock encoder", CodecParams(method="tc", policy=policy, encoder="stock")))
    keys = list(dict.fromkeys([*metric_keys, DETAIL_KEY]))
    rows, pictures = [], {"original": ref}
    for label, params in tqdm(variants, desc=f"{name}: effort study", leave=False):
        t0 = time.perf_counter()
        enc = encode(img, backend, params, target_bytes=budget)
        seconds = time.perf_counter() - t0
        pictures[label] = decode(enc.data, backend).image
        rows.append(
            {
                "image": name,
                "variant": label,
                "effort": params.effort,
                "detail": detail_weight(params.effort, params.detail) if params.effort else None,
                "bytes": enc.nbytes,
                "encode_s": round(seconds, 1),
                **measure(ref, pictures[label], keys=keys),
            }
        )
    return rows, pictures
