"""One image's work: the baseline records (encodes shared per quality) and our records for every backend,
coder, denoise flag and budget (latents encoded once, palettes and decodes memoised), every metric measured
once per decoded picture (:class:`MetricCache`), and the filling-in of records that lack some metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.taef2_spec import encoder_digest
from ..errors import BudgetError, SDCError
from ..memory import PeakMemory
from . import config
from .config import OURS_RULE, PALETTE_CODERS, POLICY, SAVINGS_COLORS, variant
from .records import _metric_fields, _metric_values, _round, ours_label, record_key, with_metrics


class QualityCache:
    """Encodes of one image with one baseline codec, cached by quality.

    :func:`helpers.baselines.match_budget` runs as usual (same search, same choice) with this object's
    ``encodes`` dict, so the budgets and rules of one image share their encodes. The decoded images are
    cached per quality too.
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

    def match(self, budget: int, rule: str) -> int:
        """The quality :func:`helpers.baselines.match_budget` picks (BudgetError if ``le`` can't reach)."""
        from .. import baselines

        res = baselines.match_budget(
            self.img, self.codec, int(budget), rule=rule, encodes=self.data, seconds=self.seconds
        )
        self._images.setdefault(res.quality, res.image)
        return int(res.quality)

    def encode(self, quality: int) -> bytes:
        """The file at ``quality`` (encoded once; the same call :func:`helpers.baselines.match_budget` makes)."""
        from .. import baselines

        if quality not in self.data:
            t0 = time.perf_counter()
            self.data[quality] = baselines.CODECS[self.codec].encode(self.img, int(quality))
            self.seconds[quality] = time.perf_counter() - t0
        return self.data[quality]

    def image(self, quality: int):
        """The decoded file at ``quality`` (decoded once)."""
        from .. import baselines

        if quality not in self._images:
            self._images[quality] = baselines.decode_bytes(self.encode(quality))
        return self._images[quality]


class MetricCache:
    """The metrics of decoded pictures against one reference, each distinct picture measured once.

    Keyed by the SHA-1 of the decoded pixels: a baseline quality shared by several budgets or rules, our
    file shared by several budgets, and the files of two coders that decode to the same pixels
    (``identical_to_zlib``) are measured once. ``seconds`` / ``pairs`` / ``per_metric`` add up what
    :func:`helpers.metrics.measure` cost (the benchmark's metric time; per metric: each one's own wall
    time inside ``measure``, where the command-line tools and a second thread run concurrently).
    """

    def __init__(self, ref, keys: Sequence[str]):
        self.ref = np.asarray(ref.convert("RGB") if hasattr(ref, "convert") else ref)
        self.keys = list(keys)
        self._values: dict[str, dict] = {}
        self.seconds = 0.0
        self.pairs = 0
        self.per_metric: dict[str, float] = {}

    def measure(self, image, keys: Sequence[str] | None = None) -> tuple[dict, float]:
        """(``key -> value`` for ``keys`` (default: all of this cache's keys), seconds spent now: 0 if cached)."""
        from .. import metrics

        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        digest = hashlib.sha1(arr.tobytes() + repr(arr.shape).encode()).hexdigest()
        have = self._values.setdefault(digest, {})
        keys = list(self.keys if keys is None else keys)
        todo = [k for k in keys if k not in have]
        spent = 0.0
        if todo:
            secs: dict[str, float] = {}
            t0 = time.perf_counter()
            got = metrics.measure(self.ref, arr, keys=todo, seconds=secs)
            spent = time.perf_counter() - t0
            have.update({k: got.get(k) for k in todo})
            self.seconds += spent
            self.pairs += 1
            for k, v in secs.items():
                self.per_metric[k] = self.per_metric.get(k, 0.0) + v
        return {k: have.get(k) for k in keys}, spent

    def stats(self) -> dict:
        return {
            "seconds": _round(self.seconds, 3),
            "pairs": self.pairs,
            "per_metric": {k: _round(v, 3) for k, v in self.per_metric.items()},
        }


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _same_file(old: dict, data: bytes) -> bool:
    """Is ``data`` the file ``old`` describes? Its SHA-1 where the record has one (records from this version on),
    else its byte count (older records; the caller also compares the quality or palette size)."""
    if old.get("file_sha1"):
        return old["file_sha1"] == _sha1(data)
    return old.get("bytes") == len(data)


def _filled(old: dict, values: dict, missing: Sequence[str], data: bytes, spent: float) -> dict:
    """``old`` with the ``missing`` metrics added from ``values`` (every other field unchanged)."""
    rec = with_metrics(old, _metric_values(values, keys=set(missing)))
    rec["file_sha1"] = _sha1(data)
    rec["metrics_seconds"] = _round((old.get("metrics_seconds") or 0.0) + spent, 4)
    return rec


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
    metrics: list[str] = dataclasses.field(default_factory=lambda: list(config.CLASSIC_KEYS))  # keys measured
    backends: list[tuple[str, Any]] = dataclasses.field(default_factory=list)  # (label, backend), once loaded
    policy: str = POLICY  # crop512 (centre 512x512, no resampling) or full (whole image, tiled as the CLI does)
    sweep: bool = False  # also each baseline's quality sweep (config.SWEEP_QUALITIES), cached by content hash

    @property
    def codec_policy(self) -> str:
        """The :func:`helpers.images.apply_policy` policy: crop512, or pad8 for ``full`` (what the CLI codes)."""
        return config.codec_policy(self.policy)

    def portable(self) -> Setup:
        """A picklable copy without the loaded models (worker processes load their own)."""
        return dataclasses.replace(self, backends=[])


def _variants(setup: Setup, backend) -> list[tuple[str, bool]]:
    flags = [False, True] if setup.denoise and getattr(backend, "has_unet", False) else [False]
    return [(coder, dn) for dn in flags for coder in setup.coders]


def _expected_keys(setup: Setup, image: str) -> list[str]:
    keys = [record_key(image, c, b, r) for c in setup.codecs for r in setup.rules for b in setup.budgets]
    for mlabel, backend in setup.backends:
        keys += [
            record_key(image, ours_label(mlabel, coder, dn), b, OURS_RULE)
            for coder, dn in _variants(setup, backend)
            for b in setup.budgets
        ]
    return keys


Fills = dict  # record key -> (old record, metric keys it lacks): records to complete instead of recompute


def _baseline_records(
    name: str, ref, setup: Setup, have: set[str], fills: Fills, mc: MetricCache
) -> list[tuple[str, dict]]:
    """(status, record) per missing baseline record (``new``) and per record to fill: the file re-encoded at
    the recorded quality (a few milliseconds) and, when it is the recorded file, only the missing metrics
    measured (``filled``); otherwise (the codec library changed since) recomputed from scratch (``replaced``)."""
    out: list[tuple[str, dict]] = []
    w, h = ref.size
    for codec in setup.codecs:
        todo = [(r, b) for r in setup.rules for b in setup.budgets if record_key(name, codec, b, r) not in have]
        mine = {k: v for k, v in fills.items() if v[0]["codec"] == codec}
        if not todo and not mine:
            continue
        cache = QualityCache(ref, codec)
        for _key, (old, missing) in mine.items():
            q = old.get("quality")
            data = cache.encode(int(q)) if q is not None else None
            if data is not None and _same_file(old, data):
                m, spent = mc.measure(cache.image(int(q)), missing)
                out.append(("filled", _filled(old, m, missing, data, spent)))
            else:
                todo.append((old["rule"], int(old["budget"])))
        for rule, budget in todo:
            status = "replaced" if record_key(name, codec, budget, rule) in fills else "new"
            base = {
                "image": name,
                "codec": codec,
                "kind": "baseline",
                "budget": int(budget),
                "rule": rule,
                "width": w,
                "height": h,
            }
            try:
                q = cache.match(budget, rule)
            except BudgetError as exc:
                smallest = min(len(d) for d in cache.data.values()) if cache.data else None
                out.append(
                    (
                        status,
                        {
                            **base,
                            "bytes": None,
                            "bpp": None,
                            "quality": None,
                            "setting": None,
                            **{m: None for m in config.LEGACY_KEYS},
                            "unreachable": str(exc),
                            "smallest_bytes": smallest,
                        },
                    )
                )
                continue
            data = cache.encode(q)
            m, spent = mc.measure(cache.image(q))
            out.append(
                (
                    status,
                    {
                        **base,
                        **_metric_fields({**m, "bytes": len(data), "bpp": 8 * len(data) / (w * h)}),
                        "quality": int(q),
                        "setting": f"q={q}",
                        "encode_seconds": _round(cache.seconds[q], 4),
                        "search_encodes": len(cache.data),
                        "file_sha1": _sha1(data),
                        "metrics_seconds": _round(spent, 4),
                    },
                )
            )
    return out


def _ours_records(
    name: str,
    img,
    setup: Setup,
    mlabel: str,
    backend,
    have: set[str],
    need_savings: bool,
    fills: Fills,
    mc: MetricCache,
    only_dn: bool | None = None,
) -> tuple[list[tuple[str, dict]], dict | None]:
    """(status, record) per missing record of one backend (``new``) and per record to fill: the file is
    encoded again through the same rate control (latents once per image, palettes memoised) and decoded;
    when it is the recorded file (same SHA-1, or for older records the same bytes and palette size) only the
    missing metrics are added (``filled``; timings and everything else kept), else the record is replaced
    by the new one (``replaced``: the codec changed since). Also the coder-savings entry if needed."""
    from .. import bitstream, metrics
    from ..codec import CodecParams, decode, encode, encoder_name
    from ..images import model_input

    variants = [(c, d) for c, d in _variants(setup, backend) if only_dn is None or d == only_dn]
    todo = [
        (coder, dn, b)
        for dn in sorted({d for _, d in variants})
        for coder in setup.coders
        for b in setup.budgets
        if (k := record_key(name, ours_label(mlabel, coder, dn), b, OURS_RULE)) not in have or k in fills
    ]
    if not todo and not need_savings:
        return [], None
    model_img, ref = model_input(img, setup.codec_policy, backend.downsample)
    size = ref.size
    dev = backend.device_type
    encoded: dict[str, tuple] = {}  # encoder name -> (latents, encode seconds, its PeakMemory): once per encoder

    def latents_for(p: CodecParams) -> tuple:
        """(encoder name, latents, seconds, PeakMemory) of the encoder that codes for ``p`` (e.g. tc's own)."""
        name = encoder_name(p, backend)
        if name not in encoded:
            with PeakMemory(dev) as pm:
                encoded[name] = (*_latents(backend.with_encoder(name), model_img), pm)
        return (name, *encoded[name])

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

    def params(coder: str, dn: bool, colors: int) -> CodecParams:
        method, lossless, effort = variant(coder)
        return CodecParams(
            method=method, colors=colors, coder=lossless, policy=setup.codec_policy, denoise=dn, effort=effort
        )

    def same_as_zlib(data: bytes, dec, dn: bool, colors: int) -> bool:
        """Does this file decode exactly like the zlib file with the same palette (requested ``colors``)?
        ``verify="pixels"``: both decoded images compared; ``"latents"``: the 8-bit latents both files
        unpack to (the decoder's whole input) compared, which skips one VAE decode."""
        pz = params("zlib", dn, colors)
        enc_z = encode(img, backend, pz, latents=latents_for(pz)[1], cache=memo)
        if setup.verify == "pixels":
            return bool(np.array_equal(np.asarray(dec.image), np.asarray(decode_once(enc_z.data)[0].image)))
        return bool(np.array_equal(_unpacked_latent(data), _unpacked_latent(enc_z.data)))

    records: list[tuple[str, dict]] = []
    savings = None
    memo: dict = {}  # codec.encode's palette/payload cache, shared by this image's budgets and coders
    if need_savings:
        # The coder's own saving: every coder on the same 256-colour palette + index map, no budget.
        n_colors = min(SAVINGS_COLORS, setup.max_colors)
        entry: dict[str, Any] = {
            "image": name,
            "model": mlabel,
            "colors_requested": n_colors,
            "bytes": {},
            "payload_bytes": {},
            "pack_seconds": {},
        }
        pixels = {}
        for coder in ["zlib"] + [c for c in setup.coders if c != "zlib" and c in PALETTE_CODERS]:
            pc = params(coder, False, n_colors)
            enc = encode(img, backend, pc, latents=latents_for(pc)[1], cache=memo)
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
        entry["identical_to_zlib"] = {
            c: bool(np.array_equal(p, pixels["zlib"])) for c, p in pixels.items() if c != "zlib"
        }
        savings = entry
    for coder, dn, budget in todo:
        label = ours_label(mlabel, coder, dn)
        key = record_key(name, label, budget, OURS_RULE)
        p = params(coder, dn, setup.max_colors)
        enc_name, z, t_vae, pm_enc = latents_for(p)
        with PeakMemory(dev) as pm:
            t0 = time.perf_counter()
            try:
                enc = encode(img, backend, p, target_bytes=int(budget), latents=z, cache=memo)
            except BudgetError as exc:
                enc = None
                error = str(exc)
        dec, dec_delta, dec_peak = decode_once(enc.data) if enc is not None else (None, 0.0, 0.0)
        t2 = time.perf_counter()
        if key in fills:
            old, missing = fills[key]
            if enc is not None and _same_file(old, enc.data) and old.get("colors") == enc.header.colors:
                m, spent = mc.measure(dec.image, missing)
                records.append(("filled", _filled(old, m, missing, enc.data, spent)))
                continue
        status = "replaced" if key in fills else "new"
        base = {
            "image": name,
            "codec": label,
            "kind": "ours",
            "budget": int(budget),
            "rule": OURS_RULE,
            "model": mlabel,
            "model_id": backend.model_id,
            "encoder": enc_name,
            "encoder_weights": encoder_digest(enc_name),
            "refine": config.refine_label(p.method, p.effort),
            "payload": config.payload_label(p.method),
            "coder": coder,
            "denoise": dn,
            "width": size[0],
            "height": size[1],
        }
        if enc is None:
            records.append(
                (
                    status,
                    {
                        **base,
                        "bytes": None,
                        "bpp": None,
                        "colors": None,
                        "setting": None,
                        **{m: None for m in config.LEGACY_KEYS},
                        "unreachable": error,
                    },
                )
            )
            continue
        tc = enc.header.method == "tc"
        # requested palette size of the kept file (tc: its step index)
        chosen = enc.coded.k if tc else max(c for c, n in enc.trials if n <= budget)
        m, spent = mc.measure(dec.image)
        h = enc.header
        seconds = {
            "vae_encode": t_vae,
            "refine": enc.timings.get("refine", 0.0),
            "quantize8": enc.timings.get("quantize8", 0.0),
            "palette": enc.timings.get("palette", 0.0),
            "pack": enc.timings.get("pack", 0.0),
            "unpack": dec.timings.get("unpack", 0.0),
            "denoise": dec.timings.get("denoise", 0.0),
            "vae_decode": dec.timings.get("vae_decode", 0.0),
        }
        rec = {
            **base,
            **_metric_fields({**m, "bytes": enc.nbytes, "bpp": 8 * enc.nbytes / (size[0] * size[1])}),
            "colors": h.colors,
            "colors_requested": None if tc else chosen,
            "setting": (
                f"tc step {enc.coded.step:.4g}" + (f" effort {p.effort}" if p.effort else "")
                if tc
                else f"{h.method} K={h.colors} {h.coder}"
            )
            + (" +denoise" if h.denoise else ""),
            "trials": [list(t) for t in enc.trials],
            "seconds": {k: _round(v, 4) for k, v in seconds.items()},
            "seconds_total": _round(sum(seconds.values()), 4),
            "seconds_wall": _round(t2 - t0, 4),  # this run, with the memoised stages and decodes
            "peak_mem_mb": _round(max(pm.delta_mb, pm_enc.delta_mb, dec_delta), 1),
            "peak_process_mb": _round(max(pm.peak_mb, pm_enc.peak_mb, dec_peak), 1),
            "mem_kind": pm.kind,
        }
        if tc:
            rec.update(
                step=_round(enc.coded.step, 6),
                step_index=int(enc.coded.k),
                effort=p.effort,
                tc_tables=f"{enc.coded.tables.table_id:08x}",
            )
        elif coder == "zlib":
            rec["identical_to_zlib"] = True
        else:
            rec["identical_to_zlib"] = same_as_zlib(enc.data, dec, dn, chosen)
            rec["identical_check"] = setup.verify
        rec["file_sha1"] = _sha1(enc.data)
        rec["metrics_seconds"] = _round(spent, 4)
        records.append((status, rec))
    return records, savings


_LATENTS: dict[tuple, tuple[Any, float]] = {}  # (backend, image digest) -> (latents, seconds): one process's cache
_LATENTS_KEEP = 4


def _latents(backend, model_img) -> tuple[Any, float]:
    """The image's latents and the seconds their encode took, encoded once per process (the tasks of one image's
    variants that run in the same worker share them; a few images are kept)."""
    from ..codec import encode_latents

    arr = np.asarray(model_img)
    key = (id(backend), hashlib.sha1(arr.tobytes() + repr(arr.shape).encode()).hexdigest())
    if key not in _LATENTS:
        t0 = time.perf_counter()
        z = encode_latents(backend, model_img, seed=0)
        backend.synchronize()
        while len(_LATENTS) >= _LATENTS_KEEP:
            _LATENTS.pop(next(iter(_LATENTS)))
        _LATENTS[key] = (z, time.perf_counter() - t0)
    return _LATENTS[key]


def _unpacked_latent(data: bytes) -> np.ndarray:
    """The 8-bit latent a file unpacks to (before unquantize / denoise / VAE decode)."""
    from .. import bitstream
    from ..codec import unpack_payload

    header, payload = bitstream.unpack(data)
    return unpack_payload(header, payload)[2]


def bench_image(
    path: str | Path, setup: Setup, have: set[str], savings_needed: Sequence[str], fills: Fills | None = None
) -> dict:
    """Every missing record of one image, and the records to fill: baselines first, then each backend's variants.

    ``have``: keys already recorded (skipped unless in ``fills``); ``savings_needed``: model labels whose
    coder-savings entry is missing; ``fills``: record key -> (record, metric keys it lacks). Returns
    ``{"image", "records", "counts", "savings", "seconds", "metrics"}``: ``records`` to add or to put in place
    of the record with the same key, ``counts`` of ``new`` / ``filled`` / ``replaced`` records, ``metrics`` the
    metric time (:meth:`MetricCache.stats`).
    """
    from ..images import load_image, model_input

    t0 = time.perf_counter()
    fills = fills or {}
    path = Path(path)
    name = path.stem
    img = load_image(path)
    _, ref = model_input(img, setup.codec_policy)
    mc = MetricCache(ref, setup.metrics)
    done = _baseline_records(name, ref, setup, have, {k: v for k, v in fills.items() if v[0]["kind"] == "baseline"}, mc)
    savings = []
    for mlabel, backend in setup.backends:
        mine = {k: v for k, v in fills.items() if v[0]["kind"] == "ours" and v[0].get("model") == mlabel}
        recs, sav = _ours_records(name, img, setup, mlabel, backend, have, mlabel in savings_needed, mine, mc)
        done += recs
        if sav is not None:
            savings.append(sav)
    counts = {s: sum(st == s for st, _ in done) for s in ("new", "filled", "replaced")}
    return {
        "image": name,
        "records": [r for _, r in done],
        "counts": counts,
        "savings": savings,
        "seconds": time.perf_counter() - t0,
        "metrics": mc.stats(),
    }


def bench_task(path: str | Path, setup: Setup, variant: tuple, have: set[str], fills: Fills | None = None) -> dict:
    """One task of the benchmark: one image and one variant, so a slow variant does not hold up an image.

    ``variant``: ``("baseline", codec)`` (its budget records and, with ``setup.sweep``, its quality sweep),
    ``("ours", model label, coder, denoise)`` (that variant's records at every budget) or ``("savings", model
    label)`` (the coder-savings entry). ``setup.backends`` holds the loaded models. Returns what
    :func:`bench_image` returns, plus ``"sweeps"`` (a list) and ``"task"`` (the variant)."""
    from ..images import load_image, model_input

    t0 = time.perf_counter()
    fills = fills or {}
    path = Path(path)
    name = path.stem
    img = load_image(path)
    _, ref = model_input(img, setup.codec_policy)
    mc = MetricCache(ref, setup.metrics)
    done: list[tuple[str, dict]] = []
    savings, sweeps = [], []
    kind = variant[0]
    if kind == "baseline":
        sub = dataclasses.replace(setup, codecs=[variant[1]], backends=[])
        done = _baseline_records(name, ref, sub, have, fills, mc)
        if setup.sweep:
            from .sweep import quality_sweep

            sweeps.append(quality_sweep(name, ref, variant[1], setup.metrics, mc, setup.policy))
    elif kind in ("ours", "savings"):
        backend = dict(setup.backends)[variant[1]]
        if kind == "ours":
            sub = dataclasses.replace(setup, coders=[variant[2]])
            done, _ = _ours_records(name, img, sub, variant[1], backend, have, False, fills, mc, only_dn=variant[3])
        else:
            sub = dataclasses.replace(setup, budgets=[])
            _, sav = _ours_records(name, img, sub, variant[1], backend, have, True, {}, mc)
            savings = [sav] if sav is not None else []
    else:
        raise SDCError(f"unknown benchmark task {variant!r}")
    counts = {s: sum(st == s for st, _ in done) for s in ("new", "filled", "replaced")}
    return {
        "image": name,
        "task": list(variant),
        "records": [r for _, r in done],
        "counts": counts,
        "savings": savings,
        "sweeps": sweeps,
        "seconds": time.perf_counter() - t0,
        "metrics": mc.stats(),
    }
