"""TAEF2 facts every runtime shares, without torch: weight files, model id, latent channels, quantization span,
tile side and the decoder's streaming threshold.

:mod:`helpers.backends.taef2` (PyTorch), :mod:`helpers.backends.onnx_runtime` (ONNX Runtime) and
:mod:`helpers.backends.resolve` (``--model`` / ``--runtime``) read them from here: one definition per fact.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..errors import ModelNotFoundError, SDCError

TAEF2_ENCODER = "taef2_encoder.pth"
TAEF2_DECODER = "taef2_decoder.pth"
#: the encoder of the TAEF2 folder itself (``--encoder stock``)
STOCK_ENCODER = "stock"
#: the published TAEF2 decoder's weights fingerprint (:func:`helpers.backends.torch_base.weights_fingerprint`): what
#: its shipped encoder variants and tc tables were trained for
TAEF2_FINGERPRINT = 0xF75BBA2B
#: encoders for the stock TAEF2 decoder shipped in ``helpers/data`` (name -> file: a float16 TAEF2 encoder state
#: dict with its licence record beside it). Files they write decode with the stock decoder and carry its
#: fingerprint: the encoder is no part of the format. A coding method names the encoder it prefers
#: (``helpers.methods.base.LatentMethod.encoder``); ``--encoder`` overrides it. ``tc``: trained for the transform
#: coder (``python -m helpers.methods.tc.enc_train``). Each was trained against one decoder (its fingerprint, see
#: :func:`helpers.backends.torch_base.weights_fingerprint`) and is offered only with that decoder.
ENCODER_VARIANTS = {"tc": ("taef2_tc_encoder.pth", TAEF2_FINGERPRINT)}
ENCODER_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
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


def encoder_names(fingerprint: int | None = None) -> tuple[str, ...]:
    """The TAEF2 encoders ``--encoder`` may name: ``stock`` and the shipped variants (with ``fingerprint``: those
    trained for that decoder)."""
    return (STOCK_ENCODER, *(k for k, (_, fp) in ENCODER_VARIANTS.items() if fingerprint in (None, fp)))


def encoder_variant_file(name: str, fingerprint: int | None = None) -> Path:
    """The weight file of a shipped encoder variant, or a one-line error: unknown name, missing file, or (with the
    decoder's ``fingerprint``) a variant trained for another decoder."""
    if name not in ENCODER_VARIANTS:
        raise SDCError(f"unknown TAEF2 encoder '{name}': choose one of {', '.join(encoder_names())}")
    file, trained_for = ENCODER_VARIANTS[name]
    if fingerprint is not None and fingerprint != trained_for:
        raise SDCError(
            f"the '{name}' TAEF2 encoder was trained for the stock TAEF2 decoder ({trained_for:08x}), this model's "
            f"decoder is {fingerprint:08x}: pass --encoder stock"
        )
    path = ENCODER_DATA_DIR / file
    if not path.is_file():
        raise ModelNotFoundError(
            f"the '{name}' TAEF2 encoder {path} is missing: reinstall sdcomp-notebooks (the file ships in "
            f"helpers/data), or pass --encoder stock"
        )
    return path


def encoder_digest(name: str) -> str | None:
    """CRC-32 (8 hex digits) of a shipped encoder variant's weight file, None for ``stock`` and unknown names or a
    missing file: what a benchmark record stores to notice that the weights behind a name changed (the benchmark
    asks once per record: the file is read once per size and modification time)."""
    if name not in ENCODER_VARIANTS:
        return None
    path = ENCODER_DATA_DIR / ENCODER_VARIANTS[name][0]
    if not path.is_file():
        return None
    st = path.stat()
    return _file_crc(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_crc(path: str, size: int, mtime_ns: int) -> str:
    import zlib

    return f"{zlib.crc32(Path(path).read_bytes()):08x}"


def encoder_of_file(path: str | Path) -> str:
    """The encoder name of an encoder weight file (:func:`taef2_weight_files`' first entry)."""
    name = Path(path).name
    return next((k for k, (f, _) in ENCODER_VARIANTS.items() if f == name), STOCK_ENCODER)


def taef2_weight_files(directory: str | Path | None = None, encoder: str = STOCK_ENCODER) -> tuple[Path, Path]:
    """(encoder, decoder) weight files of a TAEF2 folder, or a one-line ModelNotFoundError naming the fix;
    ``encoder``: ``stock`` (the folder's) or a shipped variant (:data:`ENCODER_VARIANTS`) for the folder's decoder."""
    directory = Path(directory) if directory is not None else default_taef2_dir()
    files = (directory / TAEF2_ENCODER, directory / TAEF2_DECODER)
    for f in files:
        if not f.is_file():
            raise ModelNotFoundError(
                f"TAEF2 weights not found: looked for {f}; fix: download {f.name} from "
                f"https://github.com/madebyollin/taesd into that folder, set SDCOMP_TAEF2_DIR, or pass --model DIR"
            )
    if encoder != STOCK_ENCODER:
        files = (encoder_variant_file(encoder), files[1])
    return files
