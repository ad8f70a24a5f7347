"""TAEF2 facts every runtime shares, without torch: weight files, model id, latent channels, quantization span,
tile side and the decoder's streaming threshold.

:mod:`helpers.backends.taef2` (PyTorch), :mod:`helpers.backends.onnx_runtime` (ONNX Runtime) and
:mod:`helpers.backends.resolve` (``--model`` / ``--runtime``) read them from here: one definition per fact.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelNotFoundError, SDCError

TAEF2_ENCODER = "taef2_encoder.pth"
TAEF2_DECODER = "taef2_decoder.pth"
TAEF2_MODEL_ID = "taef2"
TAEF2_LATENT_CHANNELS = 32
#: TAEF2 latents sit within about +-3 (rare peaks to +-5): [-4, 4] maps to [0, 1]; measured on kodim23,
#: span 8 gives 32.45 dB after 8-bit rounding vs 32.33 dB for the TAESD convention span 6.
TAEF2_QUANT_SPAN = 8.0

#: Core tile side (pixels) for TAEF2's tiled encode/decode; ``SDCOMP_TILE`` overrides it. Chosen by measurement
#: (scripts/bench_large_photo.py): time per megapixel vs peak memory on this project's CPU machine.
TAEF2_TILE = 1024

#: latent positions (h x w) above which the decoder's global part runs streamed: 65,536 (a 2048x2048 image),
#: where the untiled GroupNorm branch (256 channels at latent resolution) needs 64 MiB per activation; at the
#: 8192x8192 cap it needs 1 GiB each, several alive at once. Files up to this size decode exactly as before.
STREAM_GLOBAL_ABOVE = 256 * 256
#: receptive radius of the streamed pieces (:func:`helpers.backends.taef2.split_global_decoder`): the head
#: (clamp, 3x3 conv, ReLU) 1 latent sample, a block's local part (three 3x3 convs; its GroupNorm branch is
#: pointwise once the statistics are known) 3
HEAD_HALO, BLOCK_HALO = 1, 3


def default_taef2_dir() -> Path:
    """Where TAEF2 weights are looked for by default: $SDCOMP_TAEF2_DIR, else ../shared/weights/taef2."""
    env = os.environ.get("SDCOMP_TAEF2_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "weights" / "taef2"


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
                f"https://github.com/madebyollin/taesd into that folder, set SDCOMP_TAEF2_DIR, or pass --model DIR"
            )
    return files
