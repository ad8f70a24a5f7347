"""The run: resolve the arguments, load the models once, find the missing records and the records that lack a
metric measured by this run, compute them image by image (in this process or in a pool of spawned worker
processes), merge and save after every image, then write the plot and the summary.

Metrics and resumability: every run measures ``--metrics`` (default: every metric of the registry's default
set that is available here, PSNR/SSIM/MS-SSIM always), and ``meta["metrics"]`` records each one's library,
version and settings. A record in the selection that lacks one of them (written before the perceptual
metrics existed, or where a metric was unavailable; a None value counts as missing) is **filled in**, not
recomputed: its file is made again (baselines: one encode at the recorded quality; ours: the same rate
control on latents encoded once per image, palettes memoised) and, when it is byte-identical to the recorded
file (its SHA-1, stored in every record from now on; for older records the byte count and quality or
palette size), decoded and measured on the missing metrics only; every other field is kept. Only a file that
differs (a codec or library changed since) makes the record recomputed. A metric whose library differs from
the one that measured the stored values (``meta["metrics"]``) stops the run unless ``--remeasure KEY`` asks
to measure it again on every record."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SDCError
from .config import OURS_RULE, PALETTE_CODERS, PLOT_FILE, POLICY_TEXT, RECORDS_FILE, SUMMARY_FILE
from .image import Setup, _expected_keys, _variants, bench_image
from .machine import _loadavg, machine_info, torch_threads
from .plot import write_plot
from . import config
from .records import _key_of, _round, load_records, ours_label, save_records
from .summary import write_summary


def _savings_complete(doc: dict, image: str, mlabel: str, coders: Iterable[str]) -> bool:
    for s in doc["coder_savings"]:
        if s["image"] == image and s["model"] == mlabel and all(c in s["bytes"] for c in coders):
            return True
    return False


def _select_backends(specs: Sequence[str], device) -> list[tuple[str, Any]]:
    """Load each --model once; label = the backend kind (``taef2``, ``sd``), or the model's name when two
    backends share a kind."""
    from ..models import load_backend

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


_WORKER_SETUP: Setup | None = None


def _worker_init(setup: Setup, threads: int) -> None:
    """Worker process: limit torch's threads (the workers share the cores) and load the models once."""
    import torch

    global _WORKER_SETUP
    torch.set_num_threads(threads)
    from ..models import select_device

    setup.backends = _select_backends(setup.models, select_device(setup.device))
    _WORKER_SETUP = setup


def _worker_image(path: str, have: set[str], savings_needed: list[str], fills: dict) -> dict:
    assert _WORKER_SETUP is not None
    return bench_image(path, _WORKER_SETUP, have, savings_needed, fills)


def _resolve_coders(coders: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Our variants that exist now (palette coders of helpers.entropy, the tc variants); the others are skipped
    with a reason (re-run to add them)."""
    from .. import entropy
    from .config import TC_VARIANTS

    known = getattr(entropy, "CODERS", None)
    ok, skipped = [], {}
    for c in coders:
        if c in TC_VARIANTS:
            ok.append(c)
        elif known is None:
            if c == "zlib":
                ok.append(c)  # pragma: no cover - the codec needs entropy.CODERS for every coder
            else:
                skipped[c] = "helpers.entropy.CODERS is not defined yet"
        elif c in known:
            ok.append(c)
        else:
            skipped[c] = f"not in helpers.entropy.CODERS ({', '.join(known)}) nor a tc variant ({', '.join(TC_VARIANTS)})"
    if "zlib" not in ok:
        raise SDCError("the benchmark needs the zlib coder (the reference for identical_to_zlib and savings); "
                       "keep zlib in --coders")
    return ok, skipped


def _resolve_metrics(wanted: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """(keys this run measures, in METRIC_SPECS order; ``{key: reason}`` of the benchmark's metrics that
    cannot run here). Default: every metric of :func:`helpers.metrics.default_keys` that is available;
    ``all`` adds the slow VGG16 ones on CPU. PSNR, SSIM and MS-SSIM are always measured."""
    from .. import metrics

    spec_keys = config.metric_keys()
    status = metrics.metric_status([k for k in spec_keys if k in metrics.METRICS])
    unavailable = {k: reason for k, (ok, reason) in status.items() if not ok}
    if wanted is None:
        chosen = [k for k in metrics.default_keys() if k in spec_keys and k not in unavailable]
    else:
        asked = list(dict.fromkeys(spec_keys if "all" in wanted else wanted))
        unknown = [k for k in asked if k not in spec_keys]
        if unknown:
            raise SDCError(f"unknown metric(s) {', '.join(unknown)} in --metrics; use some of: "
                           f"{', '.join(spec_keys)} (or all)")
        blocked = [k for k in asked if k in unavailable and "all" not in wanted]
        if blocked:
            raise SDCError(f"--metrics {blocked[0]}: {unavailable[blocked[0]]}")
        chosen = [k for k in asked if k not in unavailable]
    chosen = set(chosen) | set(config.CLASSIC_KEYS)
    return [k for k in spec_keys if k in chosen], unavailable


def _in_selection(rec: dict, selection: dict) -> bool:
    if rec["image"] not in selection["images"] or int(rec["budget"]) not in selection["budgets"]:
        return False
    if rec.get("kind") == "ours":
        return rec["codec"] in selection["ours"]
    return rec["codec"] in selection["codecs"] and rec["rule"] in selection["rules"]


def _check_metric_libraries(doc: dict, described: dict, remeasure: Sequence[str]) -> None:
    """Stop when a metric's stored values come from another library or version than this run's (mixing them
    would make every mean and head-to-head count meaningless), unless ``--remeasure`` names it."""
    stored = doc["meta"].get("metrics") or {}
    for key, d in described.items():
        old = (stored.get(key) or {}).get("library")
        if key in config.CLASSIC_KEYS or key in remeasure or not old or old == d["library"]:
            continue
        if any(r.get(key) is not None for r in doc["records"]):
            raise SDCError(f"the {key} values in records.json were measured with {old}, this run would use "
                           f"{d['library']}; pass --remeasure {key} to measure every record again with it, or "
                           f"--metrics without {key} to leave them")


def _fills(doc: dict, selection: dict, keys: Sequence[str], remeasure: Sequence[str]) -> dict[str, dict]:
    """image -> {record key -> (record, metric keys to measure)} for the selection's records that lack some of
    ``keys`` (absent or None) or whose ``remeasure`` metrics must be measured again. Records outside the
    selection lose their ``remeasure`` values (they would otherwise mix two libraries)."""
    out: dict[str, dict] = {}
    for r in doc["records"]:
        if not _in_selection(r, selection):
            for k in remeasure:
                if k in r:
                    r[k] = None
            continue
        if r.get("bytes") is None:
            continue
        missing = [k for k in keys if r.get(k) is None or k in remeasure]
        if missing:
            out.setdefault(r["image"], {})[_key_of(r)] = (r, missing)
    return out


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from tqdm.auto import tqdm

    from .. import baselines, metrics
    from ..images import list_images
    from ..models import select_device

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
    metric_keys, metrics_unavailable = _resolve_metrics(getattr(args, "metrics", None))
    remeasure = list(dict.fromkeys(getattr(args, "remeasure", None) or []))
    bad = [k for k in remeasure if k not in metric_keys]
    if bad:
        raise SDCError(f"--remeasure {bad[0]}: not measured by this run (measured: {', '.join(metric_keys)})")
    described = metrics.describe(metric_keys)
    device = select_device(args.device)
    t_load = time.perf_counter()
    backends = _select_backends(list(dict.fromkeys(args.model or ["taef2"])), device)
    t_load = time.perf_counter() - t_load
    setup = Setup(budgets=sorted(set(args.budgets)), codecs=codecs, rules=list(dict.fromkeys(args.rules)),
                  coders=coders, denoise=args.denoise, max_colors=args.max_colors,
                  coder_savings=args.coder_savings and len([c for c in coders if c in PALETTE_CODERS]) > 1,
                  models=list(dict.fromkeys(args.model or ["taef2"])), verify=args.verify, device=args.device,
                  metrics=metric_keys, backends=backends)
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
    _check_metric_libraries(doc, described, remeasure)
    have = {_key_of(r) for r in doc["records"]}
    lp_ok, lp_reason = metrics.lpips_status()
    command = "python -m helpers.bench" + ("" if not argv else " " + shlex.join(argv))
    meta = doc["meta"]
    meta.update({
        "policy": POLICY_TEXT, "data": str(args.data), "command": command,
        "images": [p.stem for p in paths], "budgets": setup.budgets, "codecs": codecs, "rules": setup.rules,
        "coders": coders, "ours_rule": f"{OURS_RULE}: largest palette (2..{setup.max_colors}) / finest tc step whose "
                                       f"file <= budget",
        "max_colors": setup.max_colors, "denoise": setup.denoise, "verify": setup.verify,
        "backends": {lbl: b.describe() for lbl, b in backends},
        "lpips": "available" if lp_ok else f"unavailable: {lp_reason}",
        "metrics": {**(meta.get("metrics") or {}),
                    **{k: {f: d[f] for f in ("name", "direction", "unit", "library", "settings") if f in d}
                       for k, d in described.items()}},
        "metrics_measured": metric_keys, "metrics_unavailable": metrics_unavailable,
        "unavailable_codecs": unavailable, "skipped_coders": skipped_coders,
        "baseline_settings": {"jpeg": "libjpeg optimize, 4:2:2, MozJPEG lossless pass",
                              "webp": "method=6", "avif": f"speed={baselines.AVIF_SPEED}, 4:2:0",
                              "jxl": f"effort={baselines.JXL_EFFORT}, lossy VarDCT"},
    })
    meta.setdefault("image_seconds", {})
    meta.setdefault("metric_seconds", {})
    meta["selection"] = selection
    started = time.perf_counter()
    run_info = {"started": _dt.datetime.now().isoformat(timespec="seconds"), "command": command,
                "device": str(device), "jobs": jobs, "new_records": 0, "filled_records": 0, "replaced_records": 0,
                "metrics": metric_keys, "load_start": _loadavg()}
    meta["runs"] = meta.get("runs", [])[-19:] + [run_info]  # updated in place as the run goes
    fills = _fills(doc, selection, metric_keys, remeasure)
    work = []  # (path, keys already there, models whose coder-savings entry is missing, records to fill)
    for p in paths:
        missing = set(_expected_keys(setup, p.stem)) - have
        sav = [lbl for lbl, _ in backends
               if setup.coder_savings and not _savings_complete(doc, p.stem, lbl, [c for c in coders if c in PALETTE_CODERS])]
        fill = fills.get(p.stem, {})
        if missing or sav or fill:
            work.append((str(p), {k for k in have if k.startswith(p.stem + "|")}, sav, fill))
    if work or "machine" not in meta:  # describes the machine that computed the records
        meta["machine"] = machine_info(device)
        meta["parallel"] = {"jobs": jobs, "torch_threads_per_job": threads}
        meta["backend_load_seconds"] = _round(t_load, 3)
    bar = tqdm(total=len(work), desc="bench", unit="img", disable=not args.progress, dynamic_ncols=True)

    index = {_key_of(r): i for i, r in enumerate(doc["records"])}

    def merge(res: dict) -> None:
        for rec in res["records"]:
            k = _key_of(rec)
            if k in index:  # a filled or recomputed record takes the old one's place
                doc["records"][index[k]] = rec
            else:
                index[k] = len(doc["records"])
                doc["records"].append(rec)
        for sav in res["savings"]:
            doc["coder_savings"] = [s for s in doc["coder_savings"]
                                    if not (s["image"] == sav["image"] and s["model"] == sav["model"])] + [sav]
        have.update(_key_of(r) for r in res["records"])
        name = res["image"]
        meta["image_seconds"][name] = _round(meta["image_seconds"].get(name, 0.0) + res["seconds"], 2)
        ms = meta["metric_seconds"].setdefault(name, {"seconds": 0.0, "pairs": 0, "per_metric": {}})
        ms["seconds"] = _round(ms["seconds"] + res["metrics"]["seconds"], 3)
        ms["pairs"] += res["metrics"]["pairs"]
        for k, v in res["metrics"]["per_metric"].items():
            ms["per_metric"][k] = _round(ms["per_metric"].get(k, 0.0) + v, 3)
        run_info["new_records"] += res["counts"]["new"]
        run_info["filled_records"] += res["counts"]["filled"]
        run_info["replaced_records"] += res["counts"]["replaced"]
        run_info["wall_seconds"] = _round(time.perf_counter() - started, 2)
        save_records(doc, rec_path)  # after every image: an interrupted run resumes from here
        bar.set_postfix_str(f"{name} {res['seconds']:.0f}s")
        bar.update(1)

    if jobs <= 1 or len(work) <= 1:
        for path, done, sav, fill in work:
            bar.set_postfix_str(Path(path).stem)
            merge(bench_image(path, setup, done, sav, fill))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        env_keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        saved_env = {k: os.environ.get(k) for k in env_keys}
        os.environ.update({k: str(threads) for k in env_keys})  # inherited by the spawned workers only
        try:
            with cf.ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init, initargs=(setup.portable(), threads)) as pool:
                futures = [pool.submit(_worker_image, path, done, sav, fill) for path, done, sav, fill in work]
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
            "new_records": run_info["new_records"], "filled_records": run_info["filled_records"],
            "replaced_records": run_info["replaced_records"], "wall_seconds": run_info["wall_seconds"]}


def run_in_memory(paths: Sequence[str | Path], backend, budgets: Sequence[int], coders: Sequence[str],
                  codecs: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                  label: str | None = None, progress: bool = True) -> tuple[dict, dict]:
    """The benchmark for a few images in this process, with an already loaded backend (notebooks):
    returns ``(doc, selection)`` shaped like ``records.json`` and its selection, for
    :func:`helpers.bench.write_plot`, :func:`helpers.bench.aggregate` and :func:`helpers.bench.head_to_head`.
    Nothing is written to disk; the same records as ``python -m helpers.bench`` (rule ``le``)."""
    from tqdm.auto import tqdm

    from .. import baselines

    coders, skipped = _resolve_coders(list(dict.fromkeys(coders)))
    codecs = [c for c in (baselines.available_codecs() if codecs is None else codecs)
              if baselines.codec_status().get(c) is None]
    metric_keys, _ = _resolve_metrics(metrics)
    label = label or backend.kind
    setup = Setup(budgets=sorted(set(int(b) for b in budgets)), codecs=list(codecs), rules=["le"], coders=coders,
                  denoise=False, max_colors=1024, coder_savings=False, models=[backend.model_id], verify="latents",
                  device=str(backend.device), metrics=metric_keys, backends=[(label, backend)])
    records: list[dict] = []
    for p in tqdm(list(paths), desc="RD sweep", unit="img", disable=not progress):
        records += bench_image(p, setup, set(), [])["records"]
    selection = {"images": [Path(p).stem for p in paths], "budgets": setup.budgets, "codecs": setup.codecs,
                 "rules": setup.rules, "ours": [ours_label(label, c, dn) for c, dn in _variants(setup, backend)]}
    doc = {"format": config.FORMAT_VERSION, "records": records, "coder_savings": [],
           "meta": {"selection": selection, "coders": coders, "skipped_coders": skipped}}
    return doc, selection
