"""Matched-size comparisons of the latent codec against JPEG, WebP, AVIF and JPEG XL, and metric tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from . import baselines, metrics
from .codec import CodecParams, Decoded, Encoded, decode, encode
from .errors import BudgetError, UnavailableError
from .images import load_image, model_input

COLUMNS = ("image", "codec", "rule", "setting", "bytes", "bpp", "psnr", "ssim", "ms_ssim", "lpips")


@dataclass
class Comparison:
    """One image: the reference, our file and decode, and the baselines matched to our size."""

    name: str
    reference: Image.Image
    ours: Encoded
    ours_decoded: Decoded
    baselines: dict[str, dict[str, baselines.BaselineResult]]  # rule -> codec -> result
    rows: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def images(self, rule: str = "ge") -> dict[str, Image.Image]:
        """Label -> decoded image, reference first, ours last (the article's panel order)."""
        return {title: img for _, title, img, _, _ in self.panels(rule)}

    def panels(self, rule: str = "ge") -> list[tuple[str, str, Image.Image, int | None, float | None]]:
        """(key, title, image, bytes, PSNR) per panel: the original, each baseline under ``rule``, ours."""
        psnr = {(r["codec"], r["rule"]): r["psnr"] for r in self.rows}
        out = [("original", "original", self.reference, None, None)]
        for codec, res in self.baselines.get(rule, {}).items():
            out.append((codec, f"{codec} q{res.quality}", res.image, res.nbytes, psnr.get((codec, rule))))
        ours = self.rows[0]  # compare_image puts our row first
        out.append(("ours", f"ours ({self.ours.header.model_id})", self.ours_decoded.image, self.ours.nbytes,
                    ours["psnr"]))
        return out

    def sizes(self, rule: str = "ge") -> dict[str, int]:
        out = {codec: res.nbytes for codec, res in self.baselines.get(rule, {}).items()}
        out["ours"] = self.ours.nbytes
        return out


def _metrics_row(name, codec, rule, setting, ref, img, nbytes, with_lpips: bool = True) -> dict:
    return {"image": name, "codec": codec, "rule": rule, "setting": setting,
            **metrics.all_metrics(ref, img, nbytes=nbytes, lpips=with_lpips)}


def compare_image(img, backend, name: str = "image", params: CodecParams | None = None,
                  target_bytes: int | None = None, codecs: list[str] | None = None,
                  rules: tuple[str, ...] = ("ge",), with_lpips: bool = True, latents=None) -> Comparison:
    """Encode with our codec (under ``target_bytes`` if given), then match each baseline to our file size."""
    params = params or CodecParams()
    _, ref = model_input(img, params.policy, backend.downsample)
    t0 = time.perf_counter()
    enc = encode(img, backend, params, target_bytes, latents)
    t1 = time.perf_counter()
    dec = decode(enc.data, backend)
    t2 = time.perf_counter()
    codecs = baselines.available_codecs() if codecs is None else codecs
    results: dict[str, dict[str, baselines.BaselineResult]] = {}
    for rule in rules:
        results[rule] = {}
        for codec in codecs:
            try:
                results[rule][codec] = baselines.match_budget(ref, codec, enc.nbytes, rule=rule)
            except (BudgetError, UnavailableError):
                continue  # reported as a missing row: the codec cannot reach this size
    setting = f"{enc.header.method} K={enc.header.colors} {enc.header.coder}" + (" +denoise" if enc.header.denoise else "")
    rows = [_metrics_row(name, f"ours:{backend.kind}", "-", setting, ref, dec.image, enc.nbytes, with_lpips)]
    for rule, per in results.items():
        for codec, res in per.items():
            rows.append(_metrics_row(name, codec, rule, f"q={res.quality}", ref, res.image, res.nbytes, with_lpips))
    return Comparison(name=name, reference=ref, ours=enc, ours_decoded=dec, baselines=results, rows=rows,
                      seconds={"encode": t1 - t0, "decode": t2 - t1, **{f"enc_{k}": v for k, v in enc.timings.items()},
                               **{f"dec_{k}": v for k, v in dec.timings.items()}})


def compare_files(paths, backend, params: CodecParams | None = None, target_bytes: int | None = None,
                  codecs=None, rules=("ge",), progress: bool = True) -> list[Comparison]:
    """:func:`compare_image` over image files, one progress bar, weights loaded once."""
    out = []
    for p in tqdm(list(paths), desc="compare", disable=not progress):
        out.append(compare_image(load_image(p), backend, Path(p).stem, params, target_bytes, codecs, rules))
    return out


def _fmt(v, nd=3):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(rows: list[dict], columns=COLUMNS) -> str:
    """Rows of metric dicts -> a GitHub markdown table (LPIPS 'n/a' when unavailable)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(_fmt(v, 2 if c == "psnr" else 4 if c in ("ssim", "ms_ssim", "lpips", "bpp") else 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def timing_table(comparisons: list[Comparison]) -> str:
    keys = sorted({k for c in comparisons for k in c.seconds})
    lines = ["| image | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for c in comparisons:
        lines.append(f"| {c.name} | " + " | ".join(f"{c.seconds.get(k, 0):.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_report(comparisons: list[Comparison], out_dir: str | Path, backend, title: str = "Matched-size comparison") -> dict:
    """Write metrics.json, metrics.md (metrics + per-stage seconds) and comparison.png into ``out_dir``."""
    from .plots import comparison_figure, save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for c in comparisons for r in c.rows]
    ok, reason = metrics.lpips_status()
    meta = {"backend": backend.describe(), "model_id": backend.model_id,
            "lpips": "available" if ok else f"unavailable: {reason}"}
    (out / "metrics.json").write_text(json.dumps({"meta": meta, "rows": rows,
                                                  "seconds": {c.name: c.seconds for c in comparisons}}, indent=2))
    md = [f"# {title}\n", f"Backend: `{meta['backend']}`. LPIPS: {meta['lpips']}.\n",
          "Baselines are matched to our file size; rule `ge` = smallest file >= ours (the 2022 notebook's rule), "
          "`le` = largest file <= ours; a codec missing under `le` cannot make a file that small. "
          "Sizes include every header byte; bpp = 8*bytes/pixels.\n",
          markdown_table(rows), "\n## Seconds per image (this machine)\n", timing_table(comparisons)]
    (out / "metrics.md").write_text("\n".join(md))
    fig = comparison_figure(comparisons)
    save_figure(fig, out / "comparison.png")
    return {"json": out / "metrics.json", "md": out / "metrics.md", "png": out / "comparison.png"}
