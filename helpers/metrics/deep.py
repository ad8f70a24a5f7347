"""Learned metrics on ImageNet backbones: LPIPS (AlexNet / VGG16) and DISTS (VGG16).

Both need torchvision's ImageNet checkpoint of their backbone.  It is looked up in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``, the file name torchvision publishes), checked against the
SHA-256 prefix in that name, and loaded strictly; a randomly initialised backbone is never used.
When the file is missing it is downloaded only where downloads are allowed (Colab, or
``SDCOMP_DOWNLOAD_WEIGHTS=1``): torchvision's own URL, its hash checked.  Otherwise the metric is
reported unavailable with the reason and the fix (:func:`lpips_status`, :func:`dists_status`).

* LPIPS -- the ``lpips`` package (Zhang et al. 2018, v0.1 linear layers shipped in the package);
  inputs scaled to [-1, 1], full resolution.
* DISTS -- the authors' ``DISTS_pytorch`` package (Ding et al. 2020); its learned alpha/beta
  weights ship inside the package (``DISTS_pytorch/weights.pt``); inputs in [0, 1], full
  resolution (no resizing).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SDCError, UnavailableError, import_or_unavailable
from ..errors import one_line as _one_line
from .classic import ImageLike, _pair

__all__ = [
    "DISTSMetric",
    "LPIPSMetric",
    "checkpoint_path",
    "dists_distance",
    "dists_status",
    "downloads_allowed",
    "lpips_distance",
    "lpips_status",
]

# net -> (torchvision weights enum name, checkpoint file name as published by torchvision)
_BACKBONES: dict[str, tuple[str, str]] = {
    "alex": ("AlexNet_Weights", "alexnet-owt-7be5be79.pth"),
    "vgg": ("VGG16_Weights", "vgg16-397923af.pth"),
    "squeeze": ("SqueezeNet1_1_Weights", "squeezenet1_1-b8a52dc0.pth"),
}
_LPIPS_BACKBONES = _BACKBONES

_MODELS: dict[tuple[str, str], Any] = {}  # (metric, checkpoint path) -> loaded model
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) whose hash matched

DOWNLOAD_ENV = "SDCOMP_DOWNLOAD_WEIGHTS"


def downloads_allowed() -> bool:
    """May a missing backbone checkpoint be downloaded?  Yes on Colab or with SDCOMP_DOWNLOAD_WEIGHTS=1."""
    flag = os.environ.get(DOWNLOAD_ENV, "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def _weights_enum(net: str) -> Any:
    import torchvision.models as tvm

    return getattr(tvm, _BACKBONES[net][0]).IMAGENET1K_V1


def checkpoint_path(net: str) -> Path:
    """Where torchvision caches the ImageNet backbone ``net`` (alex, vgg, squeeze)."""
    import torch.hub

    filename = _BACKBONES[net][1]
    with contextlib.suppress(Exception):  # else keep the published file name
        filename = Path(_weights_enum(net).url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


_checkpoint_path = checkpoint_path


def _verify_checkpoint(path: Path) -> None:
    """Check the SHA-256 prefix that torchvision puts in the checkpoint's file name."""
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    if match is None:
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise UnavailableError(
            f"backbone checkpoint {path} is corrupt (SHA-256 does not start with "
            f"{match.group(1)}); delete it and copy a complete {path.name} there"
        )
    _VERIFIED.add(key)


def _backbone_file(net: str, who: str) -> Path:
    """The verified checkpoint of ``net`` for metric ``who``; downloaded only where allowed."""
    path = checkpoint_path(net)
    if not path.is_file():
        if not downloads_allowed():
            raise UnavailableError(
                f"{who} is unavailable: the ImageNet backbone {path.name} is not in the torch hub cache "
                f"{path.parent} and downloads are off here; copy it there (or set TORCH_HOME), or set "
                f"{DOWNLOAD_ENV}=1 where the internet is reachable"
            )
        import torch.hub

        url = _weights_enum(net).url
        match = re.search(r"-([a-f0-9]+)\.", path.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=True)
        except Exception as exc:
            raise UnavailableError(
                _one_line(
                    f"{who} is unavailable: downloading {url} failed ({type(exc).__name__}: {exc}); "
                    f"copy {path.name} into {path.parent} by hand"
                )
            ) from None
    try:
        _verify_checkpoint(path)
    except UnavailableError as exc:
        raise UnavailableError(f"{who} is unavailable: {exc}") from None
    return path


def _load_backbone(backbone: Any, state: dict[str, Any], path: Path) -> None:
    """Copy torchvision ``features.N.*`` weights into lpips' ``sliceK.N.*`` modules, strictly."""
    target = backbone.state_dict()
    new_state = {}
    for key, value in target.items():
        match = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", key)
        src = f"features.{match.group(1)}.{match.group(2)}" if match else None
        if src is None or src not in state or tuple(state[src].shape) != tuple(value.shape):
            raise UnavailableError(
                f"backbone checkpoint {path} does not match the network (no {src or key} of shape "
                f"{tuple(value.shape)}); replace it with torchvision's {path.name}"
            )
        new_state[key] = state[src]
    backbone.load_state_dict(new_state, strict=True)


def device() -> Any:
    """Where the learned metrics run: CUDA when available (Colab), else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _freeze(model: Any) -> Any:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device())


# ----------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------


def _load_lpips(net: str) -> Any:
    """Return the cached ``lpips.LPIPS`` model for ``net``; raise UnavailableError if impossible."""
    if net not in _BACKBONES:
        raise SDCError(f"unknown LPIPS network {net!r}; use one of: {', '.join(_BACKBONES)}")
    who = f"LPIPS ({net})"
    lpips, torch = import_or_unavailable(who, "lpips==0.1.4 torch", "lpips", "torch")
    key = ("lpips-" + net, str(checkpoint_path(net)))
    if key in _MODELS:
        return _MODELS[key]
    path = _backbone_file(net, who)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # pnet_rand=True: build the backbone without touching the network; the real
            # ImageNet weights are then loaded strictly from the local checkpoint.
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        _load_backbone(model.net, state, path)
    except UnavailableError as exc:
        raise UnavailableError(f"{who} is unavailable: {exc}") from None
    except Exception as exc:
        raise UnavailableError(
            _one_line(
                f"{who} is unavailable: loading {path} failed ({type(exc).__name__}: {exc}); "
                "replace the checkpoint with torchvision's original file"
            )
        ) from None
    _MODELS[key] = _freeze(model)
    return model


def lpips_status(net: str = "alex") -> tuple[bool, str]:
    """``(True, where the backbone came from)`` if LPIPS can run here, else ``(False, one-line reason)``."""
    try:
        _load_lpips(net)
    except SDCError as exc:
        return False, _one_line(str(exc))
    return True, f"LPIPS ({net}) loaded from {checkpoint_path(net)}"


def _to_tensor(x: np.ndarray, scale: float, offset: float, model: Any = None) -> Any:
    import torch

    t = torch.from_numpy(x.astype(np.float32) * scale + offset).permute(2, 0, 1)[None].contiguous()
    if model is not None:
        t = t.to(next(model.parameters()).device)
    return t


class LPIPSMetric:
    """LPIPS distance (lower is more similar) with a model loaded once per process.

    Raises :class:`UnavailableError` on construction when the backbone is not available.
    """

    def __init__(self, net: str = "alex") -> None:
        self.net = net
        self.model = _load_lpips(net)

    def __call__(self, ref: ImageLike, test: ImageLike) -> float:
        import torch

        a, b = _pair(ref, test)
        with torch.no_grad():  # lpips expects [-1, 1]
            return float(
                self.model(
                    _to_tensor(a, 1 / 127.5, -1.0, self.model), _to_tensor(b, 1 / 127.5, -1.0, self.model)
                ).item()
            )


def lpips_distance(ref: ImageLike, test: ImageLike, net: str = "alex") -> float:
    """LPIPS distance between two images; raises :class:`UnavailableError` when offline."""
    return LPIPSMetric(net)(ref, test)


# ----------------------------------------------------------------------------------------------
# DISTS
# ----------------------------------------------------------------------------------------------

DISTS_PACKAGE = "DISTS_pytorch"


def _dists_weights_file(module_file: str) -> Path:
    """DISTS' learned alpha/beta: inside the package (the wheel also copies it to sys.prefix)."""
    for path in (Path(module_file).with_name("weights.pt"), Path(sys.prefix) / "weights.pt"):
        if path.is_file():
            return path
    raise UnavailableError(
        f"DISTS is unavailable: the package's alpha/beta weights (weights.pt) are missing beside {module_file}; "
        f"reinstall it: pip install --force-reinstall {DISTS_PACKAGE}==0.1"
    )


def _load_dists() -> Any:
    who = "DISTS"
    torch, DISTS_pt = import_or_unavailable(who, f"{DISTS_PACKAGE}==0.1", "torch", "DISTS_pytorch.DISTS_pt")
    key = ("dists", str(checkpoint_path("vgg")))
    if key in _MODELS:
        return _MODELS[key]
    path = _backbone_file("vgg", who)
    weights_file = _dists_weights_file(DISTS_pt.__file__)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # DISTS builds torchvision's vgg16(pretrained=True): torchvision reads the verified
            # checkpoint above from the same hub cache (it is present, so nothing is downloaded)
            # and loads it strictly.  load_weights=False: alpha/beta are read below from the package.
            model = DISTS_pt.DISTS(load_weights=False)
        learned = torch.load(weights_file, map_location="cpu", weights_only=True)
        for name in ("alpha", "beta"):
            param = getattr(model, name)
            if tuple(learned[name].shape) != tuple(param.shape):
                raise ValueError(f"{name} has shape {tuple(learned[name].shape)}, expected {tuple(param.shape)}")
            param.data = learned[name].to(param.dtype)
    except Exception as exc:
        raise UnavailableError(
            _one_line(
                f"{who} is unavailable: loading {path} / {weights_file} failed "
                f"({type(exc).__name__}: {exc}); replace the checkpoint with torchvision's original file"
            )
        ) from None
    _MODELS[key] = _freeze(model)
    return model


def dists_status() -> tuple[bool, str]:
    """``(True, where the backbone came from)`` if DISTS can run here, else ``(False, one-line reason)``."""
    try:
        _load_dists()
    except SDCError as exc:
        return False, _one_line(str(exc))
    return True, f"DISTS loaded from {checkpoint_path('vgg')}"


class DISTSMetric:
    """DISTS distance (0 = identical, lower is more similar), model loaded once per process."""

    def __init__(self) -> None:
        self.model = _load_dists()

    def __call__(self, ref: ImageLike, test: ImageLike) -> float:
        import torch

        a, b = _pair(ref, test)
        with torch.no_grad():  # DISTS expects [0, 1]
            return float(
                self.model(_to_tensor(a, 1 / 255.0, 0.0, self.model), _to_tensor(b, 1 / 255.0, 0.0, self.model)).item()
            )


def dists_distance(ref: ImageLike, test: ImageLike) -> float:
    """DISTS distance between two images; raises :class:`UnavailableError` without the VGG16 backbone."""
    return DISTSMetric()(ref, test)
