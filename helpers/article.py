"""The 2022 article's method beside today's default, at the same byte budget (notebooks 05 and 06).

The article coded the latent with a palette (``method="palette"``: libimagequant for 4-channel SD latents, k-means
otherwise) and zlib; the notebooks keep reproducing it by asking for that method by name, whatever the library
default becomes. Today's default is the transform coder (``method="tc"``, :mod:`helpers.methods.tc.tcoder`). :func:`then_and_now`
codes one image both ways under the same budget and matches AVIF to it (rule ``le``: its largest file within the
budget), so a slider (:func:`helpers.plots.choice_slider`) and a table can put original, 2022, default and AVIF
side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from .errors import BudgetError, UnavailableError

ARTICLE_METHOD = "palette"  # the 2022 method, asked for by name
DEFAULT_METHOD = "tc"  # today's default (the CLI's)
#: measured for each picture: fidelity, perception, and detail retention (not a score: noise would score high)
KEYS = ("psnr", "cvvdp", "ssimulacra2", "detail_retention")


@dataclass
class ThenAndNow:
    """One image coded by the 2022 method and by today's default within one budget, and AVIF within it too."""

    name: str
    budget: int
    pictures: dict[str, Image.Image]  # label -> picture, in the order original, 2022, default, AVIF
    roles: dict[str, str]  # "original" / "2022" / "default" / "avif" -> label in ``pictures``
    rows: list[dict] = field(default_factory=list)  # per picture but the original: bytes and the metrics of KEYS
    missing: dict[str, str] = field(default_factory=dict)  # role -> why it is not shown (AVIF unavailable, ...)


def then_and_now(
    img, backend, name: str, target_bytes: int, policy: str = "pad8", coder: str = "zlib", palette=None, keys=KEYS
) -> ThenAndNow:
    """Code ``img`` with the 2022 palette method (``coder``: the article's zlib) and with today's default (tc) under
    ``target_bytes``, decode both, and match AVIF to the budget (largest file <= budget). ``palette``: a
    :class:`helpers.bench.compare.Comparison` of the same image made with ``method="palette"`` at the same budget, reused
    instead of coding it again."""
    from . import baselines, metrics
    from .codec import CodecParams, decode, encode
    from .images import model_input

    _, ref = model_input(img, policy, backend.downsample)
    if palette is None:
        old = encode(img, backend, CodecParams(method=ARTICLE_METHOD, coder=coder, policy=policy), target_bytes)
        old_img = decode(old.data, backend).image
    else:
        if palette.ours.header.method == DEFAULT_METHOD:
            raise ValueError("then_and_now: the comparison passed as `palette` was coded with tc, not the palette")
        old, old_img = palette.ours, palette.ours_decoded.image
    new = encode(img, backend, CodecParams(method=DEFAULT_METHOD, policy=policy), target_bytes, latents=old.latents)
    new_img = decode(new.data, backend).image
    roles = {
        "original": "original",
        "2022": f"2022: palette ({old.header.colors} colours, {old.header.coder}), {old.nbytes:,} B",
        "default": f"default: tc (step {new.coded.step:.3g}), {new.nbytes:,} B",
    }
    pictures = {roles["original"]: ref, roles["2022"]: old_img, roles["default"]: new_img}
    sizes = {"2022": old.nbytes, "default": new.nbytes}
    missing = {}
    try:
        avif = baselines.match_budget(ref, "avif", target_bytes, rule="le")
        roles["avif"] = f"AVIF q{avif.quality}, {avif.nbytes:,} B"
        pictures[roles["avif"]] = avif.image
        sizes["avif"] = avif.nbytes
    except (BudgetError, UnavailableError) as exc:
        missing["avif"] = " ".join(str(exc).split())
    wanted = [k for k in keys if metrics.metric_status([k])[k][0]]
    rows = []
    for role in ("2022", "default", "avif"):
        if role in roles:
            rows.append(
                {
                    "image": name,
                    "picture": role,
                    "bytes": sizes[role],
                    **metrics.measure(ref, pictures[roles[role]], wanted),
                }
            )
    return ThenAndNow(name=name, budget=int(target_bytes), pictures=pictures, roles=roles, rows=rows, missing=missing)
