"""The run: resolve the arguments, load the models once, find the missing records, compute them image by image
(in this process or in a pool of spawned worker processes), merge and save after every image, then write the
plot and the summary."""

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
from .config import OURS_RULE, PLOT_FILE, POLICY_TEXT, RECORDS_FILE, SUMMARY_FILE
from .image import Setup, _expected_keys, _variants, bench_image
from .machine import _loadavg, machine_info, torch_threads
from .plot import write_plot
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


def _worker_image(path: str, have: set[str], savings_needed: list[str]) -> dict:
    assert _WORKER_SETUP is not None
    return bench_image(path, _WORKER_SETUP, have, savings_needed)


def _resolve_coders(coders: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Coders that exist in helpers.entropy now; the others are skipped with a reason (re-run to add them)."""
    from .. import entropy

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
