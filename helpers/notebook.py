"""What every notebook's first code cell does once ``helpers`` is importable (see notebooks/README.md).

The cell itself only clones and installs the repository on Colab (``helpers`` cannot be imported before that)
and puts this checkout on ``sys.path``; then :func:`setup` installs the other dependencies on Colab (read from
``pyproject.toml``, pins dropped, torch left alone), fetches the Kodak images and reports versions.
Only the standard library is imported here: on Colab this runs before the dependencies are installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from . import __version__

ROOT = Path(__file__).resolve().parents[1]
KODAK_URL = "http://r0k.us/graphics/kodak/kodak/kodim{:02d}.png"
KODAK_DIR = "../data/kodak"  # relative to notebooks/: the clone's data/ folder (not part of the repository)
PREINSTALLED = ("torch", "torchvision")  # Colab ships its own (CUDA) builds: never replace them
_installed = False


def colab_requirements(pyproject: str | Path = ROOT / "pyproject.toml") -> list[str]:
    """The project's runtime dependencies as pip arguments, without version pins (Colab keeps what it has when
    it is recent enough) and without :data:`PREINSTALLED`."""
    import tomllib

    with open(pyproject, "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    names = [re.match(r"\s*([A-Za-z0-9._-]+(\[[^\]]*\])?)", d).group(1) for d in deps]
    return [n for n in names if n.split("[")[0].lower() not in PREINSTALLED]


def fetch_kodak(folder: str | Path = KODAK_DIR) -> Path:
    """Download the 24 Kodak test images into ``folder`` (those already there are kept); offline, say so once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 25):
        f = folder / f"kodim{i:02d}.png"
        if not f.exists():
            try:
                urllib.request.urlretrieve(KODAK_URL.format(i), f)
            except OSError as exc:
                print(f"could not download {f.name} ({exc}): upload your own images to data/ instead")
                break
    return folder


def setup(colab: bool) -> None:
    """Colab: pip-install the dependencies (once per kernel), fetch Kodak into ``../data/kodak`` and make it
    the default ``SDCOMP_DATA``. Everywhere: print the versions."""
    global _installed
    if colab:
        if not _installed:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", *colab_requirements()], check=True)
            _installed = True
        os.environ.setdefault("SDCOMP_DATA", str(fetch_kodak(KODAK_DIR)))
    print(f"helpers {__version__} from {ROOT}, Python {sys.version.split()[0]}, Colab: {colab}")


def load_model(model: str, fallback: str, device: str = "auto"):
    """The notebooks' model cell: load ``model`` (hub id, folder, ``taef2`` or ``auto``), falling back to
    ``fallback`` when it cannot be loaded (offline), and print what was loaded and why, with a loud warning for
    the tiny random SD pipeline of CI. Returns the backend."""
    from .backends.load import load_with_fallback

    backend, why = load_with_fallback(model, fallback, device=device)
    if why:
        print(f"Could not load {model!r}:\n  {why}\n-> fell back to {fallback!r}.")
    print(
        f"{backend.describe()}: {backend.latent_channels} latent channels, {backend.downsample}x downsampling, "
        f"loaded in {backend.load_seconds:.1f} s"
    )
    if backend.random_weights:
        size = "tiny" if backend.model_id == "tiny-random-sd" else "full-size SD v1.4 architecture with"
        print(f"WARNING: {size} RANDOM SD weights: the code path is real, the pictures and numbers are meaningless.")
    return backend
