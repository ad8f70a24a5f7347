"""Rate-distortion benchmark: the latent codec against JPEG / WebP / AVIF / JPEG XL over a folder of images.

``python -m helpers.bench`` (defaults: the 24 Kodak images in ../shared/data/kodak, TAEF2, budgets
2000 3000 5000 8000 12000 bytes, coders zlib + arith, every available baseline, rule ``le``).

For every image x budget:

* **ours**: :func:`helpers.codec.encode` with ``target_bytes=budget`` (the largest palette whose complete
  file, header included, fits the budget), then :func:`helpers.codec.decode` from the bytes alone. The model
  weights are loaded once for the whole folder and the latents are computed once per image (batch mode).
  One label per model / lossless coder (/ UNet denoising, SD only): ``ours:taef2/zlib``, ``ours:taef2/arith``.
  Each non-zlib file is checked to decode to exactly the pixels of the zlib file with the same palette
  (``identical_to_zlib``).
* **baselines**: each codec's quality is searched for the same budget under each rule (``le``: the largest
  file <= budget, the fair rule; ``ge``: the smallest file >= budget, the 2022 notebook's rule). Encodes are
  cached per quality (:class:`QualityCache`), so the five budgets and both rules share them.

Images go through the ``crop512`` policy (center crop to 512x512; Kodak's 768x512 / 512x768 images lose 128 columns
or rows on each side, nothing is resampled); bpp = 8 * bytes / (512 * 512), every header byte counted.

Outputs in ``--out`` (default results/kodak): ``records.json`` (one record per image, codec, budget and rule,
plus the ``coder_savings`` section: zlib vs arith bytes for the same 256-colour palette), ``rd_curves.png``
and ``summary.md`` (tables per budget, BD-rates, coder savings, seconds per stage, peak memory, machine,
command line). The run is resumable: records already in ``records.json`` are kept and skipped, and the file
is rewritten after every image. ``--report-only`` rewrites the plot and summary from ``records.json`` alone.

Speed (the full 24-image run took 12 minutes on a 2-core CPU): the latents are encoded once per image;
palettes and packed payloads are memoised across the budgets and coders of an image (``encode(..., cache=)``;
the per-stage seconds in the records are still those of a standalone encode); a file whose bytes were already
decoded (the 256-colour file is both the largest budget's and the coder-savings section's) is decoded once;
baseline encodes are shared per quality (:class:`QualityCache`); on a multi-core CPU two images run in
parallel worker processes with the torch threads split between them (``--jobs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BudgetError, SDCError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_OUT = Path("results") / "kodak"
DEFAULT_BUDGETS = (2000, 3000, 5000, 8000, 12000)
DEFAULT_CODERS = ("zlib", "arith")
DEFAULT_RULES = ("le",)
HIGHLIGHT_BUDGET = 5000
POLICY = "crop512"
POLICY_TEXT = ("crop512: center crop to a 512x512 square (Kodak 768x512 / 512x768 -> the central 512x512, "
               "no resampling); bpp = 8 * bytes / (512 * 512), headers counted")
SAVINGS_COLORS = 256
OURS_RULE = "le"  # our rate control is a hard cap: the largest palette whose file is <= the budget
STAGES = ("vae_encode", "quantize8", "palette", "pack", "unpack", "denoise", "vae_decode")
METRICS = ("psnr", "ssim", "ms_ssim", "lpips")
RECORDS_FILE = "records.json"
PLOT_FILE = "rd_curves.png"
SUMMARY_FILE = "summary.md"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Bjontegaard delta rate
# ----------------------------------------------------------------------------------------------

def _curve(rates: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Clean an RD curve: finite points with rate > 0, sorted by metric, duplicate metric values merged
    (their log-rates averaged). Returns (metric, log-rate) or None when fewer than 2 distinct points."""
    pts: dict[float, list[float]] = {}
    for r, v in zip(rates, values):
        if r is None or v is None:
            continue
        r, v = float(r), float(v)
        if not (math.isfinite(r) and math.isfinite(v)) or r <= 0:
            continue
        pts.setdefault(v, []).append(math.log(r))
    if len(pts) < 2:
        return None
    m = np.array(sorted(pts))
    return m, np.array([np.mean(pts[v]) for v in m])


def bd_overlap(ref_values: Sequence[float], test_values: Sequence[float]) -> tuple[float, float] | None:
    """The metric interval both curves cover, or None when they do not overlap."""
    a = [float(v) for v in ref_values if v is not None and math.isfinite(float(v))]
    b = [float(v) for v in test_values if v is not None and math.isfinite(float(v))]
    if not a or not b:
        return None
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    return (lo, hi) if hi > lo else None


def bd_rate(ref_rates: Sequence[float], ref_values: Sequence[float],
            test_rates: Sequence[float], test_values: Sequence[float]) -> float | None:
    """Bjontegaard delta rate of ``test`` against ``ref``, in percent (negative = test needs fewer bits).

    Each curve's log-rate is fitted as a polynomial of the quality metric (cubic, as Bjontegaard's VCEG-M33;
    degree ``n - 1`` when a curve has fewer than 4 distinct points), both fits are integrated over the
    metric interval the two curves share, and the mean log-rate difference ``d`` is reported as
    ``(exp(d) - 1) * 100``. Returns None when the metric intervals do not overlap ("no overlap") or a
    curve has fewer than 2 distinct points. The metric must increase with quality (PSNR, SSIM, MS-SSIM).
    """
    c_ref, c_test = _curve(ref_rates, ref_values), _curve(test_rates, test_values)
    if c_ref is None or c_test is None:
        return None
    inter = bd_overlap(c_ref[0], c_test[0])
    if inter is None:
        return None
    lo, hi = inter
    integrals = []
    for m, lr in (c_ref, c_test):
        poly = np.polyfit(m, lr, min(3, len(m) - 1))
        prim = np.polyint(poly)
        integrals.append(np.polyval(prim, hi) - np.polyval(prim, lo))
    diff = (integrals[1] - integrals[0]) / (hi - lo)
    return float((math.exp(diff) - 1.0) * 100.0)


# ----------------------------------------------------------------------------------------------
# peak memory
# ----------------------------------------------------------------------------------------------

def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _current_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil missing: /proc, else 0
        kb = _proc_status_kb("VmRSS")
        return kb * 1024 if kb is not None else 0


def _lifetime_peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _proc_status_kb("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block of work.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at entry (peak stats reset at entry).
    CPU: the process's peak resident set (Linux: VmHWM, reset at entry through /proc/self/clear_refs;
    elsewhere ``ru_maxrss``, a lifetime peak, which can only over-report) minus the RSS at entry.
    ``delta_mb`` is what the block added on top of what the process already held; ``peak_mb`` the absolute.
    """

    def __init__(self, device=None):
        self.device = device
        self.delta_mb = 0.0
        self.peak_mb = 0.0
        self.kind = ""

    @property
    def _cuda(self) -> bool:
        return self.device is not None and getattr(self.device, "type", str(self.device)) == "cuda"

    def __enter__(self):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda max_memory_allocated - allocated at start"
        else:
            self._base = _current_rss_bytes()
            self._hwm = _reset_peak_rss()
            self.kind = ("cpu peak RSS (VmHWM, reset per measurement) - RSS at start" if self._hwm
                         else "cpu lifetime peak RSS (ru_maxrss) - RSS at start (upper bound)")
        return self

    def __exit__(self, *exc):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            kb = _proc_status_kb("VmHWM") if self._hwm else None
            peak = kb * 1024 if kb is not None else _lifetime_peak_rss_bytes()
        self.peak_mb = peak / 2 ** 20
        self.delta_mb = max(0, peak - self._base) / 2 ** 20
        return False


# ----------------------------------------------------------------------------------------------
# baselines: one encode per quality, shared by every budget and rule of an image
# ----------------------------------------------------------------------------------------------

class QualityCache:
    """Encodes of one image with one baseline codec, cached by quality.

    :func:`helpers.baselines.match_budget` runs as usual (same search, same choice) with this object's
    ``encodes`` dict, so the budgets and rules of one image share their encodes. The decoded image and
    metrics are cached per quality too.
    """

    def __init__(self, img, codec: str):
        from . import baselines

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
        from . import baselines

        res = baselines.match_budget(self.img, self.codec, int(budget), rule=rule, encodes=self.data,
                                     seconds=self.seconds)
        self._images.setdefault(res.quality, res.image)
        return int(res.quality)

    def metrics(self, quality: int, ref) -> dict:
        from . import baselines, metrics

        if quality not in self._metrics:
            image = self._images.get(quality) or baselines.decode_bytes(self.data[quality])
            self._metrics[quality] = metrics.all_metrics(ref, image, nbytes=len(self.data[quality]))
        return self._metrics[quality]


# ----------------------------------------------------------------------------------------------
# ours: palettes (and packed payloads) memoised across the budgets and coders of one image
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------

def record_key(image: str, codec: str, budget: int, rule: str) -> str:
    return f"{image}|{codec}|{int(budget)}|{rule}"


def _key_of(rec: dict) -> str:
    return record_key(rec["image"], rec["codec"], rec["budget"], rec["rule"])


def ours_label(model_label: str, coder: str, denoise: bool = False) -> str:
    return f"ours:{model_label}/{coder}" + ("+denoise" if denoise else "")


def _round(v, nd=6):
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return round(v, nd)


def _metric_fields(m: dict) -> dict:
    return {"bytes": int(m["bytes"]), "bpp": _round(m["bpp"], 6), "psnr": _round(m["psnr"], 4),
            "ssim": _round(m["ssim"], 6), "ms_ssim": _round(m.get("ms_ssim"), 6), "lpips": _round(m.get("lpips"), 6)}


def load_records(path: Path) -> dict:
    """The results document at ``path`` (empty if missing); an unreadable file is an error, never overwritten."""
    if not path.is_file():
        return {"format": FORMAT_VERSION, "meta": {}, "records": [], "coder_savings": []}
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise SDCError(f"{path} is not valid JSON ({exc}); move it away or pass another --out") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise SDCError(f"{path} is not a benchmark results file (no 'records' list); pass another --out")
    doc.setdefault("meta", {})
    doc.setdefault("coder_savings", [])
    return doc


def save_records(doc: dict, path: Path) -> None:
    """Write atomically (temp file + rename), so an interrupted run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# machine description
# ----------------------------------------------------------------------------------------------

def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def machine_info(device) -> dict:
    import PIL
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M)
        if m:
            cpu = m.group(1).strip()
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2 ** 30:.1f} GiB"
    except Exception:  # noqa: BLE001
        ram = "unknown"
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram": ram,
            "torch": torch.__version__, "pillow": PIL.__version__, "device": str(device)}
    if getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------

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


def _savings_complete(doc: dict, image: str, mlabel: str, coders: Iterable[str]) -> bool:
    for s in doc["coder_savings"]:
        if s["image"] == image and s["model"] == mlabel and all(c in s["bytes"] for c in coders):
            return True
    return False


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
                            **{m: None for m in METRICS}, "unreachable": str(exc), "smallest_bytes": smallest})
                continue
            m = cache.metrics(q, ref)
            out.append({**base, **_metric_fields(m), "quality": int(q), "setting": f"q={q}",
                        "encode_seconds": _round(cache.seconds[q], 4), "search_encodes": len(cache.data)})
    return out


def _ours_records(name: str, img, setup: Setup, mlabel: str, backend, have: set[str],
                  need_savings: bool) -> tuple[list[dict], dict | None]:
    from . import bitstream, metrics
    from .codec import CodecParams, decode, encode, encode_latents
    from .images import model_input

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
                            **{m: None for m in METRICS}, "unreachable": error})
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
    from . import bitstream
    from .codec import unpack_payload

    header, payload = bitstream.unpack(data)
    return unpack_payload(header, payload)[2]


def _select_backends(specs: Sequence[str], device) -> list[tuple[str, Any]]:
    """Load each --model once; label = the backend kind (``taef2``, ``sd``), or the model's name when two
    backends share a kind."""
    from .models import load_backend

    loaded = [(spec, load_backend(spec, device=device)) for spec in specs]
    kinds = [b.kind for _, b in loaded]
    out: list[tuple[str, Any]] = []
    for spec, b in loaded:
        if kinds.count(b.kind) == 1:
            label = b.kind
        else:
            label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(b.model_id).rstrip("/").split("/")[-1]) or b.kind
        if label in [lbl for lbl, _ in out]:
            raise SDCError(f"--model {spec} duplicates a backend already given; pass each model once")
        out.append((label, b))
    return out


def bench_image(path: str | Path, setup: Setup, have: set[str], savings_needed: Sequence[str]) -> dict:
    """Every missing record of one image: baselines first, then each backend's variants.

    ``have``: keys already recorded (skipped); ``savings_needed``: model labels whose coder-savings entry is
    missing. Returns ``{"image", "records", "savings", "seconds"}``.
    """
    from .images import load_image, model_input

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


_WORKER_SETUP: Setup | None = None


def _worker_init(setup: Setup, threads: int) -> None:
    """Worker process: limit torch's threads (the workers share the cores) and load the models once."""
    import torch

    global _WORKER_SETUP
    torch.set_num_threads(threads)
    from .models import select_device

    setup.backends = _select_backends(setup.models, select_device(setup.device))
    _WORKER_SETUP = setup


def _worker_image(path: str, have: set[str], savings_needed: list[str]) -> dict:
    assert _WORKER_SETUP is not None
    return bench_image(path, _WORKER_SETUP, have, savings_needed)


def _resolve_coders(coders: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Coders that exist in helpers.entropy now; the others are skipped with a reason (re-run to add them)."""
    from . import entropy

    known = getattr(entropy, "CODERS", None)
    ok, skipped = [], {}
    for c in coders:
        if known is None:
            if c == "zlib":
                ok.append(c)  # pragma: no cover - the codec needs entropy.CODERS for every coder
            else:
                skipped[c] = "helpers.entropy.CODERS is not defined yet"
        elif c in known:
            ok.append(c)
        else:
            skipped[c] = f"not in helpers.entropy.CODERS ({', '.join(known)})"
    if "zlib" not in ok:
        raise SDCError("the benchmark needs the zlib coder (the reference for identical_to_zlib and savings); "
                       "keep zlib in --coders")
    return ok, skipped


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m helpers.bench",
        description="Rate-distortion benchmark of the latent codec against JPEG/WebP/AVIF/JPEG XL (resumable).")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="image folder (default ../shared/data/kodak)")
    ap.add_argument("--images", nargs="+", default=None, help="only these images (stems or file names)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (after --images)")
    ap.add_argument("--budgets", nargs="+", type=int, default=list(DEFAULT_BUDGETS),
                    help="byte budgets (default 2000 3000 5000 8000 12000)")
    ap.add_argument("--codecs", nargs="+", default=None, help="baselines (default: every available one)")
    ap.add_argument("--model", action="append", default=None,
                    help="backend(s): taef2 (default), auto (SD v1.4 if available else TAEF2), an SD hub id or "
                         "diffusers folder, a TAEF2 folder; repeat for several backends")
    ap.add_argument("--coders", nargs="+", default=list(DEFAULT_CODERS), help="lossless coders (default zlib arith)")
    ap.add_argument("--denoise", action="store_true",
                    help="also run UNet-denoised variants (only for backends with a UNet, i.e. SD)")
    ap.add_argument("--max-colors", type=int, default=1024,
                    help="largest palette the budget search may use (1024; libimagequant stops at 256)")
    ap.add_argument("--no-coder-savings", dest="coder_savings", action="store_false",
                    help="skip the zlib-vs-arith section at the default 256 colours")
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default results/kodak)")
    ap.add_argument("--rules", nargs="+", default=list(DEFAULT_RULES), choices=["le", "ge"],
                    help="baseline budget rules: le = largest file <= budget (fair, default); "
                         "ge = smallest file >= budget (the 2022 notebook)")
    ap.add_argument("--verify", default="pixels", choices=["pixels", "latents"],
                    help="identical_to_zlib in the budget runs: compare decoded pixels (default, one extra VAE "
                         "decode per file) or the unpacked 8-bit latents (the decoder's input)")
    ap.add_argument("--jobs", type=int, default=0,
                    help="images processed in parallel by worker processes, torch threads split between them "
                         "(0 = auto: 2 on a multi-core CPU with TAEF2, else 1)")
    ap.add_argument("--report-only", action="store_true",
                    help="only rewrite rd_curves.png and summary.md from the records.json in --out (no models)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return ap


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from tqdm.auto import tqdm

    from . import baselines, metrics
    from .images import list_images
    from .models import select_device

    if any(b <= 0 for b in args.budgets):
        raise SDCError(f"budgets must be positive byte counts, got {args.budgets}")
    if args.limit is not None and args.limit < 1:
        raise SDCError(f"--limit must be >= 1, got {args.limit}")
    if not 2 <= args.max_colors <= 65535:
        raise SDCError(f"--max-colors must be in 2..65535, got {args.max_colors}")
    paths = list_images(args.data, args.images)
    if args.limit:
        paths = paths[: args.limit]
    status = baselines.codec_status()
    if args.codecs is None:
        codecs = baselines.available_codecs()
        unavailable = {c: r for c, r in status.items() if r is not None}
    else:
        unknown = [c for c in args.codecs if c not in baselines.CODECS]
        if unknown:
            raise SDCError(f"unknown codec(s) {', '.join(unknown)}; use some of: {', '.join(baselines.CODECS)}")
        codecs = [c for c in dict.fromkeys(args.codecs) if status.get(c) is None]
        unavailable = {c: status[c] for c in args.codecs if status.get(c) is not None}
    coders, skipped_coders = _resolve_coders(list(dict.fromkeys(args.coders)))
    device = select_device(args.device)
    t_load = time.perf_counter()
    backends = _select_backends(list(dict.fromkeys(args.model or ["taef2"])), device)
    t_load = time.perf_counter() - t_load
    setup = Setup(budgets=sorted(set(args.budgets)), codecs=codecs, rules=list(dict.fromkeys(args.rules)),
                  coders=coders, denoise=args.denoise, max_colors=args.max_colors,
                  coder_savings=args.coder_savings and len(coders) > 1,
                  models=list(dict.fromkeys(args.model or ["taef2"])), verify=args.verify, device=args.device,
                  backends=backends)
    if args.denoise and not any(b.has_unet for _, b in backends):
        print("note: --denoise ignored: no backend has a UNet (TAEF2 has none)", file=sys.stderr)
    jobs = args.jobs
    if jobs == 0:  # auto: two image workers on a multi-core CPU for the small TAEF2, else one process
        jobs = 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 and \
            all(b.kind == "taef2" for _, b in backends) else 1
    threads = max(1, torch_threads() // jobs) if jobs > 1 else torch_threads()

    selection = {"images": [p.stem for p in paths], "budgets": setup.budgets, "codecs": codecs,
                 "rules": setup.rules, "ours": [ours_label(lbl, c, dn) for lbl, b in backends
                                                for c, dn in _variants(setup, b)]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / RECORDS_FILE
    doc = load_records(rec_path)
    have = {_key_of(r) for r in doc["records"]}
    lp_ok, lp_reason = metrics.lpips_status()
    command = "python -m helpers.bench" + ("" if not argv else " " + shlex.join(argv))
    meta = doc["meta"]
    meta.update({
        "policy": POLICY_TEXT, "data": str(args.data), "command": command,
        "images": [p.stem for p in paths], "budgets": setup.budgets, "codecs": codecs, "rules": setup.rules,
        "coders": coders, "ours_rule": f"{OURS_RULE}: largest palette (2..{setup.max_colors}) whose file <= budget",
        "max_colors": setup.max_colors, "denoise": setup.denoise, "verify": setup.verify,
        "backends": {lbl: b.describe() for lbl, b in backends},
        "lpips": "available" if lp_ok else f"unavailable: {lp_reason}",
        "unavailable_codecs": unavailable, "skipped_coders": skipped_coders,
        "baseline_settings": {"jpeg": "libjpeg optimize, 4:2:2, MozJPEG lossless pass",
                              "webp": "method=6", "avif": f"speed={baselines.AVIF_SPEED}, 4:2:0",
                              "jxl": f"effort={baselines.JXL_EFFORT}, lossy VarDCT"},
    })
    meta.setdefault("image_seconds", {})
    meta["selection"] = selection
    started = time.perf_counter()
    run_info = {"started": _dt.datetime.now().isoformat(timespec="seconds"), "command": command,
                "device": str(device), "jobs": jobs, "new_records": 0, "load_start": _loadavg()}
    meta["runs"] = meta.get("runs", [])[-19:] + [run_info]  # updated in place as the run goes
    work = []  # (path, keys already there, models whose coder-savings entry is missing)
    for p in paths:
        missing = set(_expected_keys(setup, p.stem)) - have
        sav = [lbl for lbl, _ in backends
               if setup.coder_savings and not _savings_complete(doc, p.stem, lbl, coders)]
        if missing or sav:
            work.append((str(p), {k for k in have if k.startswith(p.stem + "|")}, sav))
    if work or "machine" not in meta:  # describes the machine that computed the records
        meta["machine"] = machine_info(device)
        meta["parallel"] = {"jobs": jobs, "torch_threads_per_job": threads}
        meta["backend_load_seconds"] = _round(t_load, 3)
    bar = tqdm(total=len(work), desc="bench", unit="img", disable=not args.progress, dynamic_ncols=True)

    def merge(res: dict) -> None:
        doc["records"].extend(res["records"])
        for sav in res["savings"]:
            doc["coder_savings"] = [s for s in doc["coder_savings"]
                                    if not (s["image"] == sav["image"] and s["model"] == sav["model"])] + [sav]
        have.update(_key_of(r) for r in res["records"])
        name = res["image"]
        meta["image_seconds"][name] = _round(meta["image_seconds"].get(name, 0.0) + res["seconds"], 2)
        run_info["new_records"] += len(res["records"])
        run_info["wall_seconds"] = _round(time.perf_counter() - started, 2)
        save_records(doc, rec_path)  # after every image: an interrupted run resumes from here
        bar.set_postfix_str(f"{name} {res['seconds']:.0f}s")
        bar.update(1)

    if jobs <= 1 or len(work) <= 1:
        for path, done, sav in work:
            bar.set_postfix_str(Path(path).stem)
            merge(bench_image(path, setup, done, sav))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        env_keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        saved_env = {k: os.environ.get(k) for k in env_keys}
        os.environ.update({k: str(threads) for k in env_keys})  # inherited by the spawned workers only
        try:
            with cf.ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init, initargs=(setup.portable(), threads)) as pool:
                futures = [pool.submit(_worker_image, path, done, sav) for path, done, sav in work]
                try:
                    for fut in cf.as_completed(futures):
                        merge(fut.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    bar.close()
    run_info["wall_seconds"] = _round(time.perf_counter() - started, 2)
    run_info["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    run_info["load_end"] = _loadavg()
    if work:
        meta["wall_seconds_total"] = _round(meta.get("wall_seconds_total", 0.0) + run_info["wall_seconds"], 2)
    doc["records"].sort(key=lambda r: (r["image"], not r["codec"].startswith("ours"), r["codec"], r["rule"],
                                       int(r["budget"])))
    doc["coder_savings"].sort(key=lambda s: (s["image"], s["model"]))
    save_records(doc, rec_path)
    write_plot(doc, out / PLOT_FILE, selection)
    write_summary(doc, out / SUMMARY_FILE, selection)
    return {"records": rec_path, "plot": out / PLOT_FILE, "summary": out / SUMMARY_FILE,
            "new_records": run_info["new_records"], "wall_seconds": run_info["wall_seconds"]}


# ----------------------------------------------------------------------------------------------
# aggregation, plot, summary
# ----------------------------------------------------------------------------------------------

def _mean(xs):
    xs = [float(x) for x in xs if x is not None and not isinstance(x, str)]
    return float(np.mean(xs)) if xs else None


def aggregate(records: Iterable[dict], images: Sequence[str]) -> dict[tuple[str, str, int], dict]:
    """(codec, rule, budget) -> mean bytes / bpp / metrics over the images where the budget was reachable;
    ``n`` counts them and ``complete`` says whether every image is in."""
    wanted = set(images)
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in records:
        if r["image"] in wanted:
            groups.setdefault((r["codec"], r["rule"], int(r["budget"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("bytes") is not None]
        row = {"n": len(ok), "of": len(wanted), "complete": len(ok) == len(wanted),
               "bytes": _mean(r["bytes"] for r in ok), "bpp": _mean(r["bpp"] for r in ok)}
        for m in METRICS:
            row[m] = _mean(r.get(m) for r in ok)
        row["unreachable"] = len(rs) - len(ok)
        row["smallest_bytes"] = max((r.get("smallest_bytes") or 0 for r in rs if r.get("bytes") is None), default=None)
        out[key] = row
    return out


def _series(agg: dict, codec: str, rule: str, budgets: Sequence[int], metric: str) -> list[tuple[float, float]]:
    pts = []
    for b in budgets:
        row = agg.get((codec, rule, b))
        if row and row["complete"] and row[metric] is not None:
            pts.append((row["bpp"], row[metric]))
    return pts


def _rows_for(selection: dict) -> list[tuple[str, str, str]]:
    """(display label, codec, rule) in table order: ours first, then baselines per rule."""
    multi = len(selection["rules"]) > 1
    rows = [(c, c, OURS_RULE) for c in selection["ours"]]
    for rule in selection["rules"]:
        rows += [(f"{c} ({rule})" if multi else c, c, rule) for c in selection["codecs"]]
    return rows


def write_plot(doc: dict, path: Path, selection: dict) -> Path:
    """bpp vs PSNR / MS-SSIM / SSIM (/ LPIPS if measured): means over images, one subplot per metric.
    Only budgets every image reached are plotted (a mean over a subset would not be comparable)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import rd_plot, save_figure

    agg = aggregate(doc["records"], selection["images"])
    mets = ["psnr", "ms_ssim", "ssim"]
    if any(row["lpips"] is not None for row in agg.values()):
        mets.append("lpips")
    names = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "ssim": "SSIM", "lpips": "LPIPS (lower is better)"}
    fig, axes = plt.subplots(1, len(mets), figsize=(5.2 * len(mets), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], mets):
        summary = {label: _series(agg, codec, rule, selection["budgets"], metric)
                   for label, codec, rule in _rows_for(selection)}
        rd_plot({k: v for k, v in summary.items() if v}, names[metric], ax=ax)
    n = len(selection["images"])
    fig.suptitle(f"Rate-distortion, mean over {n} image{'s' * (n != 1)} ({POLICY} 512x512), budgets "
                 f"{', '.join(str(b) for b in selection['budgets'])} bytes; baselines rule "
                 f"{'/'.join(selection['rules'])}; points only where every image reached the budget", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _f(v, nd=3, suffix=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.{nd}f}{suffix}"


def _budget_table(agg: dict, selection: dict, budget: int) -> list[str]:
    lpips = any(agg.get((c, r, budget), {}).get("lpips") is not None for _, c, r in _rows_for(selection))
    cols = ["codec", "images", "mean bytes", "bpp", "PSNR (dB)", "SSIM", "MS-SSIM"] + (["LPIPS"] if lpips else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for label, codec, rule in _rows_for(selection):
        row = agg.get((codec, rule, budget))
        if row is None:
            continue
        if row["n"] == 0:
            why = f"cannot reach {budget} B" + (f" (smallest file {row['smallest_bytes']} B)"
                                                   if row.get("smallest_bytes") else "")
            cells = [label, f"0/{row['of']}", why, "", "", "", ""] + ([""] if lpips else [])
        else:
            cells = [f"**{label}**" if codec.startswith("ours") else label,
                     f"{row['n']}/{row['of']}", _f(row["bytes"], 0), _f(row["bpp"], 4), _f(row["psnr"], 2),
                     _f(row["ssim"], 4), _f(row["ms_ssim"], 4)] + ([_f(row["lpips"], 4)] if lpips else [])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _image_curve(recs: Iterable[dict], image: str, codec: str, rule: str, budgets: Sequence[int],
                 metric: str) -> list[tuple[float, float]]:
    return [(r["bpp"], r[metric]) for r in recs if r["image"] == image and r["codec"] == codec
            and r["rule"] == rule and r["budget"] in budgets and r.get("bytes") is not None
            and r.get(metric) is not None]


def bd_table(doc: dict, selection: dict) -> list[dict]:
    """BD-rate of every ours variant against every baseline (per rule), on PSNR and MS-SSIM.

    ``metric``: on the mean curves (budgets every image reached); ``metric_per_image``: the BD-rates of
    the images whose own curves overlap (each image's reachable budgets)."""
    agg = aggregate(doc["records"], selection["images"])
    recs = [r for r in doc["records"] if r["image"] in set(selection["images"])]
    budgets = set(selection["budgets"])
    out = []
    for ours in selection["ours"]:
        for rule in selection["rules"]:
            for codec in selection["codecs"]:
                row = {"ours": ours, "baseline": codec, "rule": rule}
                for metric in ("psnr", "ms_ssim"):
                    a = _series(agg, codec, rule, selection["budgets"], metric)
                    b = _series(agg, ours, OURS_RULE, selection["budgets"], metric)
                    val = bd_rate([p[0] for p in a], [p[1] for p in a], [p[0] for p in b], [p[1] for p in b]) \
                        if len(a) >= 2 and len(b) >= 2 else None
                    row[metric] = val
                    row[f"{metric}_overlap"] = bd_overlap([p[1] for p in a], [p[1] for p in b])
                    row[f"{metric}_points"] = (len(a), len(b))
                    row[f"{metric}_ranges"] = tuple((min(p[1] for p in c), max(p[1] for p in c)) if c else (None, None)
                                                    for c in (a, b))
                    per = []
                    for image in selection["images"]:
                        ca = _image_curve(recs, image, codec, rule, budgets, metric)
                        cb = _image_curve(recs, image, ours, OURS_RULE, budgets, metric)
                        v = bd_rate([p[0] for p in ca], [p[1] for p in ca], [p[0] for p in cb], [p[1] for p in cb])
                        if v is not None:
                            per.append(v)
                    row[f"{metric}_per_image"] = per
                out.append(row)
    return out


def _bd_cell(row: dict, metric: str) -> str:
    na, nb = row[f"{metric}_points"]
    nd = 2 if metric == "psnr" else 4
    if na < 2 or nb < 2:
        return f"too few complete budgets ({row['baseline']} {na}, ours {nb})"
    if row[metric] is None:
        (alo, ahi), (blo, bhi) = row[f"{metric}_ranges"]
        return f"no overlap (ours {blo:.{nd}f}..{bhi:.{nd}f}, {row['baseline']} {alo:.{nd}f}..{ahi:.{nd}f})"
    lo, hi = row[f"{metric}_overlap"]
    return f"{row[metric]:+.1f}% (over {lo:.{nd}f}..{hi:.{nd}f})"


def _bd_image_cell(row: dict, metric: str, n_images: int) -> str:
    per = row[f"{metric}_per_image"]
    if not per:
        return f"no overlap on any image (0/{n_images})"
    return f"median {np.median(per):+.1f}% (range {min(per):+.1f}..{max(per):+.1f}%, {len(per)}/{n_images} images)"


def _stage_table(doc: dict, selection: dict) -> list[str]:
    recs = [r for r in doc["records"] if r["image"] in set(selection["images"]) and r["codec"] in selection["ours"]
            and r.get("seconds")]
    if not recs:
        return ["No timing records."]
    cols = ["variant"] + list(STAGES) + ["sum of stages", "peak mem delta (MiB)", "peak process (MiB)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for ours in selection["ours"]:
        rs = [r for r in recs if r["codec"] == ours]
        if not rs:
            continue
        cells = [ours] + [_f(_mean(r["seconds"].get(s) for r in rs), 3) for s in STAGES]
        cells += [_f(_mean(r["seconds_total"] for r in rs), 2),
                  f"{_f(_mean(r['peak_mem_mb'] for r in rs), 0)} (max {_f(max(r['peak_mem_mb'] for r in rs), 0)})",
                  _f(max(r["peak_process_mb"] for r in rs), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    per_image = []
    for ours in selection["ours"]:
        by_img: dict[str, list[dict]] = {}
        for r in recs:
            if r["codec"] == ours:
                by_img.setdefault(r["image"], []).append(r)
        if by_img:
            tot = [rs[0]["seconds"]["vae_encode"] + sum(sum(v for k, v in r["seconds"].items() if k != "vae_encode")
                                                        for r in rs) for rs in by_img.values()]
            per_image.append(f"{ours} {np.mean(tot):.1f} s")
    lines += ["", "Standalone seconds per image for one variant (one latent encode, then encode + decode at every "
              "budget): " + ", ".join(per_image) + "."]
    return lines


def write_summary(doc: dict, path: Path, selection: dict) -> Path:
    meta = doc["meta"]
    images, budgets = selection["images"], selection["budgets"]
    agg = aggregate(doc["records"], images)
    mach = meta.get("machine", {})
    runs = meta.get("runs") or [{}]
    run = next((r for r in reversed(runs) if r.get("new_records")), runs[-1])  # the last one that computed
    img_secs = [meta.get("image_seconds", {}).get(i) for i in images]
    par = meta.get("parallel", {})
    settings = "; ".join(f"{k}: {v}" for k, v in meta.get("baseline_settings", {}).items() if k in selection["codecs"])
    total = sum(s for s in img_secs if s)
    md = [f"# Rate-distortion benchmark: {len(images)} image{'s' * (len(images) != 1)} "
          f"({Path(str(meta.get('data', ''))).name or 'images'}), policy {POLICY}", ""]
    md += ["Generated by `python -m helpers.bench` (helpers/bench.py). Numbers are means over the images; "
           "every byte of every file (headers, CRC) is counted.", "",
           f"* **Command:** `{meta.get('command', '')}`",
           f"* **Images:** {', '.join(images)}",
           f"* **Policy:** {meta.get('policy', POLICY_TEXT)}",
           f"* **Ours:** {'; '.join(f'`{k}` = {v}' for k, v in meta.get('backends', {}).items())}; "
           f"rate control {meta.get('ours_rule', '')}; latents computed once per image, weights once per run",
           f"* **Baselines:** {', '.join(selection['codecs'])} ({settings}); "
           f"rule {'/'.join(selection['rules'])} (le = largest file <= budget, the fair rule; "
           "ge = smallest file >= budget, the 2022 notebook's rule)",
           f"* **LPIPS:** {meta.get('lpips', 'n/a')}",
           f"* **Machine:** {mach.get('cpu', '?')}, {mach.get('cpu_count', '?')} CPUs, "
           f"{mach.get('ram', '?')} RAM, {mach.get('platform', '?')}; "
           f"device `{mach.get('device', '?')}`" + (f" ({mach['gpu']})" if mach.get("gpu") else "")
           + f"; torch {mach.get('torch', '?')}, Pillow {mach.get('pillow', '?')}, Python {mach.get('python', '?')}",
           f"* **Wall time:** {_f((meta.get('wall_seconds_total') or 0) / 60, 1)} min in total for the "
           f"invocations that computed these records; {total / max(1, len([s for s in img_secs if s])):.1f} s of "
           f"work per image in a process with {par.get('torch_threads_per_job', '?')} torch thread(s), "
           f"{par.get('jobs', 1)} image(s) in parallel; last invocation {_f(run.get('wall_seconds'), 1)} s, "
           f"{run.get('new_records', 0)} new records, 1-min load average {run.get('load_start', '?')} at its start "
           f"and {run.get('load_end', '?')} at its end (model loading {_f(meta.get('backend_load_seconds'), 1)} s)"]
    if meta.get("skipped_coders"):
        md.append(f"* **Coders skipped:** {meta['skipped_coders']} (re-run the same command to add them)")
    if meta.get("unavailable_codecs"):
        md.append(f"* **Baselines unavailable here:** {meta['unavailable_codecs']}")
    md.append("")
    if HIGHLIGHT_BUDGET in budgets:
        md += [f"## >>> At {HIGHLIGHT_BUDGET} bytes ({8 * HIGHLIGHT_BUDGET / (512 * 512):.3f} bpp budget) <<<", ""]
        md += _budget_table(agg, selection, HIGHLIGHT_BUDGET) + [""]
        rows = _rows_for(selection)
        common = [i for i in images if all(any(r["image"] == i and r["codec"] == c and r["rule"] == rl
                                               and r["budget"] == HIGHLIGHT_BUDGET and r.get("bytes") is not None
                                               for r in doc["records"]) for _, c, rl in rows)]
        if 0 < len(common) < len(images):
            md += [f"The same budget on the {len(common)} images that every codec could fit into {HIGHLIGHT_BUDGET} "
                   f"bytes ({', '.join(common)}), so that every row averages the same images:", ""]
            md += _budget_table(aggregate(doc["records"], common), selection, HIGHLIGHT_BUDGET) + [""]
    md += ["## Every budget", "",
           "`images` = how many images the codec could fit into the budget (rule le: a codec whose smallest "
           "file is larger than the budget has no entry for that image); the means are over those images.", ""]
    for b in budgets:
        md += [f"### {b} bytes ({8 * b / (512 * 512):.4f} bpp budget)"
               + ("  (highlighted above)" if b == HIGHLIGHT_BUDGET else ""), ""]
        md += _budget_table(agg, selection, b) + [""]
    md += ["![rate-distortion curves](rd_curves.png)", "",
           "## BD-rate of ours against each baseline", "",
           "Bjontegaard delta rate (VCEG-M33): log-rate fitted as a cubic polynomial of the metric (degree "
           "n-1 below 4 points), both fits integrated over the metric interval the two curves share; negative = "
           "ours needs fewer bytes for the same quality. \"no overlap\" = the two curves share no quality "
           "interval, so no rate difference is defined (the ranges are given). *Mean curves*: mean bpp vs mean "
           "metric over all images, only budgets every image reached. *Per image*: each image's own curves "
           "(its reachable budgets), reported over the images where they overlap.", "",
           "| ours | baseline | rule | PSNR, mean curves | PSNR, per image | MS-SSIM, mean curves | "
           "MS-SSIM, per image |", "|---|---|---|---|---|---|---|"]
    for row in bd_table(doc, selection):
        md.append(f"| {row['ours']} | {row['baseline']} | {row['rule']} | {_bd_cell(row, 'psnr')} | "
                  f"{_bd_image_cell(row, 'psnr', len(images))} | {_bd_cell(row, 'ms_ssim')} | "
                  f"{_bd_image_cell(row, 'ms_ssim', len(images))} |")
    md.append("")
    sav = [s for s in doc.get("coder_savings", []) if s["image"] in set(images)]
    if sav:
        coders = sorted({c for s in sav for c in s["saved_pct"]})
        ncol = sorted({s.get("colors_requested") for s in sav})
        md += [f"## Lossless coder: bytes saved against zlib at the same {'/'.join(map(str, ncol))}-colour "
               "palette (no budget)", "",
               "Each image's latent is quantized once (k-means palette + dithering, no budget) and the same "
               "palette + index map is packed by each coder; the files decode to identical pixels "
               "(`identical_to_zlib`). Whole files, headers included.", "",
               "| model | coder | images | mean zlib bytes | mean bytes | mean % saved | min / max % saved | "
               "identical pixels |", "|---|---|---|---|---|---|---|---|"]
        for model in sorted({s["model"] for s in sav}):
            ss = [s for s in sav if s["model"] == model]
            for c in coders:
                sc = [s for s in ss if c in s["saved_pct"]]
                if not sc:
                    continue
                pct = [s["saved_pct"][c] for s in sc]
                md.append(f"| {model} | {c} | {len(sc)} | {_f(_mean(s['bytes']['zlib'] for s in sc), 0)} | "
                          f"{_f(_mean(s['bytes'][c] for s in sc), 0)} | {_mean(pct):.2f} | "
                          f"{min(pct):.2f} / {max(pct):.2f} | "
                          f"{sum(bool(s['identical_to_zlib'].get(c)) for s in sc)}/{len(sc)} |")
        ident = [r for r in doc["records"] if r["image"] in set(images) and r["codec"] in selection["ours"]
                 and r.get("coder") not in (None, "zlib") and r.get("bytes") is not None]
        if ident:
            how = sorted({r.get("identical_check", "pixels") for r in ident})
            md += ["", f"Within the budget runs, {sum(bool(r.get('identical_to_zlib')) for r in ident)}/{len(ident)} "
                   "non-zlib files decode exactly like the zlib file with the same palette (checked on: "
                   f"{', '.join('decoded pixels' if h == 'pixels' else 'unpacked 8-bit latents' for h in how)})."]
        md.append("")
    where = (f" ({mach['gpu']})" if mach.get("gpu") else
             f" ({mach.get('cpu', '?')}, {par.get('torch_threads_per_job', '?')} torch thread(s) per process, "
             f"{par.get('jobs', 1)} image(s) processed in parallel)")
    mem_kind = next((r["mem_kind"] for r in reversed(doc["records"]) if r.get("mem_kind")), "n/a")
    md += ["## Seconds per stage and peak memory (ours, per image and budget)", "",
           f"Device: `{mach.get('device', '?')}`" + where + ". Mean seconds of one encode + decode at one budget: "
           "`vae_encode` runs once per image (its latents are reused by every budget and coder); `palette` and "
           "`pack` are the seconds a standalone encode spends over its whole palette-size search (the "
           "benchmark itself memoises them across budgets); `denoise` is 0 without a UNet. Peak memory: "
           + mem_kind + ", over the latent encode "
           "and one encode + decode.", ""]
    md += _stage_table(doc, selection) + [""]
    base = [r for r in doc["records"] if r["image"] in set(images) and r.get("kind") == "baseline"
            and r.get("encode_seconds") is not None]
    if base:
        md += ["Baseline encode seconds of the chosen file (mean): " + ", ".join(
            f"{c} {_mean(r['encode_seconds'] for r in base if r['codec'] == c):.3f}"
            for c in selection["codecs"] if any(r["codec"] == c for r in base)) + ".", ""]
    md += ["## Reproduce", "", "```", meta.get("command", "python -m helpers.bench"), "```", "",
           "The run is resumable: records already in records.json are skipped (delete the folder to start over).", ""]
    path.write_text("\n".join(md))
    return path


def selection_of(doc: dict) -> dict:
    """What a results file covers: the selection its last run recorded (older files: rebuilt from meta)."""
    meta = doc["meta"]
    if meta.get("selection"):
        return meta["selection"]
    images = meta.get("images") or sorted({r["image"] for r in doc["records"]})
    return {"images": images, "budgets": meta.get("budgets") or sorted({r["budget"] for r in doc["records"]}),
            "codecs": meta.get("codecs") or sorted({r["codec"] for r in doc["records"] if r["kind"] == "baseline"}),
            "rules": meta.get("rules") or sorted({r["rule"] for r in doc["records"] if r["kind"] == "baseline"}),
            "ours": sorted({r["codec"] for r in doc["records"] if r["kind"] == "ours"}, key=_ours_order(meta))}


def _ours_order(meta: dict):
    """Sort key for ours labels: model, then the coder's position in --coders, then the label."""
    coders = list(meta.get("coders") or [])

    def key(label: str):
        model, _, coder = label.partition("/")
        coder = coder.split("+")[0]
        return (model, coders.index(coder) if coder in coders else len(coders), label)

    return key


def report_only(out: Path) -> dict:
    rec_path = out / RECORDS_FILE
    if not rec_path.is_file():
        raise SDCError(f"no {RECORDS_FILE} in {out}: run the benchmark first (without --report-only)")
    doc = load_records(rec_path)
    selection = selection_of(doc)
    write_plot(doc, out / PLOT_FILE, selection)
    write_summary(doc, out / SUMMARY_FILE, selection)
    return {"records": rec_path, "plot": out / PLOT_FILE, "summary": out / SUMMARY_FILE, "new_records": 0,
            "wall_seconds": 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from .cli import guarded

    res = guarded(lambda: report_only(Path(args.out)) if args.report_only else run(args, argv),
                  interrupted="interrupted (records written so far are kept; re-run to resume)")
    if isinstance(res, int):  # an error line was printed
        return res
    if args.report_only:
        print(f"wrote {res['plot']}, {res['summary']} from {res['records']}")
    else:
        print(f"{res['new_records']} new records in {res['wall_seconds']:.1f}s; wrote {res['records']}, "
              f"{res['plot']}, {res['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
