"""Perceptual full-reference metrics: ColorVideoVDP, NVIDIA FLIP, SSIMULACRA 2, Butteraugli.

Every one loads its model/tables once per process (lazily, on first use) and raises
:class:`~helpers.errors.UnavailableError` with a one-line reason and fix when it cannot run.

Viewing condition (shared by ColorVideoVDP and FLIP): :data:`DISPLAY` = ColorVideoVDP's
``standard_fhd`` display model, a 24-inch 1920x1080 monitor, 200 cd/m^2 peak, 1000:1 contrast,
250 lux office light, seen from 0.6 m: :data:`PPD` = 37.84 pixels per degree.  Our images are
512x512 photos shown 1:1 on an ordinary desktop or laptop screen, where each pixel is big enough
to show compression artefacts; ``standard_4k`` (75 ppd) would shrink every artefact to half the
visual angle and hide exactly the low-rate failures this project must measure.  FLIP uses the
same 37.84 ppd (its default, 67 ppd, is a 0.7 m wide 4K display at 0.7 m).

* ColorVideoVDP (``cvvdp``, Mantiuk et al. 2024): image mode (a single frame), JOD units
  (10 = indistinguishable), CPU.  Runs offline: its display models, CSF tables and parameters
  are JSON files inside the package; only the separate ``cvvdp_ml`` variants download weights.
* FLIP (``flip-evaluator``, Andersson et al. 2020): LDR-FLIP on sRGB inputs, mean of the
  per-pixel error map (0 = identical, 1 = maximal).
* SSIMULACRA 2.1 (Sneyers 2022): libjxl's own ``ssimulacra2`` tool when one is found
  (``$SDCOMP_SSIMULACRA2`` or ``ssimulacra2`` on PATH, e.g. Debian >= 13 ``libjxl-devtools``),
  else the unofficial PyPI port ``ssimulacra2`` (labelled ``port`` in the settings).  Scores:
  100 = identical, 90 = visually lossless, 50 = medium, 30 = low quality, negative = very bad.
* Butteraugli: libjxl's ``butteraugli_main`` (``$SDCOMP_BUTTERAUGLI`` or PATH; Debian
  ``libjxl-devtools``).  Modern libjxl scale, *not* the 2017 ``butteraugli`` Debian package.
  Max-norm distance (``butteraugli``: 1.0 ~ just noticeable) and libjxl's 3-norm
  (``butteraugli_3n``), intensity target 80 cd/m^2 (the tool's default), one run for both.

The two command-line tools read PPM files written to a temporary folder; :func:`start_tools`
launches them without waiting so that they run on the second core while the in-process metrics
compute (see :func:`helpers.metrics.measure`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UnavailableError, import_or_unavailable
from ..errors import one_line as _one_line
from .classic import ImageLike, _pair

__all__ = [
    "DISPLAY",
    "DISPLAY_GEOMETRY",
    "PPD",
    "ToolRun",
    "butteraugli_tool",
    "cvvdp_score",
    "flip_error",
    "ssimulacra2_implementation",
    "ssimulacra2_score",
    "start_tools",
]

DISPLAY = "standard_fhd"
"""ColorVideoVDP display model used by every cvvdp score (and whose geometry gives FLIP's ppd)."""

# standard_fhd in cvvdp's vvdp_data/display_models.json
DISPLAY_GEOMETRY = {"resolution": (1920, 1080), "diagonal_size_inches": 24.0, "viewing_distance_meters": 0.6}


def _ppd(resolution: tuple[int, int], diagonal_inches: float, distance_m: float) -> float:
    """Pixels per degree at the centre of a flat display (cvvdp's display geometry formula)."""
    w, h = resolution
    width_m = diagonal_inches * 0.0254 * w / math.hypot(w, h)
    pixel_deg = math.degrees(2 * math.atan(width_m / w / 2 / distance_m))
    return 1.0 / pixel_deg


PPD = _ppd(
    DISPLAY_GEOMETRY["resolution"],
    DISPLAY_GEOMETRY["diagonal_size_inches"],
    DISPLAY_GEOMETRY["viewing_distance_meters"],
)
"""37.84 pixels per degree: the standard_fhd display seen from 0.6 m."""

CVVDP_THREADS = 1
"""torch threads while cvvdp runs: its many small 1-channel convolutions lose to threading overhead
(2 threads cost 3x the CPU time of 1 on this 2-core machine)."""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------------
# ColorVideoVDP
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cvvdp() -> Any:
    pycvvdp, torch = import_or_unavailable("ColorVideoVDP", "cvvdp==0.5.7", "pycvvdp", "torch")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pycvvdp.cvvdp(display_name=DISPLAY, quiet=True, device=torch.device("cpu"))
    except Exception as exc:
        raise UnavailableError(
            _one_line(
                f"ColorVideoVDP is unavailable: building display model {DISPLAY!r} failed "
                f"({type(exc).__name__}: {exc}); reinstall cvvdp==0.5.7"
            )
        ) from None


def cvvdp_score(ref: ImageLike, test: ImageLike) -> float:
    """ColorVideoVDP quality in JOD (10 = identical) of ``test`` against ``ref`` on :data:`DISPLAY`."""
    import torch

    a, b = _pair(ref, test)
    model = _cvvdp()
    with _torch_threads(CVVDP_THREADS), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jod, _ = model.predict(
            torch.from_numpy(np.ascontiguousarray(b)), torch.from_numpy(np.ascontiguousarray(a)), dim_order="HWC"
        )
    return float(jod)


def cvvdp_settings() -> dict[str, Any]:
    return {
        "display": DISPLAY,
        "display_description": "24-inch 1920x1080 monitor, 200 cd/m^2 peak, 1000:1, "
        "250 lux office light, seen from 0.6 m",
        "ppd": round(PPD, 3),
        "mode": "image (one frame)",
        "input": "8-bit sRGB, display-encoded",
        "device": "cpu",
        "torch_threads": CVVDP_THREADS,
    }


# ----------------------------------------------------------------------------------------------
# FLIP
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _flip() -> Any:
    return import_or_unavailable("FLIP", "flip-evaluator==1.7", "flip_evaluator")


def flip_error(ref: ImageLike, test: ImageLike) -> float:
    """Mean LDR-FLIP error (0 = identical) at :data:`PPD` pixels per degree."""
    a, b = _pair(ref, test)
    flip = _flip()
    fa = np.ascontiguousarray(a, dtype=np.float32) / np.float32(255)
    fb = np.ascontiguousarray(b, dtype=np.float32) / np.float32(255)
    _, mean, _ = flip.evaluate(
        fa, fb, "LDR", inputsRGB=True, applyMagma=False, computeMeanError=True, parameters={"ppd": float(PPD)}
    )
    return float(mean)


def flip_settings() -> dict[str, Any]:
    return {
        "mode": "LDR",
        "input": "sRGB",
        "ppd": round(PPD, 3),
        "ppd_from": f"cvvdp display {DISPLAY}",
        "pooling": "mean of the error map",
    }


# ----------------------------------------------------------------------------------------------
# command-line tools (libjxl's ssimulacra2 and butteraugli_main)
# ----------------------------------------------------------------------------------------------

SSIMULACRA2_ENV = "SDCOMP_SSIMULACRA2"
BUTTERAUGLI_ENV = "SDCOMP_BUTTERAUGLI"
TOOL_TIMEOUT_S = 120


@functools.cache
def _find_tool(env: str, name: str) -> str | None:
    path = os.environ.get(env) or shutil.which(name)
    if path and Path(path).is_file() and os.access(path, os.X_OK):
        return str(Path(path).resolve())
    return None


@functools.cache
def _tool_version(path: str) -> str:
    """The Debian package and version that installed ``path``, else the path itself."""
    try:
        owner = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True, timeout=10)
        pkg = owner.stdout.split(":", 1)[0].strip() if owner.returncode == 0 else ""
        if pkg:
            ver = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            return f"{pkg} {ver}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{path} (not from a Debian package; version not recorded)"


def _ppm(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PPM")
    return buf.getvalue()


class ToolRun:
    """One pair of images written as PPM files and the tools started on them (not yet waited for)."""

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sdcomp-metrics-")
        self.ref = Path(self._dir.name) / "ref.ppm"
        self.test = Path(self._dir.name) / "test.ppm"
        self.ref.write_bytes(_ppm(a))
        self.test.write_bytes(_ppm(b))
        self._procs: dict[str, subprocess.Popen] = {}
        self._out: dict[str, str] = {}

    def start(self, key: str, exe: str) -> None:
        if key not in self._procs:
            self._procs[key] = subprocess.Popen(
                [exe, str(self.ref), str(self.test)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )

    def output(self, key: str, what: str) -> str:
        if key not in self._out:
            proc = self._procs[key]
            try:
                out, err = proc.communicate(timeout=TOOL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise UnavailableError(
                    f"{what} ran past {TOOL_TIMEOUT_S} s on {self.ref.parent}; check the tool"
                ) from None
            if proc.returncode != 0:
                raise UnavailableError(_one_line(f"{what} failed (exit {proc.returncode}): {err.strip()[-300:]}"))
            self._out[key] = out
        return self._out[key]

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self._dir.cleanup()

    def __enter__(self) -> ToolRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_tools(a: np.ndarray, b: np.ndarray, keys) -> ToolRun:
    """Write the pair once and start every command-line tool that ``keys`` need."""
    run = ToolRun(a, b)
    if {"butteraugli", "butteraugli_3n"} & set(keys) and butteraugli_tool() is not None:
        run.start("butteraugli", butteraugli_tool())
    if "ssimulacra2" in keys and ssimulacra2_implementation() == "libjxl":
        run.start("ssimulacra2", _find_tool(SSIMULACRA2_ENV, "ssimulacra2"))
    return run


@contextlib.contextmanager
def _tool_run(a: np.ndarray, b: np.ndarray, keys, run: ToolRun | None):
    if run is not None:
        yield run
        return
    with start_tools(a, b, keys) as own:
        yield own


# ----------------------------------------------------------------------------------------------
# SSIMULACRA 2
# ----------------------------------------------------------------------------------------------


def ssimulacra2_implementation() -> str:
    """``"libjxl"`` when libjxl's ssimulacra2 tool is found, ``"port"`` for the PyPI port, else raise."""
    if _find_tool(SSIMULACRA2_ENV, "ssimulacra2"):
        return "libjxl"
    _ssimulacra2_port()
    return "port"


@functools.lru_cache(maxsize=1)
def _ssimulacra2_port() -> Any:
    try:
        from ssimulacra2 import ssimulacra2 as port
    except Exception as exc:
        raise UnavailableError(
            _one_line(
                f"SSIMULACRA 2 is unavailable: no libjxl ssimulacra2 tool (set ${SSIMULACRA2_ENV} or put it "
                f"on PATH) and the PyPI port cannot be imported ({type(exc).__name__}: {exc}); "
                "pip install ssimulacra2==0.3.0"
            )
        ) from None
    return port


def ssimulacra2_port_score(ref: ImageLike, test: ImageLike) -> float:
    """SSIMULACRA 2.1 from the unofficial PyPI port (``ssimulacra2`` 0.3.0), whatever tool is installed."""
    a, b = _pair(ref, test)
    port = _ssimulacra2_port()
    # the port's entry point takes files: give it in-memory PPMs (lossless, no compression cost)
    return float(port.compute_ssimulacra2(io.BytesIO(_ppm(a)), io.BytesIO(_ppm(b))))


def ssimulacra2_score(ref: ImageLike, test: ImageLike, run: ToolRun | None = None) -> float:
    """SSIMULACRA 2.1 score (100 = identical): libjxl's tool if found, else the PyPI port."""
    a, b = _pair(ref, test)
    if ssimulacra2_implementation() == "port":
        return ssimulacra2_port_score(a, b)
    with _tool_run(a, b, ["ssimulacra2"], run) as r:
        out = r.output("ssimulacra2", "libjxl ssimulacra2")
    try:
        return float(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UnavailableError(_one_line(f"libjxl ssimulacra2 printed no score: {out[-200:]!r}")) from None


def ssimulacra2_settings() -> dict[str, Any]:
    impl = ssimulacra2_implementation()
    if impl == "libjxl":
        exe = _find_tool(SSIMULACRA2_ENV, "ssimulacra2")
        return {"implementation": "libjxl (official)", "tool": exe, "version": _tool_version(exe)}
    return {
        "implementation": "port (unofficial PyPI ssimulacra2, numpy)",
        "version": "SSIMULACRA 2.1",
        "agreement": "vs libjxl 0.11.2 on 24 Kodak crops at ~5 KB (JPEG/WebP/AVIF/JXL): 2.5 points lower on "
        "average (0.0-8.2), same codec order in 143 of 144 pairs; JPEG q90: within 0.8",
    }


def ssimulacra2_library() -> str:
    if ssimulacra2_implementation() == "libjxl":
        return "libjxl ssimulacra2 (" + _tool_version(_find_tool(SSIMULACRA2_ENV, "ssimulacra2")) + ")"
    return f"ssimulacra2 {_version('ssimulacra2')} (unofficial port)"


# ----------------------------------------------------------------------------------------------
# Butteraugli
# ----------------------------------------------------------------------------------------------


def butteraugli_tool() -> str | None:
    return _find_tool(BUTTERAUGLI_ENV, "butteraugli_main")


def _butteraugli_required() -> str:
    exe = butteraugli_tool()
    if exe is None:
        raise UnavailableError(
            f"Butteraugli is unavailable: libjxl's butteraugli_main was not found; apt-get install libjxl-devtools "
            f"(Debian/Ubuntu) or set ${BUTTERAUGLI_ENV} to the tool"
        )
    return exe


def butteraugli_scores(ref: ImageLike, test: ImageLike, run: ToolRun | None = None) -> tuple[float, float]:
    """(max-norm distance, 3-norm) from libjxl's butteraugli_main (lower is better, 0 = identical)."""
    _butteraugli_required()
    a, b = _pair(ref, test)
    with _tool_run(a, b, ["butteraugli"], run) as r:
        out = r.output("butteraugli", "butteraugli_main")
    lines = [ln.strip() for ln in out.strip().splitlines() if ln.strip()]
    try:
        maxnorm = float(lines[0])
        pnorm = float(next(ln.split(":", 1)[1] for ln in lines if ln.startswith("3-norm")))
    except (ValueError, IndexError, StopIteration):
        raise UnavailableError(_one_line(f"butteraugli_main printed no distance: {out[-200:]!r}")) from None
    return maxnorm, pnorm


def butteraugli_settings() -> dict[str, Any]:
    exe = butteraugli_tool()
    return {
        "tool": exe,
        "version": _tool_version(exe) if exe else None,
        "intensity_target_nits": 80,
        "scale": "modern libjxl butteraugli (not the 2017 'butteraugli' package)",
        "norms": "butteraugli = max-norm distance, butteraugli_3n = 3-norm",
    }
