"""TAEF2 through ONNX Runtime: exported once from the PyTorch modules, cached by the weights' digest, run
without torch.

The CLI's TAEF2 path (``--runtime onnx``, or ``auto`` on a CPU) runs the halves the PyTorch backend tiles
(:func:`helpers.backends.taef2.split_encoder` / :func:`~helpers.backends.taef2.split_decoder`) as six ONNX graphs.
The GroupNorm blocks (global statistics) run untiled at latent resolution: ``enc_global`` (features -> latents)
and ``dec_global`` (clamp + GroupNorm blocks). The local parts run in tiles
(:func:`helpers.backends.tiling.tiled_apply`, the same tiles and halos as PyTorch: ``SDCOMP_TILE`` pixels, default
1024, halos of 72 pixels / 9 latent samples), and within each tile their full-resolution layers
(:func:`helpers.backends.taef2.split_fullres`) run once more in tiles of :data:`INNER_TILE` pixels (halos 6 pixels
/ 3 half-resolution samples, from the receptive field): ``enc_first`` (image -> 1/2) then ``enc_mid`` (1/2 -> 64
features at 1/8); ``dec_mid`` (latent features -> 1/2) then ``dec_last`` (1/2 -> image). A 64-channel activation
at full resolution is the largest tensor of either network (64 MiB at 512x512, three alive at once): the inner
tiles cut a 512x512 decode's activation peak from ~192 MiB to ~75 MiB, and a 1024-pixel tile's from ~940 MiB to
~280 MiB, for 1-7 % more CPU (measured). Tiling is exact: every output sample sees exactly the inputs it would
untiled. Above :data:`~helpers.backends.taef2_spec.STREAM_GLOBAL_ABOVE` latent positions ``dec_global`` is
replaced by seven smaller graphs (``dec_head``, and per GroupNorm block ``dec_gn<i>_hidden`` /
``dec_gn<i>_apply``) run in tiles by :func:`helpers.backends.tiling.streamed_global`, and
:meth:`OnnxTAEF2Backend.decode_uint8` writes each tile straight into the 8-bit image: a decode's memory is then
two 64-channel feature maps at latent resolution plus one tile.

**Cache.** The graphs are exported by ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``:
the dynamo exporter needs ``onnxscript``, which is not installed here; opset 17, dynamic batch/height/width)
into ``$SDCOMP_CACHE/onnx/taef2-<digest>-e<EXPORT_VERSION>/`` (default cache folder: ``$XDG_CACHE_HOME/sdcomp``
or ``~/.cache/sdcomp``), where ``<digest>`` is the SHA-256 of the two weight files' contents. The folder is
written atomically (exported into a temporary sibling, then renamed), and its ``manifest.json`` records
the weights' digest, the header fingerprint (:func:`helpers.backends.torch_base.weights_fingerprint` of the decoder,
computed by PyTorch at export time) and the SHA-256 of every graph. Each graph also carries the digest and
fingerprint in its own metadata. Loading re-hashes the weight files and the graphs it opens: other
weights find another folder (or none); a truncated, edited or half-written folder is *stale/corrupt* and is
re-exported when torch is importable, otherwise refused with a one-line error. So the fingerprint an ONNX
run writes into (or checks against) a file header is the one PyTorch computes for the same weight files.
The weights themselves stay where they are (``../shared/weights/taef2`` or the user's folder); the cache
holds derived graphs only, never in the repository.

**Torch.** Only the export imports torch (the first run for a set of weights, or a re-export); every later
run imports numpy, Pillow and onnxruntime only.

**Session options** (:class:`OrtSettings`, environment overrides in brackets): intra-op threads = the
CPU count [``SDCOMP_ORT_THREADS``], one inter-op thread, sequential execution, all graph optimisations
[``SDCOMP_ORT_OPT``: disable/basic/extended/all], the CPU memory arena and memory-pattern planning off
[``SDCOMP_ORT_ARENA=1``, ``SDCOMP_ORT_MEM_PATTERN=1``] (both keep freed activations mapped: at 512x512 they
cost ~250 MB of peak RSS for no measurable speed), thread spinning off [``SDCOMP_ORT_SPIN=1``] (spinning
burns CPU on a shared machine). Decoded pixels do not depend on the thread count or the arena; see
README, *Runtimes*.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import SDCError
from . import taef2_spec as spec
from .base import Backend
from .resolve import cache_root
from .taef2_spec import (
    BLOCK_HALO,
    HEAD_HALO,
    STOCK_ENCODER,
    TAEF2_MODEL_ID,
    default_taef2_dir,
    encoder_names,
    encoder_of_file,
    encoder_variant_file,
    taef2_weight_files,
    tile_side,
)
from .tiling import streamed_global, tiled_apply

#: bump when the exported graphs change (split points, opset, input conventions): older caches become stale
EXPORT_VERSION = 3
OPSET = 17
MANIFEST = "manifest.json"
CACHE_FORMAT = "sdcomp-onnx-cache"
#: graph name -> (input channels of the dummy export input, its side, what it computes)
PARTS = {
    "enc_first": (3, 64, "image in [0, 1] -> 64 features at 1/2 (full-resolution layers, inner tiles)"),
    "enc_mid": (64, 32, "features at 1/2 -> 64 features at 1/8 (tiles)"),
    "enc_global": (64, 8, "features at 1/8 -> 32 latent channels (GroupNorm blocks, untiled)"),
    "dec_global": (32, 8, "latents -> 64 features (clamp, GroupNorm blocks, untiled)"),
    "dec_mid": (64, 8, "features -> 64 features at 1/2 of the image (tiles)"),
    "dec_last": (64, 32, "features at 1/2 -> image in [0, 1] (full-resolution layers, inner tiles)"),
    # dec_global cut for large images (helpers.backends.tiling.streamed_global): head, then per GroupNorm block the
    # branch up to the GroupNorm (statistics pass) and the whole block with given statistics (mean, rstd)
    "dec_head": (32, 8, "latents -> 64 features (clamp, conv, ReLU; tiles)"),
    **{
        f"dec_gn{i}_{kind}": (64, 8, what)
        for i in range(3)
        for kind, what in (
            ("hidden", f"GroupNorm block {i}: features -> its branch before the GroupNorm (statistics pass, tiles)"),
            ("apply", f"GroupNorm block {i} with given statistics (inputs: features, mean, rstd; tiles)"),
        )
    },
}
STREAM_PARTS = ("dec_head",) + tuple(f"dec_gn{i}_{k}" for i in range(3) for k in ("hidden", "apply"))
PURPOSES = {
    "encode": ("enc_first", "enc_mid", "enc_global"),
    "decode": ("dec_global", "dec_mid", "dec_last"),
    None: tuple(p for p in PARTS if p not in STREAM_PARTS),
}
#: graphs a backend may open later (opened on first use; their presence is checked when the cache is read)
REQUIRED = {
    purpose: parts + (STREAM_PARTS if purpose in ("decode", None) else ()) for purpose, parts in PURPOSES.items()
}
#: core side (pixels) of the inner tiles of the full-resolution layers; 256 measured best: at 512x512 the
#: activation peak drops by ~120 MiB for ~1 % (decoder) / ~7 % (encoder) more CPU, 512 saves nothing there
INNER_TILE = 256


class CacheError(SDCError):
    """A cached graph folder is missing, stale or corrupt (internal: triggers a re-export when possible)."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(files) -> str:
    """SHA-256 over the weight files' names and contents (what the cache is keyed by)."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + _sha256_file(Path(f)).encode())
    return h.hexdigest()


def graphs_dir(digest: str) -> Path:
    return cache_root() / "onnx" / f"taef2-{digest[:24]}-e{EXPORT_VERSION}"


# ------------------------------------------------------------------------------------------
# session options
# ------------------------------------------------------------------------------------------

OPT_LEVELS = ("disable", "basic", "extended", "all")


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SDCError(f"{name}={raw!r} is not a yes/no value: use 1 or 0")


@dataclass(frozen=True)
class OrtSettings:
    """ONNX Runtime session options (see the module docstring for the measured choices)."""

    threads: int = 0  # intra-op threads; 0 = os.cpu_count()
    arena: bool = False  # CPU memory arena
    mem_pattern: bool = False  # memory-pattern planning (pre-allocates per input shape)
    opt_level: str = "all"
    spinning: bool = False  # intra-op threads spin-wait between ops

    @classmethod
    def from_env(cls, **overrides) -> OrtSettings:
        raw = os.environ.get("SDCOMP_ORT_THREADS", "").strip()
        try:
            threads = int(raw) if raw else 0
        except ValueError:
            raise SDCError(f"SDCOMP_ORT_THREADS={raw!r} is not an integer: unset it or give a thread count") from None
        if threads < 0:
            raise SDCError(f"SDCOMP_ORT_THREADS={raw!r} must be >= 0 (0 = one per CPU)")
        opt = os.environ.get("SDCOMP_ORT_OPT", "").strip().lower() or "all"
        if opt not in OPT_LEVELS:
            raise SDCError(f"SDCOMP_ORT_OPT={opt!r}: use one of {', '.join(OPT_LEVELS)}")
        kw = dict(
            threads=threads,
            arena=_env_flag("SDCOMP_ORT_ARENA", False),
            mem_pattern=_env_flag("SDCOMP_ORT_MEM_PATTERN", False),
            opt_level=opt,
            spinning=_env_flag("SDCOMP_ORT_SPIN", False),
        )
        kw.update(overrides)
        return cls(**kw)

    @property
    def intra_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def session_options(self, ort):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.opt_level]
        so.enable_cpu_mem_arena = self.arena
        so.enable_mem_pattern = self.mem_pattern
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # fatal only: every error ONNX Runtime logs also reaches Python as an exception, which the CLI turns
        # into its own one line (a logged std::bad_alloc would otherwise precede it)
        so.log_severity_level = 4
        return so


#: glibc's M_MMAP_THRESHOLD (mallopt parameter -3): allocations at least this large get their own mapping,
#: returned to the system when freed
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def release_freed_memory_early(threshold: int = MMAP_THRESHOLD) -> bool:
    """Ask glibc to serve allocations of ``threshold`` bytes or more from their own mappings (``mallopt
    (M_MMAP_THRESHOLD)``), so the activations ONNX Runtime frees go back to the system at once.

    glibc raises that threshold dynamically up to 32 MiB after the first large free; the 16-32 MiB
    activations of TAEF2's middle stages then stay in the heap and peak RSS of a 512x512 decode grows from
    ~283 MB to 330-390 MB (measured). The CLI calls this for the ONNX runtime; a no-op (False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def import_onnxruntime():
    """``onnxruntime``, or a one-line SDCError naming the fix."""
    try:
        import onnxruntime
    except ImportError:
        raise SDCError(
            "onnxruntime is not installed: pip install onnxruntime==1.32.0, or use --runtime torch"
        ) from None
    # fatal only: the default logger otherwise prints warnings (e.g. telemetry that cannot write under an
    # unwritable HOME) and errors that also reach Python as exceptions, before our own one line
    onnxruntime.set_default_logger_severity(4)
    return onnxruntime


# ------------------------------------------------------------------------------------------
# export (the only part that needs torch)
# ------------------------------------------------------------------------------------------


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def export_graphs(weight_files, out_dir: Path, digest: str) -> dict:
    """Export TAEF2's four halves from PyTorch into ``out_dir`` (which must exist) and write the manifest.

    Imports torch and onnx. The graphs take and return float32 NCHW arrays with dynamic batch, height and
    width; their weights are the fp32 PyTorch CPU module's (the .pth files are fp16: upcast exactly).
    """
    import onnx
    import torch

    from .taef2 import halos, inner_halos, load_taef2, split_decoder, split_encoder, split_fullres, split_global_decoder
    from .torch_base import weights_fingerprint

    enc_file, dec_file = weight_files
    backend = load_taef2(Path(dec_file).parent, device="cpu", dtype=torch.float32, encoder=encoder_of_file(enc_file))
    _, enc_global = split_encoder(backend.encoder)
    dec_global, _ = split_decoder(backend.decoder)
    enc_first, enc_mid, dec_mid, dec_last = split_fullres(backend.encoder, backend.decoder)
    modules = {
        "enc_first": enc_first,
        "enc_mid": enc_mid,
        "enc_global": enc_global,
        "dec_global": dec_global,
        "dec_mid": dec_mid,
        "dec_last": dec_last,
    }
    head, gn_blocks, gn_eps, gn_groups = split_global_decoder(backend.decoder)
    modules["dec_head"] = head
    for i, (hidden, apply) in enumerate(gn_blocks):
        modules[f"dec_gn{i}_hidden"], modules[f"dec_gn{i}_apply"] = hidden, apply
    fingerprint = weights_fingerprint(backend.decoder)
    enc_halo, dec_halo = halos()
    enc_inner_halo, dec_inner_halo = inner_halos()
    meta = {
        "sdcomp_weights_sha256": digest,
        "sdcomp_fingerprint": str(fingerprint),
        "sdcomp_export_version": str(EXPORT_VERSION),
    }
    graphs = {}
    for name, module in modules.items():
        ch, side, what = PARTS[name]
        dummy = (torch.zeros(1, ch, side, side),)
        names, axes = ["input"], {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "oh", 3: "ow"}}
        if name.endswith("_apply"):  # + the GroupNorm statistics, per channel of the hidden branch
            hid = module.weight.shape[1]
            dummy += (torch.zeros(1, hid, 1, 1), torch.ones(1, hid, 1, 1))
            names += ["mean", "rstd"]
            axes.update(mean={0: "n"}, rstd={0: "n"})
        path = out_dir / f"{name}.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                dummy,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=names,
                output_names=["output"],
                do_constant_folding=True,
                dynamic_axes=axes,
            )
        model = onnx.load(str(path))
        model.doc_string = f"TAEF2 {name}: {what}"
        for k, v in {**meta, "sdcomp_part": name}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(model, str(path))
        graphs[name] = {"file": path.name, "sha256": _sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": CACHE_FORMAT,
        "export_version": EXPORT_VERSION,
        "model": TAEF2_MODEL_ID,
        "weights_sha256": digest,
        "weight_files": {Path(f).name: _sha256_file(Path(f)) for f in weight_files},
        "fingerprint": fingerprint,
        "latent_channels": backend.latent_channels,
        "downsample": backend.downsample,
        "quant_span": float(backend.quant_span),
        "enc_halo": enc_halo,
        "dec_halo": dec_halo,
        "enc_inner_halo": enc_inner_halo,
        "dec_inner_halo": dec_inner_halo,
        "gn_eps": gn_eps,
        "gn_groups": gn_groups,
        "opset": OPSET,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "graphs": graphs,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))  # written last: its presence = complete
    return manifest


def _install(weight_files, digest: str, final: Path) -> dict:
    """Export into a temporary sibling folder, then rename it into place (atomic on one file system)."""
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    trash = None
    try:
        manifest = export_graphs(weight_files, tmp, digest)
        if final.exists():
            trash = root / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.replace(final, trash)
            except FileNotFoundError:  # another process moved it meanwhile
                trash = None
        try:
            os.replace(tmp, final)
        except OSError:  # a concurrent process installed its own (identical) export first: use that one
            return read_manifest(final, digest, PARTS, verify=True)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def read_manifest(folder: Path, digest: str, parts, verify: bool = False) -> dict:
    """The folder's manifest after checking that it belongs to these weights and that the graphs named in
    ``parts`` are there with their recorded sizes (``verify``: and SHA-256; :meth:`OnnxTAEF2Backend.session`
    hashes the bytes it loads anyway); raises :class:`CacheError` with the reason otherwise."""
    mf = folder / MANIFEST
    if not folder.is_dir():
        raise CacheError(f"no exported graphs in {folder}")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{mf} is unreadable ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise CacheError(f"{mf} is not an sdcomp ONNX cache manifest")
    if manifest.get("export_version") != EXPORT_VERSION or manifest.get("weights_sha256") != digest:
        raise CacheError(f"{mf} was written for other weights or another export version")
    try:
        for name in parts:
            g = manifest["graphs"][name]
            path = folder / g["file"]
            if not path.is_file() or path.stat().st_size != g["bytes"]:
                raise CacheError(f"graph {path} is missing or not of its recorded size")
            if verify and _sha256_file(path) != g["sha256"]:
                raise CacheError(f"graph {path} does not match its recorded SHA-256")
        for key in (
            "fingerprint",
            "enc_halo",
            "dec_halo",
            "enc_inner_halo",
            "dec_inner_halo",
            "latent_channels",
            "downsample",
            "gn_groups",
        ):
            int(manifest[key])
        float(manifest["quant_span"])
        float(manifest["gn_eps"])
    except (KeyError, TypeError, ValueError):
        raise CacheError(f"{mf} lacks fields this version needs") from None
    return manifest


def ensure_graphs(weight_files, parts=tuple(PARTS), log=None, problem: Exception | None = None) -> tuple[Path, dict]:
    """(folder, manifest) of intact cached graphs for these weight files: exported on first use, re-exported
    when stale or corrupt (``problem``: a fault already found in the cached folder). Without torch, a missing
    or broken cache is a one-line SDCError."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    digest = weights_digest(weight_files)
    folder = graphs_dir(digest)
    if problem is None:
        try:
            return folder, read_manifest(folder, digest, parts)
        except CacheError as exc:
            problem = exc
    exists = folder.exists()
    if not _torch_available():
        if exists:
            raise SDCError(
                f"the cached ONNX graphs in {folder} are stale or corrupt ({problem}) and PyTorch is not "
                f"installed to re-export them: delete that folder and run once where torch is "
                f"installed, or use --runtime torch"
            ) from None
        raise SDCError(
            f"no ONNX graphs of these TAEF2 weights in {folder.parent} and PyTorch is not installed to "
            f"export them: run once where torch is installed (the first ONNX run exports and caches "
            f"them), set SDCOMP_CACHE to a folder holding them, or use --runtime torch"
        ) from None
    log(
        f"note: {'re-exporting' if exists else 'exporting'} TAEF2 to ONNX once "
        f"({'cached graphs are stale or corrupt: ' + str(problem) if exists else 'first run for these weights'}); "
        f"cached in {folder}"
    )
    try:
        manifest = _install(weight_files, digest, folder)
    except OSError as exc:
        raise SDCError(
            f"cannot write the ONNX cache {folder} ({exc.strerror or exc}): set SDCOMP_CACHE to a "
            f"writable folder, or use --runtime torch"
        ) from None
    return folder, manifest


# ------------------------------------------------------------------------------------------
# the backend
# ------------------------------------------------------------------------------------------


class OnnxTAEF2Backend(Backend):
    """TAEF2 on ONNX Runtime, on the CPU: a :class:`helpers.backends.base.Backend` without torch."""

    runtime = "onnx"
    kind = "taef2"
    device_name = "cpu"

    def __init__(
        self,
        folder: Path,
        manifest: dict,
        weight_files,
        settings: OrtSettings | None = None,
        model_id: str = TAEF2_MODEL_ID,
    ):
        self.ort = import_onnxruntime()
        self.folder, self.manifest, self.weight_files = Path(folder), manifest, tuple(weight_files)
        self.settings = settings or OrtSettings.from_env()
        self.model_id = model_id
        self.latent_channels = int(manifest["latent_channels"])
        self.downsample = int(manifest["downsample"])
        self.quant_span = float(manifest["quant_span"])
        self.fingerprint = int(manifest["fingerprint"])
        self.enc_halo, self.dec_halo = int(manifest["enc_halo"]), int(manifest["dec_halo"])
        self.enc_inner_halo, self.dec_inner_halo = int(manifest["enc_inner_halo"]), int(manifest["dec_inner_halo"])
        self.tile = tile_side()
        self.inner_tile = INNER_TILE
        self.progress: bool | None = None  # tile progress bar: None = on a terminal only
        self.load_seconds = 0.0
        self._sessions: dict = {}
        self._encoders: dict[str, OnnxTAEF2Backend] = {}  # shared by this model's encoder variants

    def encoder_names(self) -> tuple[str, ...]:
        return encoder_names(self.fingerprint)

    def with_encoder(self, name: str) -> OnnxTAEF2Backend:
        """This TAEF2 with encoder ``name`` (its graphs exported and cached on first use), kept once loaded."""
        self._encoders.setdefault(self.encoder_name, self)
        if name not in self._encoders:
            other = load_taef2_onnx(self.weight_files[1].parent, "encode", self.settings, encoder=name)
            other._encoders = self._encoders
            self._encoders[name] = other
        return self._encoders[name]

    def describe(self) -> str:
        return (
            f"{self.kind}:{self.model_id} on cpu (float32) via ONNX Runtime {self.ort.__version__} "
            f"({self.settings.intra_threads} threads)"
        )

    def session(self, name: str):
        """The ONNX Runtime session of one graph, opened on first use (its bytes re-hashed against the manifest)."""
        if name not in self._sessions:
            g = self.manifest["graphs"][name]
            path = self.folder / g["file"]
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CacheError(f"cannot read {path} ({exc.strerror})") from None
            if hashlib.sha256(data).hexdigest() != g["sha256"]:
                raise CacheError(f"graph {path} does not match its recorded SHA-256")
            try:
                sess = self.ort.InferenceSession(
                    data, self.settings.session_options(self.ort), providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise CacheError(f"onnxruntime cannot load {path} ({str(exc).splitlines()[0][:120]})") from None
            meta = sess.get_modelmeta().custom_metadata_map
            if (
                meta.get("sdcomp_weights_sha256") != self.manifest["weights_sha256"]
                or meta.get("sdcomp_fingerprint") != str(self.fingerprint)
                or meta.get("sdcomp_part") != name
            ):
                raise CacheError(f"graph {path} was exported from other weights than its manifest says")
            self._sessions[name] = sess
        return self._sessions[name]

    def _run(self, name: str, x: np.ndarray, **more: np.ndarray) -> np.ndarray:
        feeds = {"input": np.ascontiguousarray(x, dtype=np.float32)}
        feeds.update({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in more.items()})
        return self.session(name).run(None, feeds)[0]

    def encode_array(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        """(N, 3, H, W) float32 in [-1, 1] (H, W multiples of 8) -> latents (N, 32, H/8, W/8); deterministic."""

        def local(t: np.ndarray) -> np.ndarray:  # [-1, 1] -> [0, 1] per tile, as the PyTorch backend does
            half = tiled_apply(
                (t + np.float32(1)) / np.float32(2),
                lambda u: self._run("enc_first", u),
                scale=Fraction(1, 2),
                tile=self.inner_tile,
                halo=self.enc_inner_halo,
                align=2,
            )
            return self._run("enc_mid", half)

        feats = tiled_apply(
            np.asarray(x, dtype=np.float32),
            local,
            scale=Fraction(1, 8),
            tile=self.tile,
            halo=self.enc_halo,
            align=8,
            progress=self.progress,
            desc="TAEF2 encode tiles",
        )
        return self._run("enc_global", feats)

    def decode_array(self, z: np.ndarray) -> np.ndarray:
        """Latents (N, 32, h, w) -> (N, 3, 8h, 8w) float32 in about [-1, 1]."""
        feats = self._run("dec_global", z)
        y = tiled_apply(
            feats,
            self._local_decoder(),
            scale=8,
            tile=self.tile // 8,
            halo=self.dec_halo,
            progress=self.progress,
            desc="TAEF2 decode tiles",
        )
        del feats
        y *= np.float32(2)
        y -= np.float32(1)
        return y

    def _local_decoder(self):
        def local(t: np.ndarray) -> np.ndarray:
            return tiled_apply(
                self._run("dec_mid", t),
                lambda u: self._run("dec_last", u),
                scale=2,
                tile=self.inner_tile // 2,
                halo=self.dec_inner_halo,
            )

        return local

    def global_features(self, z: np.ndarray) -> np.ndarray:
        """Latents -> the 64 features the tiled part decodes: ``dec_global`` in one piece up to
        :data:`helpers.backends.taef2_spec.STREAM_GLOBAL_ABOVE` latent positions, above that streamed in tiles
        (:func:`helpers.backends.tiling.streamed_global`: two feature maps plus one tile in memory)."""
        h, w = z.shape[2:]
        if h * w <= spec.STREAM_GLOBAL_ABOVE:
            return self._run("dec_global", z)
        blocks = [
            (
                lambda t, i=i: self._run(f"dec_gn{i}_hidden", t),
                lambda t, mean, rstd, i=i: self._run(f"dec_gn{i}_apply", t, mean=mean, rstd=rstd),
            )
            for i in range(3)
        ]
        return streamed_global(
            np.asarray(z, dtype=np.float32),
            lambda t: self._run("dec_head", t),
            blocks,
            tile=self.tile // 8,
            head_halo=HEAD_HALO,
            block_halo=BLOCK_HALO,
            groups=int(self.manifest["gn_groups"]),
            eps=float(self.manifest["gn_eps"]),
        )

    def decode_uint8(self, z: np.ndarray) -> np.ndarray:
        """Latents (1, 32, h, w) -> (H, W, 3) uint8 pixels, each tile converted as it comes (no full-size float
        image); the same pixels as :meth:`decode_array` + :func:`helpers.images.from_nchw` up to
        :data:`~helpers.backends.taef2_spec.STREAM_GLOBAL_ABOVE` latent positions."""
        from ..images import signed_to_uint8

        n, _, h, w = z.shape
        if n != 1:
            raise ValueError(f"decode_uint8 takes one latent, got a batch of {n}")
        feats = self.global_features(z)
        out = np.empty((8 * h, 8 * w, 3), dtype=np.uint8)

        def sink(place, t):
            y0, y1, x0, x1 = place
            t = t * np.float32(2)  # decode_array's float32 operations, per tile
            t -= np.float32(1)
            signed_to_uint8(t, out[y0:y1, x0:x1])

        tiled_apply(
            feats,
            self._local_decoder(),
            scale=8,
            tile=self.tile // 8,
            halo=self.dec_halo,
            progress=self.progress,
            desc="TAEF2 decode tiles",
            sink=sink,
        )
        return out


def load_taef2_onnx(
    directory: str | Path | None = None,
    purpose: str | None = None,
    settings: OrtSettings | None = None,
    log=None,
    encoder: str = STOCK_ENCODER,
    fallback: bool = False,
) -> OnnxTAEF2Backend:
    """TAEF2 from a folder holding taef2_encoder.pth / taef2_decoder.pth, on ONNX Runtime.

    ``purpose``: ``"encode"``, ``"decode"`` or None (both): the sessions opened now (others open on first
    use). ``encoder``: ``stock`` (the folder's) or a shipped variant (its graphs are cached under their own
    digest); a variant trained for another decoder than the folder's is a one-line error, or with ``fallback``
    the stock encoder. Exports the graphs on first use (needs torch), re-exports stale or corrupt ones.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be encode, decode or None, got {purpose!r}")
    t0 = time.perf_counter()
    import_onnxruntime()
    directory = directory if directory is not None else default_taef2_dir()
    if encoder != STOCK_ENCODER:  # the folder's decoder (its stock graphs' manifest) must be the variant's
        _, stock = ensure_graphs(taef2_weight_files(directory), (), log)
        if fallback and encoder not in encoder_names(int(stock["fingerprint"])):
            encoder = STOCK_ENCODER
        else:
            encoder_variant_file(encoder, int(stock["fingerprint"]))
    files = taef2_weight_files(directory, encoder)
    parts = PURPOSES[purpose]
    folder, manifest = ensure_graphs(files, REQUIRED[purpose], log)
    backend = OnnxTAEF2Backend(folder, manifest, files, settings)
    try:
        for name in parts:
            backend.session(name)
    except CacheError as exc:  # a graph's bytes do not match the manifest, or onnxruntime refuses them
        folder, manifest = ensure_graphs(files, REQUIRED[purpose], log, problem=exc)  # re-export once (needs torch)
        backend = OnnxTAEF2Backend(folder, manifest, files, settings)
        for name in parts:
            backend.session(name)
    backend.encoder_name = encoder
    backend.load_seconds = time.perf_counter() - t0
    return backend


__all__ = [
    "CacheError",
    "OnnxTAEF2Backend",
    "OrtSettings",
    "ensure_graphs",
    "export_graphs",
    "graphs_dir",
    "load_taef2_onnx",
    "read_manifest",
    "weights_digest",
]
