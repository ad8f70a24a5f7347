"""The run: resolve the arguments, find the missing records and the records that lack a metric measured by this
run, cut the work into tasks, one per (image, variant) (a baseline codec with its quality sweep, one of our
variants, the coder-savings entry), run them where ``--scheduler`` says (:mod:`~helpers.bench.scheduler`: in this
process or on Dask, the models loaded once per worker), merge each result as it arrives (appended to the journal
``records.journal.jsonl`` at once, merged into ``records.json`` every ``SAVE_SECONDS`` and at the end: a run
interrupted or killed loses no finished task, the next run takes the journal over), record the tasks that failed
(``doc["failures"]``, listed in the summary, retried by the next run), then write the plot and the summary.

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
import json
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import SDCError
from . import config
from .config import (
    JOURNAL_FILE,
    OURS_RULE,
    PALETTE_CODERS,
    PLOT_FILE,
    POLICIES,
    POLICY,
    RECORDS_FILE,
    SAVE_SECONDS,
    SUMMARY_FILE,
)
from .image import Setup, _variants, bench_image
from .machine import _loadavg, machine_info, torch_threads
from .plot import write_plot
from .records import _key_of, _round, load_records, ours_label, record_key, save_records
from .summary import write_summary


def _savings_complete(doc: dict, image: str, mlabel: str, coders: Iterable[str]) -> bool:
    for s in doc["coder_savings"]:
        if s["image"] == image and s["model"] == mlabel and all(c in s["bytes"] for c in coders):
            return True
    return False


def _resolve_coders(coders: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Our variants that exist now (the palette method's coders, the tc variants); the others are skipped
    with a reason (re-run to add them)."""
    from ..methods.palette import entropy
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
                skipped[c] = "the palette method's entropy.CODERS is not defined yet"
        elif c in known:
            ok.append(c)
        else:
            skipped[c] = f"not a palette coder ({', '.join(known)}) nor a tc variant ({', '.join(TC_VARIANTS)})"
    if "zlib" not in ok:
        raise SDCError(
            "the benchmark needs the zlib coder (the reference for identical_to_zlib and savings); "
            "keep zlib in --coders"
        )
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
            raise SDCError(
                f"unknown metric(s) {', '.join(unknown)} in --metrics; use some of: {', '.join(spec_keys)} (or all)"
            )
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
            raise SDCError(
                f"the {key} values in records.json were measured with {old}, this run would use "
                f"{d['library']}; pass --remeasure {key} to measure every record again with it, or "
                f"--metrics without {key} to leave them"
            )


def _coded_differently(r: dict) -> bool:
    """Would this record of ours be coded differently today? Refined with another schedule than its effort's today
    (``refine``: :func:`helpers.bench.config.refine_label`), or, on the stock TAEF2, coded with another encoder
    than its method prefers today (records from before encoder variants carry no ``encoder``: the stock one) or with
    other weights under the same name (``encoder_weights``: the variant file's digest, absent in records from before
    it), or written by an earlier revision of the method's payload (``payload``: :func:`helpers.bench.config.payload_label`,
    absent in records from before it). Such a record is re-made (``replaced``)."""
    from ..backends.taef2_spec import TAEF2_LATENT_CHANNELS, TAEF2_MODEL_ID, encoder_digest, encoder_names
    from ..codec import preferred_encoder

    v = config.variant(r.get("coder", "")) if r.get("kind") == "ours" else None
    if v is None:
        return False
    method, _, effort = v
    if r.get("refine") != config.refine_label(method, effort):
        return True
    if r.get("payload") != config.payload_label(method):
        return True
    if r.get("model_id") != TAEF2_MODEL_ID:
        return False
    name = r.get("encoder", "stock")
    if name != preferred_encoder(method, TAEF2_LATENT_CHANNELS, encoder_names()):
        return True
    return r.get("encoder_weights") != encoder_digest(name)


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
        if _coded_differently(r):  # another encoder, its weights or refine schedule than today's: made again
            out.setdefault(r["image"], {})[_key_of(r)] = (r, list(keys))
            continue
        missing = [k for k in keys if r.get(k) is None or k in remeasure]
        if missing:
            out.setdefault(r["image"], {})[_key_of(r)] = (r, missing)
    return out


def _check_policy(paths: Sequence[Path], policy: str) -> None:
    """crop512 never resamples: every image must have both sides >= 512 (else one error naming them)."""
    if policy != "crop512":
        return
    from PIL import Image

    small = []
    for p in paths:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except OSError:
            continue  # unreadable: its tasks fail with the loader's own error
        if min(w, h) < 512:
            small.append(f"{p.name} {w}x{h}")
    if small:
        raise SDCError(
            f"{len(small)} image(s) smaller than 512x512 ({', '.join(small[:3])}"
            f"{', ...' if len(small) > 3 else ''}): --policy crop512 never resamples; use --policy full "
            "or leave them out with --images"
        )


def _has_sweep(doc: dict, image: str, codec: str, policy: str, keys: Sequence[str]) -> bool:
    want = list(config.SWEEP_QUALITIES.get(codec, ()))
    for sw in doc.get("sweeps") or []:
        if sw["image"] == image and sw["codec"] == codec and sw.get("policy", POLICY) == policy:
            pts = sw["points"]
            return [p["quality"] for p in pts] == want and all(k in p for p in pts for k in keys)
    return False


def _tasks(doc: dict, paths: Sequence[Path], setup: Setup, have: set[str], fills: dict) -> list[tuple]:
    """(image path, variant, keys already recorded for the image, records of the variant to fill) per task that has
    work: a variant whose records are missing or need filling, a baseline whose sweep is missing, a coder-savings
    entry that is missing."""
    palette = [c for c in setup.coders if c in PALETTE_CODERS]
    out = []
    for p in paths:
        name = p.stem
        done = {k for k in have if k.startswith(name + "|")}
        fill = fills.get(name, {})
        for codec in setup.codecs:
            keys = {record_key(name, codec, b, r) for r in setup.rules for b in setup.budgets}
            mine = {k: v for k, v in fill.items() if v[0]["kind"] == "baseline" and v[0]["codec"] == codec}
            sweep = setup.sweep and not _has_sweep(doc, name, codec, setup.policy, setup.metrics)
            if keys - done or mine or sweep:
                out.append((str(p), ("baseline", codec), done, mine))
        for mlabel, backend in setup.backends:
            for coder, dn in _variants(setup, backend):
                label = ours_label(mlabel, coder, dn)
                keys = {record_key(name, label, b, OURS_RULE) for b in setup.budgets}
                mine = {k: v for k, v in fill.items() if v[0]["kind"] == "ours" and v[0]["codec"] == label}
                if keys - done or mine:
                    out.append((str(p), ("ours", mlabel, coder, dn), done, mine))
            if setup.coder_savings and not _savings_complete(doc, name, mlabel, palette):
                out.append((str(p), ("savings", mlabel), done, {}))
    return out


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from tqdm.auto import tqdm

    from .. import baselines, metrics
    from ..backends.load import load_labelled
    from ..backends.torch_base import select_device
    from ..images import list_images
    from .scheduler import Runner, Scheduler, local_size, parse_scheduler, task_label

    if any(b <= 0 for b in args.budgets):
        raise SDCError(f"budgets must be positive byte counts, got {args.budgets}")
    if args.limit is not None and args.limit < 1:
        raise SDCError(f"--limit must be >= 1, got {args.limit}")
    if not 2 <= args.max_colors <= 65535:
        raise SDCError(f"--max-colors must be in 2..65535, got {args.max_colors}")
    policy = getattr(args, "policy", POLICY)
    sched = parse_scheduler(getattr(args, "scheduler", None), getattr(args, "jobs", None))
    paths = list_images(args.data, args.images)
    if args.limit:
        paths = paths[: args.limit]
    _check_policy(paths, policy)
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
    backends = load_labelled(list(dict.fromkeys(args.model or ["taef2"])), device)
    t_load = time.perf_counter() - t_load
    setup = Setup(
        budgets=sorted(set(args.budgets)),
        codecs=codecs,
        rules=list(dict.fromkeys(args.rules)),
        coders=coders,
        denoise=args.denoise,
        max_colors=args.max_colors,
        coder_savings=args.coder_savings and len([c for c in coders if c in PALETTE_CODERS]) > 1,
        models=list(dict.fromkeys(args.model or ["taef2"])),
        verify=args.verify,
        device=args.device,
        metrics=metric_keys,
        backends=backends,
        policy=policy,
        sweep=getattr(args, "sweep", True),
    )
    if args.denoise and not any(b.has_unet for _, b in backends):
        print("note: --denoise ignored: no backend has a UNet (TAEF2 has none)", file=sys.stderr)
    if sched.kind == "inline":
        jobs, threads = 1, torch_threads()
    elif sched.kind == "local":
        auto_n, _ = local_size(device.type, [b.kind for _, b in backends], torch_threads())
        jobs = sched.workers or auto_n
        threads = max(1, torch_threads() // jobs)
    else:
        jobs, threads = 0, None  # known once connected

    selection = {
        "images": [p.stem for p in paths],
        "budgets": setup.budgets,
        "codecs": codecs,
        "rules": setup.rules,
        "ours": [ours_label(lbl, c, dn) for lbl, b in backends for c, dn in _variants(setup, b)],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / RECORDS_FILE
    journal = out / JOURNAL_FILE
    doc = load_records(rec_path)
    old_policy = doc["meta"].get("policy")
    if doc["records"] and old_policy and old_policy != POLICIES[policy]:
        raise SDCError(
            f"the records in {rec_path} were made with another policy ({old_policy.split(':')[0]}); "
            f"this run's --policy {policy} would mix them: pass another --out"
        )
    failures: list[dict] = list(doc.pop("failures", None) or [])
    index = {_key_of(r): i for i, r in enumerate(doc["records"])}
    meta = doc["meta"]
    meta.setdefault("image_seconds", {})
    meta.setdefault("metric_seconds", {})

    def save() -> None:
        if failures:
            doc["failures"] = failures
        else:
            doc.pop("failures", None)
        save_records(doc, rec_path)
        doc.pop("failures", None)

    def merge(res: dict, run_info: dict | None) -> None:
        for rec in res["records"]:
            k = _key_of(rec)
            if k in index:  # a filled or recomputed record takes the old one's place
                doc["records"][index[k]] = rec
            else:
                index[k] = len(doc["records"])
                doc["records"].append(rec)
        for sav in res["savings"]:
            doc["coder_savings"] = [
                s for s in doc["coder_savings"] if not (s["image"] == sav["image"] and s["model"] == sav["model"])
            ] + [sav]
        for sw in res.get("sweeps") or []:
            doc["sweeps"] = [
                x
                for x in doc.get("sweeps") or []
                if not (x["image"] == sw["image"] and x["codec"] == sw["codec"] and x.get("policy") == sw["policy"])
            ] + [sw]
        name, label = res["image"], task_label(res["task"]) if res.get("task") else None
        failures[:] = [f for f in failures if not (f["image"] == name and f["task"] == label)]
        meta["image_seconds"][name] = _round(meta["image_seconds"].get(name, 0.0) + res["seconds"], 2)
        if label:
            ts = meta.setdefault("task_seconds", {}).setdefault(name, {})
            ts[label] = _round(ts.get(label, 0.0) + res["seconds"], 2)
        ms = meta["metric_seconds"].setdefault(name, {"seconds": 0.0, "pairs": 0, "per_metric": {}})
        ms["seconds"] = _round(ms["seconds"] + res["metrics"]["seconds"], 3)
        ms["pairs"] += res["metrics"]["pairs"]
        for k, v in res["metrics"]["per_metric"].items():
            ms["per_metric"][k] = _round(ms["per_metric"].get(k, 0.0) + v, 3)
        if run_info is not None:
            run_info["new_records"] += res["counts"]["new"]
            run_info["filled_records"] += res["counts"]["filled"]
            run_info["replaced_records"] += res["counts"]["replaced"]

    def record_failure(f: dict) -> None:
        failures[:] = [x for x in failures if not (x["image"] == f["image"] and x["task"] == f["task"])] + [f]

    if journal.is_file():  # results that an interrupted run had finished but not yet saved in records.json
        replayed = 0
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break  # the line the interruption cut short
            if "result" in entry:
                merge(entry["result"], None)
                replayed += 1
            elif "failure" in entry:
                record_failure(entry["failure"])
        save()
        journal.unlink()
        if replayed:
            print(f"recovered {replayed} finished task(s) from {journal.name}", file=sys.stderr)

    _check_metric_libraries(doc, described, remeasure)
    have = {_key_of(r) for r in doc["records"]}
    lp_ok, lp_reason = metrics.lpips_status()
    command = "python -m helpers.bench" + ("" if not argv else " " + shlex.join(argv))
    meta.update(
        {
            "policy": POLICIES[policy],
            "data": str(args.data),
            "command": command,
            "images": [p.stem for p in paths],
            "budgets": setup.budgets,
            "codecs": codecs,
            "rules": setup.rules,
            "coders": coders,
            "ours_rule": f"{OURS_RULE}: largest palette (2..{setup.max_colors}) / finest tc step whose file <= budget",
            "max_colors": setup.max_colors,
            "denoise": setup.denoise,
            "verify": setup.verify,
            "backends": {lbl: b.describe() for lbl, b in backends},
            "lpips": "available" if lp_ok else f"unavailable: {lp_reason}",
            "metrics": {
                **(meta.get("metrics") or {}),
                **{
                    k: {f: d[f] for f in ("name", "direction", "unit", "library", "settings") if f in d}
                    for k, d in described.items()
                },
            },
            "metrics_measured": metric_keys,
            "metrics_unavailable": metrics_unavailable,
            "unavailable_codecs": unavailable,
            "skipped_coders": skipped_coders,
            "baseline_settings": {
                "jpeg": "libjpeg optimize, 4:2:2, MozJPEG lossless pass",
                "webp": "method=6",
                "avif": f"speed={baselines.AVIF_SPEED}, 4:2:0",
                "jxl": f"effort={baselines.JXL_EFFORT}, lossy VarDCT",
            },
        }
    )
    if policy != POLICY:
        meta["policy_name"] = policy
    if setup.sweep:
        meta["sweep_qualities"] = {c: list(config.SWEEP_QUALITIES.get(c, ())) for c in codecs}
    meta["selection"] = selection
    started = time.perf_counter()
    run_info = {
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "device": str(device),
        "scheduler": sched.describe(),
        "jobs": jobs,
        "new_records": 0,
        "filled_records": 0,
        "replaced_records": 0,
        "metrics": metric_keys,
        "load_start": _loadavg(),
    }
    meta["runs"] = meta.get("runs", [])[-19:] + [run_info]  # updated in place as the run goes
    fills = _fills(doc, selection, metric_keys, remeasure)
    tasks = _tasks(doc, paths, setup, have, fills)
    run_info["tasks"] = len(tasks)
    bar = tqdm(total=len(tasks), desc="bench", unit="task", disable=not args.progress, dynamic_ncols=True)
    client_s, last_save, task_s = 0.0, time.perf_counter(), 0.0
    try:
        where = sched if tasks else Scheduler("inline")  # nothing to do: no cluster to start
        with Runner(where, setup, threads, jobs, log=lambda m: print(m, file=sys.stderr)) as runner:
            if where.kind not in ("inline", "local"):
                jobs, threads = runner.workers, runner.threads
                run_info["jobs"] = jobs
            run_info["scheduler_start_seconds"] = _round(time.perf_counter() - started, 2)
            if tasks or "machine" not in meta:  # describes the machine that computed the records
                meta["machine"] = machine_info(device)
                meta["parallel"] = {
                    "jobs": jobs,
                    "torch_threads_per_job": threads or "the cluster's own",
                    "scheduler": sched.describe(),
                }
                meta["backend_load_seconds"] = _round(t_load, 3)
            with open(journal, "a") as jf:
                for task, res, fail in runner.run(tasks):
                    t0 = time.perf_counter()
                    if res is not None:
                        merge(res, run_info)
                        w = res.pop("worker", None)
                        if w is not None:  # tasks and model loads per worker process
                            ws = run_info.setdefault("workers", {}).setdefault(str(w["pid"]), {"tasks": 0})
                            ws["tasks"] += 1
                            ws["model_loads"] = w["model_loads"]
                            ws["task_seconds"] = _round(ws.get("task_seconds", 0.0) + res["seconds"], 2)
                        task_s += res["seconds"]
                        jf.write(json.dumps({"result": res}, allow_nan=False) + "\n")
                        bar.set_postfix_str(f"{res['image']} {task_label(task[1])} {res['seconds']:.0f}s")
                    else:
                        record_failure(fail)
                        jf.write(json.dumps({"failure": fail}) + "\n")
                        print(f"failed: {fail['image']} {fail['task']}: {fail['error']}", file=sys.stderr)
                    jf.flush()
                    run_info["wall_seconds"] = _round(time.perf_counter() - started, 2)
                    if time.perf_counter() - last_save > SAVE_SECONDS:
                        save()
                        jf.truncate(0)
                        jf.seek(0)
                        last_save = time.perf_counter()
                    client_s += time.perf_counter() - t0
                    bar.update(1)
    finally:
        bar.close()
        run_info["wall_seconds"] = _round(time.perf_counter() - started, 2)
        run_info["task_seconds"] = _round(task_s, 2)
        run_info["client_seconds"] = _round(client_s, 3)
        run_info["failed_tasks"] = sum(1 for f in failures if f["image"] in set(selection["images"]))
        save()
        journal.unlink(missing_ok=True)
    run_info["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    run_info["load_end"] = _loadavg()
    if tasks:
        meta["wall_seconds_total"] = _round(meta.get("wall_seconds_total", 0.0) + run_info["wall_seconds"], 2)
    doc["records"].sort(
        key=lambda r: (r["image"], not r["codec"].startswith("ours"), r["codec"], r["rule"], int(r["budget"]))
    )
    doc["coder_savings"].sort(key=lambda s: (s["image"], s["model"]))
    if doc.get("sweeps"):
        doc["sweeps"].sort(key=lambda s: (s["image"], s["codec"]))
    failures.sort(key=lambda f: (f["image"], f["task"]))
    save()
    if failures:
        doc["failures"] = failures
    write_plot(doc, out / PLOT_FILE, selection)
    write_summary(doc, out / SUMMARY_FILE, selection)
    return {
        "records": rec_path,
        "plot": out / PLOT_FILE,
        "summary": out / SUMMARY_FILE,
        "new_records": run_info["new_records"],
        "filled_records": run_info["filled_records"],
        "replaced_records": run_info["replaced_records"],
        "wall_seconds": run_info["wall_seconds"],
        "failed_tasks": run_info["failed_tasks"],
    }


def run_in_memory(
    paths: Sequence[str | Path],
    backend,
    budgets: Sequence[int],
    coders: Sequence[str],
    codecs: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    label: str | None = None,
    progress: bool = True,
) -> tuple[dict, dict]:
    """The benchmark for a few images in this process, with an already loaded backend (notebooks):
    returns ``(doc, selection)`` shaped like ``records.json`` and its selection, for
    :func:`helpers.bench.write_plot`, :func:`helpers.bench.aggregate` and :func:`helpers.bench.head_to_head`.
    Nothing is written to disk; the same records as ``python -m helpers.bench`` (rule ``le``)."""
    from tqdm.auto import tqdm

    from .. import baselines

    coders, skipped = _resolve_coders(list(dict.fromkeys(coders)))
    codecs = [
        c
        for c in (baselines.available_codecs() if codecs is None else codecs)
        if baselines.codec_status().get(c) is None
    ]
    metric_keys, _ = _resolve_metrics(metrics)
    label = label or backend.kind
    setup = Setup(
        budgets=sorted(set(int(b) for b in budgets)),
        codecs=list(codecs),
        rules=["le"],
        coders=coders,
        denoise=False,
        max_colors=1024,
        coder_savings=False,
        models=[backend.model_id],
        verify="latents",
        device=backend.device_name,
        metrics=metric_keys,
        backends=[(label, backend)],
    )
    records: list[dict] = []
    for p in tqdm(list(paths), desc="RD sweep", unit="img", disable=not progress):
        records += bench_image(p, setup, set(), [])["records"]
    selection = {
        "images": [Path(p).stem for p in paths],
        "budgets": setup.budgets,
        "codecs": setup.codecs,
        "rules": setup.rules,
        "ours": [ours_label(label, c, dn) for c, dn in _variants(setup, backend)],
    }
    doc = {
        "format": config.FORMAT_VERSION,
        "records": records,
        "coder_savings": [],
        "meta": {"selection": selection, "coders": coders, "skipped_coders": skipped},
    }
    return doc, selection
