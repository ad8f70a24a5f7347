"""Which model and which runtime: resolving ``--model`` and ``--runtime`` without importing torch.

The command line resolves a model spec here first and imports a framework only for the runtime it picks:

* ``torch``: :mod:`helpers.backends.load` (PyTorch; SD and TAEF2, any device). Notebooks, SD and GPUs use it.
* ``onnx``: :mod:`helpers.backends.onnx_runtime` (ONNX Runtime on the CPU; TAEF2 only). It never imports torch once
  the exported graphs are in the cache; the first run for a set of weights exports them with torch.
* ``auto``: ONNX Runtime for TAEF2 on the CPU (``--device cpu``, or ``auto`` with no GPU visible) when
  ``onnxruntime`` is installed, PyTorch otherwise.

Everything in this module is light (standard library only, plus ``huggingface_hub``'s id check for hub ids),
so ``python -m helpers encode/decode`` with TAEF2 starts without torch, diffusers or transformers. TAEF2's own
facts (weight files, model id, tile side) live in :mod:`helpers.backends.taef2_spec`.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

from ..errors import ModelNotFoundError, SDCError
from .taef2_spec import TAEF2_ENCODER, TAEF2_MODEL_ID, default_taef2_dir

DEFAULT_SD_MODEL = "CompVis/stable-diffusion-v1-4"
TINY_MODEL_ID = "tiny-random-sd"
#: The full-size SD v1.4 stand-in with random weights (helpers.backends.sd14): its folder's model id.
STANDIN_MODEL_ID = "sd-v1-4-standin-random"
RUNTIMES = ("auto", "torch", "onnx")


def cache_root() -> Path:
    """The user cache folder (ONNX graphs, the SD v1.4 stand-in, benchmark sweeps): ``$SDCOMP_CACHE``, else
    ``$XDG_CACHE_HOME/sdcomp``, else ``~/.cache/sdcomp``."""
    env = os.environ.get("SDCOMP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sdcomp"


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers on port 443 (and HF_HUB_OFFLINE is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def expand_path(spec: str) -> Path:
    """``spec`` as a path with ``~`` expanded; an unknown ``~user`` is a one-line :class:`ModelNotFoundError`."""
    try:
        return Path(spec).expanduser()
    except RuntimeError:  # "~nosuchuser": Python cannot determine that home directory
        user = spec[1:].split("/", 1)[0]
        raise ModelNotFoundError(
            f"model '{spec[:80]}': no user '{user[:40]}' to expand '~{user[:40]}' for; pass a "
            f"full path, a Hugging Face id (e.g. {DEFAULT_SD_MODEL}) or taef2"
        ) from None


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
        raise ModelNotFoundError(
            f"{where} {shown!r} holds control characters or surrounding spaces: pass a "
            f"Hugging Face id, a model folder or taef2"
        )
    if spec == TAEF2_MODEL_ID:
        return spec
    if from_file:
        if spec.startswith(("/", "~", ".", "\\")) or ".." in spec or "\\" in spec or ":" in spec:
            raise ModelNotFoundError(
                f"{where} {shown!r} names a path, which a file may not choose: pass --model "
                f"with the folder of the weights it was made with"
            )
    else:
        path = expand_path(spec)
        try:
            if path.exists():
                return spec
        except OSError:  # e.g. a name too long for the file system
            pass
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ModelNotFoundError(
            f"model {shown!r} is neither an existing folder nor a valid Hugging Face id "
            f"(owner/name): pass e.g. {DEFAULT_SD_MODEL}, a diffusers SD1.x folder, a TAEF2 "
            f"folder or taef2"
        ) from None
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

    ``auto`` names SD v1.4 when its VAE is in the hub cache or the hub answers (as :func:`helpers.backends.load.
    load_backend` decides), else TAEF2 from the default folder.
    """
    if spec in (None, "", "auto"):
        return None if sd_cached() or hub_reachable() else default_taef2_dir()
    spec = check_model_spec(spec)
    if spec == TAEF2_MODEL_ID:
        return default_taef2_dir()
    path = expand_path(spec)
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
            raise SDCError(
                "--runtime onnx runs TAEF2 only and this model is Stable Diffusion: use --runtime torch "
                "(or auto), or --model taef2"
            )
        if not cpu:
            raise SDCError(
                f"--runtime onnx runs on the CPU only, not --device {device}: use --runtime torch for "
                f"GPUs, or --device cpu"
            )
        if not onnxruntime_available():
            raise SDCError("onnxruntime is not installed: pip install onnxruntime==1.32.0, or use --runtime torch")
        return "onnx"
    if taef2_dir is None or not cpu or (device in (None, "", "auto") and gpu_visible()):
        return "torch"
    return "onnx" if onnxruntime_available() else "torch"
