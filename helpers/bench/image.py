"""One image's work: the baseline records (encodes shared per quality) and our records for every backend,
coder, denoise flag and budget (latents encoded once, palettes and decodes memoised)."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BudgetError, SDCError
from . import config
from .config import OURS_RULE, POLICY, SAVINGS_COLORS
from .memory import PeakMemory
from .records import _metric_fields, _round, ours_label, record_key


class QualityCache:
    """Encodes of one image with one baseline codec, cached by quality.

    :func:`helpers.baselines.match_budget` runs as usual (same search, same choice) with this object's
    ``encodes`` dict, so the budgets and rules of one image share their encodes. The decoded image and
    metrics are cached per quality too.
    """

    def __init__(self, img, codec: str):
        from .. import baselines

        if codec not in baselines.CODECS:
            raise SDCError(f"unknown codec {codec!r}; use one of: {', '.join(baselines.CODECS)}")
        self.codec = codec
        self.img = img.convert("RGB")
        self.data: dict[int, bytes] = {}
        self.seconds: dict[int, float] = {}
        self._images: dict[int, Any] = {}
        self._metrics: dict[int, dict] = {}

    def match(self, budget: int, rule: str) -> int:
        """The quality :func:`helpers.baselines.match_budget` picks (BudgetError if ``le`` can't reach)."""
        from .. import baselines

        res = baselines.match_budget(self.img, self.codec, int(budget), rule=rule, encodes=self.data,
                                     seconds=self.seconds)
        self._images.setdefault(res.quality, res.image)
        return int(res.quality)

    def metrics(self, quality: int, ref) -> dict:
        from .. import baselines, metrics

        if quality not in self._metrics:
            image = self._images.get(quality) or baselines.decode_bytes(self.data[quality])
            self._metrics[quality] = metrics.all_metrics(ref, image, nbytes=len(self.data[quality]))
        return self._metrics[quality]


@dataclasses.dataclass
class Setup:
    budgets: list[int]
    codecs: list[str]
    rules: list[str]
    coders: list[str]
    denoise: bool
    max_colors: int
    coder_savings: bool
    models: list[str]  # --model specs
    verify: str  # "pixels" or "latents": how identical_to_zlib is checked in the budget runs
    device: str  # --device
    backends: list[tuple[str, Any]] = dataclasses.field(default_factory=list)  # (label, backend), once loaded

    def portable(self) -> Setup:
        """A picklable copy without the loaded models (worker processes load their own)."""
        return dataclasses.replace(self, backends=[])


def _variants(setup: Setup, backend) -> list[tuple[str, bool]]:
    flags = [False, True] if setup.denoise and getattr(backend, "has_unet", False) else [False]
    return [(coder, dn) for dn in flags for coder in setup.coders]


def _expected_keys(setup: Setup, image: str) -> list[str]:
    keys = [record_key(image, c, b, r) for c in setup.codecs for r in setup.rules for b in setup.budgets]
    for mlabel, backend in setup.backends:
        keys += [record_key(image, ours_label(mlabel, coder, dn), b, OURS_RULE)
                 for coder, dn in _variants(setup, backend) for b in setup.budgets]
    return keys


def _baseline_records(name: str, ref, setup: Setup, have: set[str]) -> list[dict]:
    out = []
    w, h = ref.size
    for codec in setup.codecs:
        todo = [(r, b) for r in setup.rules for b in setup.budgets if record_key(name, codec, b, r) not in have]
        if not todo:
            continue
        cache = QualityCache(ref, codec)
        for rule, budget in todo:
            base = {"image": name, "codec": codec, "kind": "baseline", "budget": int(budget), "rule": rule,
                    "width": w, "height": h}
            try:
                q = cache.match(budget, rule)
            except BudgetError as exc:
                smallest = min(len(d) for d in cache.data.values()) if cache.data else None
                out.append({**base, "bytes": None, "bpp": None, "quality": None, "setting": None,
                            **{m: None for m in config.metric_keys()}, "unreachable": str(exc),
                            "smallest_bytes": smallest})
                continue
            m = cache.metrics(q, ref)
            out.append({**base, **_metric_fields(m), "quality": int(q), "setting": f"q={q}",
                        "encode_seconds": _round(cache.seconds[q], 4), "search_encodes": len(cache.data)})
    return out


def _ours_records(name: str, img, setup: Setup, mlabel: str, backend, have: set[str],
                  need_savings: bool) -> tuple[list[dict], dict | None]:
    from .. import bitstream, metrics
    from ..codec import CodecParams, decode, encode, encode_latents
    from ..images import model_input

    variants = _variants(setup, backend)
    todo = [(coder, dn, b) for dn in sorted({d for _, d in variants}) for coder in setup.coders
            for b in setup.budgets if record_key(name, ours_label(mlabel, coder, dn), b, OURS_RULE) not in have]
    if not todo and not need_savings:
        return [], None
    model_img, ref = model_input(img, POLICY, backend.downsample)
    size = ref.size
    dev = backend.device
    with PeakMemory(dev) as pm_enc:
        t0 = time.perf_counter()
        z = encode_latents(backend, model_img, seed=0)
        if getattr(dev, "type", "") == "cuda":
            import torch

            torch.cuda.synchronize(dev)
        t_vae = time.perf_counter() - t0
    decoded: dict[str, tuple[Any, float, float]] = {}  # sha1(file) -> (Decoded, peak delta, peak abs)

    def decode_once(data: bytes):
        """Decode a file from its bytes; the same bytes (e.g. the 256-colour file that both the largest
        budget and the coder-savings section produce) are decoded once."""
        key = hashlib.sha1(data).hexdigest()
        if key not in decoded:
            with PeakMemory(dev) as pm:
                d = decode(data, backend)
            decoded[key] = (d, pm.delta_mb, pm.peak_mb)
        return decoded[key]

    measured: dict[str, dict] = {}

    def metrics_once(data: bytes, dec) -> dict:
        key = hashlib.sha1(data).hexdigest()
        if key not in measured:
            measured[key] = metrics.all_metrics(ref, dec.image, nbytes=len(data))
        return measured[key]

    def params(coder: str, dn: bool, colors: int) -> CodecParams:
        return CodecParams(method="auto", colors=colors, coder=coder, policy=POLICY, denoise=dn)

    def same_as_zlib(data: bytes, dec, dn: bool, colors: int) -> bool:
        """Does this file decode exactly like the zlib file with the same palette (requested ``colors``)?
        ``verify="pixels"``: both decoded images compared; ``"latents"``: the 8-bit latents both files
        unpack to (the decoder's whole input) compared, which skips one VAE decode."""
        enc_z = encode(img, backend, params("zlib", dn, colors), latents=z, cache=memo)
        if setup.verify == "pixels":
            return bool(np.array_equal(np.asarray(dec.image), np.asarray(decode_once(enc_z.data)[0].image)))
        return bool(np.array_equal(_unpacked_latent(data), _unpacked_latent(enc_z.data)))

    records: list[dict] = []
    savings = None
    memo: dict = {}  # codec.encode's palette/payload cache, shared by this image's budgets and coders
    if need_savings:
        # The coder's own saving: every coder on the same 256-colour palette + index map, no budget.
        n_colors = min(SAVINGS_COLORS, setup.max_colors)
        entry: dict[str, Any] = {"image": name, "model": mlabel, "colors_requested": n_colors,
                                 "bytes": {}, "payload_bytes": {}, "pack_seconds": {}}
        pixels = {}
        for coder in ["zlib"] + [c for c in setup.coders if c != "zlib"]:
            enc = encode(img, backend, params(coder, False, n_colors), latents=z, cache=memo)
            pixels[coder] = np.asarray(decode_once(enc.data)[0].image)
            _, payload = bitstream.unpack(enc.data)
            entry["colors"] = enc.header.colors
            entry["bytes"][coder] = enc.nbytes
            entry["payload_bytes"][coder] = len(payload)
            entry["pack_seconds"][coder] = _round(enc.timings.get("pack", 0.0), 4)
            if coder == "zlib":
                entry["psnr"] = _round(metrics.psnr(ref, pixels[coder]), 4)
        zb = entry["bytes"]["zlib"]
        entry["saved_pct"] = {c: _round(100.0 * (1 - n / zb), 3) for c, n in entry["bytes"].items() if c != "zlib"}
        entry["identical_to_zlib"] = {c: bool(np.array_equal(p, pixels["zlib"]))
                                      for c, p in pixels.items() if c != "zlib"}
        savings = entry
    for coder, dn, budget in todo:
        p = params(coder, dn, setup.max_colors)
        with PeakMemory(dev) as pm:
            t0 = time.perf_counter()
            try:
                enc = encode(img, backend, p, target_bytes=int(budget), latents=z, cache=memo)
            except BudgetError as exc:
                enc = None
                error = str(exc)
        dec, dec_delta, dec_peak = decode_once(enc.data) if enc is not None else (None, 0.0, 0.0)
        t2 = time.perf_counter()
        label = ours_label(mlabel, coder, dn)
        base = {"image": name, "codec": label, "kind": "ours", "budget": int(budget), "rule": OURS_RULE,
                "model": mlabel, "model_id": backend.model_id, "coder": coder, "denoise": dn,
                "width": size[0], "height": size[1]}
        if enc is None:
            records.append({**base, "bytes": None, "bpp": None, "colors": None, "setting": None,
                            **{m: None for m in config.metric_keys()}, "unreachable": error})
            continue
        chosen = max(c for c, n in enc.trials if n <= budget)  # requested palette size of the kept file
        m = metrics_once(enc.data, dec)
        h = enc.header
        seconds = {"vae_encode": t_vae, "quantize8": enc.timings.get("quantize8", 0.0),
                   "palette": enc.timings.get("palette", 0.0), "pack": enc.timings.get("pack", 0.0),
                   "unpack": dec.timings.get("unpack", 0.0), "denoise": dec.timings.get("denoise", 0.0),
                   "vae_decode": dec.timings.get("vae_decode", 0.0)}
        rec = {**base, **_metric_fields(m), "colors": h.colors, "colors_requested": chosen,
               "setting": f"{h.method} K={h.colors} {h.coder}" + (" +denoise" if h.denoise else ""),
               "trials": [list(t) for t in enc.trials],
               "seconds": {k: _round(v, 4) for k, v in seconds.items()},
               "seconds_total": _round(sum(seconds.values()), 4),
               "seconds_wall": _round(t2 - t0, 4),  # this run, with the memoised stages and decodes
               "peak_mem_mb": _round(max(pm.delta_mb, pm_enc.delta_mb, dec_delta), 1),
               "peak_process_mb": _round(max(pm.peak_mb, pm_enc.peak_mb, dec_peak), 1), "mem_kind": pm.kind}
        if coder == "zlib":
            rec["identical_to_zlib"] = True
        else:
            rec["identical_to_zlib"] = same_as_zlib(enc.data, dec, dn, chosen)
            rec["identical_check"] = setup.verify
        records.append(rec)
    return records, savings


def _unpacked_latent(data: bytes) -> np.ndarray:
    """The 8-bit latent a file unpacks to (before unquantize / denoise / VAE decode)."""
    from .. import bitstream
    from ..codec import unpack_payload

    header, payload = bitstream.unpack(data)
    return unpack_payload(header, payload)[2]


def bench_image(path: str | Path, setup: Setup, have: set[str], savings_needed: Sequence[str]) -> dict:
    """Every missing record of one image: baselines first, then each backend's variants.

    ``have``: keys already recorded (skipped); ``savings_needed``: model labels whose coder-savings entry is
    missing. Returns ``{"image", "records", "savings", "seconds"}``.
    """
    from ..images import load_image, model_input

    t0 = time.perf_counter()
    path = Path(path)
    name = path.stem
    img = load_image(path)
    _, ref = model_input(img, POLICY)
    records = _baseline_records(name, ref, setup, have)
    savings = []
    for mlabel, backend in setup.backends:
        recs, sav = _ours_records(name, img, setup, mlabel, backend, have, mlabel in savings_needed)
        records += recs
        if sav is not None:
            savings.append(sav)
    return {"image": name, "records": records, "savings": savings, "seconds": time.perf_counter() - t0}
