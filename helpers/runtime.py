"""Which model and which runtime: resolving ``--model`` and ``--runtime`` without importing torch.

The command line resolves a model spec here first and imports a framework only for the runtime it picks:

* ``torch``: :mod:`helpers.models` (PyTorch; SD and TAEF2, any device). Notebooks, SD and GPUs use it.
* ``onnx``: :mod:`helpers.onnx_runtime` (ONNX Runtime on the CPU; TAEF2 only). It never imports torch once
  the exported graphs are in the cache; the first run for a set of weights exports them with torch.
* ``auto``: ONNX Runtime for TAEF2 on the CPU (``--device cpu``, or ``auto`` with no GPU visible) when
  ``onnxruntime`` is installed, PyTorch otherwise.

Everything in this module is light (standard library only, plus ``huggingface_hub``'s id check for hub ids),
so ``python -m helpers encode/decode`` with TAEF2 starts without torch, diffusers or transformers.
:mod:`helpers.models` re-exports the names defined here.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

from .errors import ModelNotFoundError, SDCError

DEFAULT_SD_MODEL = "CompVis/stable-diffusion-v1-4"
TAEF2_ENCODER = "taef2_encoder.pth"
TAEF2_DECODER = "taef2_decoder.pth"
TAEF2_MODEL_ID = "taef2"
TINY_MODEL_ID = "tiny-random-sd"
#: The full-size SD v1.4 stand-in with random weights (helpers.sd14): its folder's model id.
STANDIN_MODEL_ID = "sd-v1-4-standin-random"
RUNTIMES = ("auto", "torch", "onnx")

#: Core tile side (pixels) for TAEF2's tiled encode/decode; ``SDCOMP_TILE`` overrides it. Chosen by measurement
#: (scripts/bench_large_photo.py): time per megapixel vs peak memory on this project's CPU machine.
TAEF2_TILE = 1024


def default_taef2_dir() -> Path:
    """Where TAEF2 weights are looked for by default: $SDCOMP_TAEF2_DIR, else ../shared/weights/taef2."""
    env = os.environ.get("SDCOMP_TAEF2_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "weights" / "taef2"


def tile_side() -> int:
    """TAEF2's core tile side in pixels: ``SDCOMP_TILE`` or :data:`TAEF2_TILE` (a multiple of 64, >= 64)."""
    raw = os.environ.get("SDCOMP_TILE", "")
    try:
        v = int(raw) if raw.strip() else TAEF2_TILE
    except ValueError:
        raise SDCError(f"SDCOMP_TILE={raw!r} is not an integer: unset it or give a tile side in pixels") from None
    if v < 64 or v % 64:
        raise SDCError(f"SDCOMP_TILE={raw!r} must be a multiple of 64, at least 64")
    return v


def taef2_weight_files(directory: str | Path | None = None) -> tuple[Path, Path]:
    """(encoder, decoder) weight files of a TAEF2 folder, or a one-line ModelNotFoundError naming the fix."""
    directory = Path(directory) if directory is not None else default_taef2_dir()
    files = (directory / TAEF2_ENCODER, directory / TAEF2_DECODER)
    for f in files:
        if not f.is_file():
            raise ModelNotFoundError(
                f"TAEF2 weights not found: looked for {f}; fix: download {f.name} from "
                f"https://github.com/madebyollin/taesd into that folder, set SDCOMP_TAEF2_DIR, or pass --model DIR")
    return files


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers on port 443 (and HF_HUB_OFFLINE is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _expand(spec: str) -> Path:
    try:
        return Path(spec).expanduser()
    except RuntimeError:  # "~nosuchuser": Python cannot determine that home directory
        user = spec[1:].split("/", 1)[0]
        raise ModelNotFoundError(f"model '{spec[:80]}': no user '{user[:40]}' to expand '~{user[:40]}' for; pass a "
                                 f"full path, a Hugging Face id (e.g. {DEFAULT_SD_MODEL}) or taef2") from None


def check_model_spec(spec, from_file: bool = False) -> str:
    """A model id the loaders can take, or a one-line ModelNotFoundError.

    Accepted: ``taef2``, an existing local folder (only when given by the user, not read from a file), or a
    well-formed Hugging Face repo id (``huggingface_hub.utils.validate_repo_id``). Ids read from an .sdc
    header (``from_file=True``) may not name paths (``/``-rooted, ``~``, ``..``), so a crafted file cannot
    make the decoder load a folder of its choosing.
    """
    where = "the file's model id" if from_file else "--model"
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError(f"{where} is empty: pass a Hugging Face id, a model folder or taef2")
    shown = spec[:80] + ("..." if len(spec) > 80 else "")
    if not spec.isprintable() or spec != spec.strip():
        raise ModelNotFoundError(f"{where} {shown!r} holds control characters or surrounding spaces: pass a "
                                 f"Hugging Face id, a model folder or taef2")
    if spec == TAEF2_MODEL_ID:
        return spec
    if from_file:
        if spec.startswith(("/", "~", ".", "\\")) or ".." in spec or "\\" in spec or ":" in spec:
            raise ModelNotFoundError(f"{where} {shown!r} names a path, which a file may not choose: pass --model "
                                     f"with the folder of the weights it was made with")
    else:
        path = _expand(spec)
        try:
            if path.exists():
                return spec
        except OSError:  # e.g. a name too long for the file system
            pass
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ModelNotFoundError(f"model {shown!r} is neither an existing folder nor a valid Hugging Face id "
                                 f"(owner/name): pass e.g. {DEFAULT_SD_MODEL}, a diffusers SD1.x folder, a TAEF2 "
                                 f"folder or taef2") from None
    return spec


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, worked out as huggingface_hub does (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def sd_cached(repo: str = DEFAULT_SD_MODEL) -> bool:
    """True when the hub cache holds a snapshot of ``repo``'s VAE (what ``--model auto`` would load offline)."""
    snaps = _hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
    try:
        return any((s / "vae" / "config.json").is_file() for s in snaps.iterdir())
    except OSError:
        return False


def taef2_dir_of(spec: str | None) -> Path | None:
    """The TAEF2 weights folder a model spec names, or None when it names Stable Diffusion.

    ``auto`` names SD v1.4 when its VAE is in the hub cache or the hub answers (as :func:`helpers.models.
    load_backend` decides), else TAEF2 from the default folder.
    """
    if spec in (None, "", "auto"):
        return None if sd_cached() or hub_reachable() else default_taef2_dir()
    spec = check_model_spec(spec)
    if spec == TAEF2_MODEL_ID:
        return default_taef2_dir()
    path = _expand(spec)
    if path.is_dir() and (path / TAEF2_ENCODER).exists():
        return path
    return None


def gpu_visible() -> bool:
    """A cheap guess, without importing torch, at whether ``--device auto`` would find a GPU: an NVIDIA
    driver (``/proc/driver/nvidia/version``) not hidden by ``CUDA_VISIBLE_DEVICES`` (empty or -1), or Apple
    silicon (MPS)."""
    import platform

    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = cvd is not None and cvd.strip() in ("", "-1")
    nvidia = os.path.exists("/proc/driver/nvidia/version") and not hidden
    return nvidia or (sys.platform == "darwin" and platform.machine() == "arm64")


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_runtime(runtime: str | None, taef2_dir: Path | None, device: str | None) -> str:
    """``torch`` or ``onnx`` for a ``--runtime`` choice, the resolved model (TAEF2 folder or None for SD) and
    ``--device``; a one-line SDCError when the combination cannot run."""
    runtime = runtime or "auto"
    if runtime not in RUNTIMES:
        raise SDCError(f"unknown runtime '{runtime}': use torch, onnx or auto")
    cpu = device in (None, "", "auto", "cpu")
    if runtime == "torch":
        return "torch"
    if runtime == "onnx":
        if taef2_dir is None:
            raise SDCError("--runtime onnx runs TAEF2 only and this model is Stable Diffusion: use --runtime torch "
                           "(or auto), or --model taef2")
        if not cpu:
            raise SDCError(f"--runtime onnx runs on the CPU only, not --device {device}: use --runtime torch for "
                           f"GPUs, or --device cpu")
        if not onnxruntime_available():
            raise SDCError("onnxruntime is not installed: pip install onnxruntime==1.32.0, or use --runtime torch")
        return "onnx"
    if taef2_dir is None or not cpu or (device in (None, "", "auto") and gpu_visible()):
        return "torch"
    return "onnx" if onnxruntime_available() else "torch"


def load(spec: str | None, device: str | None = "auto", runtime: str | None = "torch", purpose: str | None = None):
    """Load a backend for ``spec`` on the runtime :func:`choose_runtime` picks.

    ``purpose`` (``"encode"``, ``"decode"`` or None for both) lets the ONNX backend open only the sessions it
    needs. PyTorch backends come from :func:`helpers.models.load_backend`; ONNX ones from
    :func:`helpers.onnx_runtime.load_taef2_onnx`.
    """
    if (runtime or "auto") == "torch":
        from .models import load_backend

        return load_backend(spec, device=device)
    taef2_dir = taef2_dir_of(spec)
    if choose_runtime(runtime, taef2_dir, device) == "torch":
        from .models import load_backend

        return load_backend(spec, device=device)
    from .onnx_runtime import load_taef2_onnx

    return load_taef2_onnx(taef2_dir, purpose=purpose)
