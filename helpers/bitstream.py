"""The ``.sdc`` file format (version 1): a small self-describing header, the payload and a CRC.

Layout (little-endian)::

    offset size  field
    0      4     magic b"SDC\\x1a"
    4      1     version (1)
    5      1     flags: bit0 = UNet denoising requested at decode, bit1 = dithered
    6      1     latent method: 0 = libimagequant RGBA palette, 1 = latent k-means palette, 2 = raw 8-bit
                 latents, 3 = transform coding (helpers.methods.tc; coder 3 = range, K = 0, the payload
                 carries its own step and table id; the quantization span is unused)
    7      1     lossless coder id: 0 = zlib, 1 = arith, 2 = lzma (helpers.methods.palette.entropy), 3 = range (tc)
    8      1     image policy: 0 = none, 1 = pad8 (pad to a multiple of 8, crop after decode), 2 = crop512
    9      1     model id length n
    10     n     model id (utf-8): hub id, directory name or "taef2"
    ..     4     weights fingerprint (CRC32 of a sample of the decoder weights)
    ..     2+2   output image width, height (after policy, before padding)
    ..     1+2+2 latent channels C, latent height, latent width
    ..     4     quantization span (float32)
    ..     2     palette size K (0 for raw latents)
    ..     4+2   denoise strength (float32) and steps (uint16); present only when flag bit0 is set
    ..     4     payload length
    ..     ...   payload (coder output)
    end-4  4     CRC32 of everything before it

Every byte above counts in reported sizes; the fixed part is 37 bytes plus the model id (42 for "taef2").

What a reader accepts (checked by :func:`unpack` before anything is allocated or a model is loaded;
:func:`pack` applies the same checks, so the encoder never writes a file the reader refuses):

* image width and height >= 1 and width x height <= ``Limits.max_pixels`` (default 8192 x 8192 =
  67,108,864 pixels; ``SDCOMP_MAX_PIXELS`` or the CLI's ``--max-pixels`` change it);
* latent height/width >= 1 and consistent with the image size, the policy and a downsampling factor
  ``d`` in 4, 8, ..., 64 (pad8: ``ceil(size / d)``; none: ``size / d``; crop512: 512 / d), and at most
  one latent value per pixel of the cap (C x h x w <= max_pixels); the loaded model's own factor is
  checked again by :func:`check_geometry` before it runs;
* a finite quantization span in (0, ``MAX_QUANT_SPAN``];
* denoise strength in (0, 1] and steps in 1..``Limits.max_denoise_steps`` when the denoise flag is set;
* method-specific fields, checked by the registered method's ``check`` (palette size K in
  1..min(``Limits.max_colors``, latent positions), 2..256 and 4 channels for libimagequant, K = 0 for
  raw latents, the payload's minimum length per coder, ...);
* payload decoders decompress at most the exact number of bytes the header implies.

The container imports no method code: :mod:`helpers.methods.registry` hands it the methods
(:func:`register_method`: name, id, coder ids, header checks, payload decoder; see :class:`MethodFormat`),
and a reader looks them up by the header's method byte. New format versions register a parser with
:func:`register_version`.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BitstreamError

MAGIC = b"SDC\x1a"
VERSION = 1
FLAG_DENOISE = 1
FLAG_DITHER = 2
POLICIES = {"none": 0, "pad8": 1, "crop512": 2}
POLICY_NAMES = {v: k for k, v in POLICIES.items()}

#: Default pixel cap for decoded (and encoded) images: 8192 x 8192. ``SDCOMP_MAX_PIXELS`` overrides it.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Largest palette a file may announce (the encoder's ``--colors`` / ``--max-colors`` share it).
MAX_COLORS = 4096
#: Largest UNet step count a file may ask for (the schedulers train on 1000 timesteps).
MAX_DENOISE_STEPS = 1000
#: Largest quantization span (raw latents lie in +-span/2); real models use 8 (TAEF2) and 46.4 (SD).
MAX_QUANT_SPAN = 1024.0
#: Downsampling factors a header may imply (the model's own factor is checked before decoding).
DOWNSAMPLE_FACTORS = (4, 8, 16, 32, 64)
MAX_SIDE = 65535  # the header stores sizes as uint16


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise BitstreamError(
            f"{name}={raw!r} is not an integer: unset it or give a pixel count such as 67108864"
        ) from None
    if value < 1:
        raise BitstreamError(f"{name}={raw!r} must be a positive pixel count")
    return value


@dataclass(frozen=True)
class Limits:
    """What a reader (and the encoder) accepts. ``Limits.default()`` reads ``SDCOMP_MAX_PIXELS``."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_colors: int = MAX_COLORS
    max_denoise_steps: int = MAX_DENOISE_STEPS

    @classmethod
    def default(cls, max_pixels: int | None = None) -> Limits:
        return cls(
            max_pixels=max_pixels if max_pixels is not None else _env_int("SDCOMP_MAX_PIXELS", DEFAULT_MAX_PIXELS)
        )


@dataclass
class Header:
    method: str
    coder: str
    model_id: str
    fingerprint: int
    width: int
    height: int
    channels: int
    latent_height: int
    latent_width: int
    quant_span: float
    colors: int
    policy: str = "pad8"
    dithered: bool = True
    denoise: bool = False
    denoise_strength: float = 0.0
    denoise_steps: int = 0
    version: int = field(default=VERSION, compare=False)

    @property
    def latent_positions(self) -> int:
        return self.latent_height * self.latent_width


# ------------------------------------------------------------------------------------------
# latent coding methods: registered by helpers.methods.registry (the container imports no method code)
# ------------------------------------------------------------------------------------------


class MethodFormat(Protocol):
    """A latent coding method as the container sees it (:class:`helpers.methods.base.LatentMethod` is one).

    ``check(header, payload_len, limits)`` raises :class:`BitstreamError` for any own field the method cannot
    decode (called after the generic checks, before any allocation); ``unpack(header, payload, limits)``
    returns ``(palette or None, indices or None, stored latent (C, h, w))`` and must bound its own work and
    memory by the header's (already checked) sizes. ``coders``: coder name -> header id of the coders it writes;
    ``versions``: format versions that may carry it.
    """

    name: str
    id: int
    coders: Mapping[str, int]
    versions: frozenset

    def check(self, header: Header, payload_len: int, limits: Limits) -> None: ...

    def unpack(self, header: Header, payload: bytes, limits: Limits) -> tuple: ...


METHOD_SPECS: dict[str, MethodFormat] = {}  # name -> method, filled by register_method
METHODS: dict[str, int] = {}  # name -> header id
METHOD_NAMES: dict[int, str] = {}  # header id -> name
CODER_IDS: dict[str, int] = {}  # coder name -> header id, over every registered method
CODER_NAMES: dict[int, str] = {}


def register_method(spec: MethodFormat) -> MethodFormat:
    """Teach the container a latent coding method (:mod:`helpers.methods.registry` registers the shipped ones);
    method and coder ids are stable header values and may never be reused for something else."""
    if not 0 <= spec.id <= 255:
        raise ValueError(f"method id must fit a byte, got {spec.id}")
    if spec.id in METHOD_NAMES and METHOD_NAMES[spec.id] != spec.name:
        raise ValueError(f"method id {spec.id} is taken by '{METHOD_NAMES[spec.id]}'")
    for coder, cid in spec.coders.items():
        if not 0 <= cid <= 255 or CODER_IDS.get(coder, cid) != cid or CODER_NAMES.get(cid, coder) != coder:
            raise ValueError(f"coder '{coder}' id {cid} conflicts with the registered coders {CODER_IDS}")
    METHOD_SPECS[spec.name] = spec
    METHODS[spec.name] = spec.id
    METHOD_NAMES[spec.id] = spec.name
    for coder, cid in spec.coders.items():
        CODER_IDS[coder] = cid
        CODER_NAMES[cid] = coder
    return spec


def unregister_method(name: str) -> None:
    """Forget a method (tests that register a toy one); its coders stay known."""
    spec = METHOD_SPECS.pop(name)
    METHODS.pop(name, None)
    METHOD_NAMES.pop(spec.id, None)


def _spec(name: str) -> MethodFormat:
    if not METHOD_SPECS:  # a programming error, not a bad file: nothing registered the shipped methods
        raise BitstreamError(
            "no latent coding method is registered: import helpers.methods.registry "
            "(helpers.codec does) before reading or writing .sdc files"
        )
    return METHOD_SPECS[name]


# ------------------------------------------------------------------------------------------
# generic checks
# ------------------------------------------------------------------------------------------


def _latent_side_ok(policy: str, size: int, latent: int, d: int) -> bool:
    if policy == "pad8":
        return latent == -(-size // d)
    if policy == "none":
        return latent * d == size
    if policy == "crop512":
        return size == 512 and latent * d == 512
    return False


def downsample_factors(h: Header) -> list[int]:
    """The downsampling factors under which the header's latent size matches its image size and policy."""
    return [
        d
        for d in DOWNSAMPLE_FACTORS
        if _latent_side_ok(h.policy, h.height, h.latent_height, d)
        and _latent_side_ok(h.policy, h.width, h.latent_width, d)
    ]


def check_header(h: Header, payload_len: int, limits: Limits | None = None) -> None:
    """Every check a reader makes on a parsed header (see the module docstring); one-line BitstreamError."""
    limits = limits or Limits.default()
    fix = "re-encode or re-copy the file"
    if not METHOD_SPECS:
        _spec(h.method)
    if h.method not in METHOD_SPECS:
        raise BitstreamError(f"unsupported .sdc content (latent method '{h.method}'): upgrade sdcomp-notebooks")
    if h.version not in METHOD_SPECS[h.method].versions:
        raise BitstreamError(f"corrupted .sdc header: method '{h.method}' cannot appear in format version {h.version}")
    if h.policy not in POLICIES:
        raise BitstreamError(f"unsupported .sdc content (image policy '{h.policy}'): upgrade sdcomp-notebooks")
    if not 1 <= h.channels <= 255:
        raise BitstreamError(f"corrupted .sdc header: {h.channels} latent channels; {fix}")
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        raise BitstreamError(
            f"corrupted .sdc header: image size {h.width}x{h.height} (each side must be 1..{MAX_SIDE}); {fix}"
        )
    if h.width * h.height > limits.max_pixels:
        raise BitstreamError(
            f"image size {h.width}x{h.height} = {h.width * h.height:,} pixels exceeds the pixel cap "
            f"of {limits.max_pixels:,}: if the file is trusted, raise the cap with --max-pixels "
            f"or SDCOMP_MAX_PIXELS"
        )
    if not (1 <= h.latent_height <= MAX_SIDE and 1 <= h.latent_width <= MAX_SIDE):
        raise BitstreamError(f"corrupted .sdc header: latent size {h.latent_height}x{h.latent_width}; {fix}")
    if h.channels * h.latent_positions > limits.max_pixels:
        raise BitstreamError(
            f"corrupted .sdc header: {h.channels}x{h.latent_height}x{h.latent_width} latent values "
            f"exceed the pixel cap of {limits.max_pixels:,} (one value per pixel at most); {fix}"
        )
    if not downsample_factors(h):
        raise BitstreamError(
            f"corrupted .sdc header: a {h.latent_height}x{h.latent_width} latent cannot decode to "
            f"a {h.width}x{h.height} image with policy {h.policy}; {fix}"
        )
    if not (math.isfinite(h.quant_span) and 0 < h.quant_span <= MAX_QUANT_SPAN):
        raise BitstreamError(
            f"corrupted .sdc header: quantization span {h.quant_span!r} is not a finite number in "
            f"(0, {MAX_QUANT_SPAN:g}]; {fix}"
        )
    if h.denoise:
        if not (math.isfinite(h.denoise_strength) and 0 < h.denoise_strength <= 1):
            raise BitstreamError(
                f"corrupted .sdc header: denoise strength {h.denoise_strength!r} is not in (0, 1]; {fix}"
            )
        if not 1 <= h.denoise_steps <= limits.max_denoise_steps:
            raise BitstreamError(
                f"corrupted .sdc header: {h.denoise_steps} denoise steps (allowed 1..{limits.max_denoise_steps}); {fix}"
            )
    if not payload_len >= 0:
        raise BitstreamError(f"corrupted .sdc header: payload length {payload_len}; {fix}")
    _spec(h.method).check(h, payload_len, limits)


def check_geometry(h: Header, downsample: int) -> None:
    """The loaded model's downsampling factor must be one under which the latent matches the image size."""
    if downsample not in downsample_factors(h):
        raise BitstreamError(
            f"this file's {h.latent_height}x{h.latent_width} latent does not match its "
            f"{h.width}x{h.height} image for a model with {downsample}x downsampling "
            f"(policy {h.policy}): corrupted file or wrong --model"
        )


def decode_payload(h: Header, payload: bytes, limits: Limits | None = None):
    """Hand a payload whose header passed :func:`check_header` to its registered method: (palette, indices,
    stored latent) -- the 8-bit latent of the palette methods, the float latent of tc."""
    return unpack_with(_spec(h.method), h, payload, limits)


def unpack_with(spec: MethodFormat, h: Header, payload: bytes, limits: Limits | None = None):
    """``spec.unpack`` with the container's guarantees: one-line errors that name the fix, and a latent of the
    header's shape."""
    limits = limits or Limits.default()
    try:
        palette, indices, q = spec.unpack(h, payload, limits)
    except BitstreamError as exc:  # coder-level messages name the problem; add the fix
        msg = str(exc)
        if "re-copy" not in msg and "re-encode" not in msg:
            raise BitstreamError(f"{msg}; re-copy the file or re-encode the image") from None
        raise
    if q.shape != (h.channels, h.latent_height, h.latent_width):  # a method's decoder broke its contract
        raise BitstreamError(f"corrupted .sdc payload: decoded latent {q.shape} does not match the header")
    return palette, indices, q


# ------------------------------------------------------------------------------------------
# serialisation
# ------------------------------------------------------------------------------------------


def pack(header: Header, payload: bytes, limits: Limits | None = None) -> bytes:
    """Serialise header + payload + CRC32 (after the same checks a reader makes)."""
    coder_ids = CODER_IDS
    mid = header.model_id.encode("utf-8")
    if len(mid) > 255:
        raise BitstreamError(f"model id too long for the header ({len(mid)} > 255 bytes): use a shorter name")
    if not METHOD_SPECS:
        _spec(header.method)
    if header.method not in METHOD_SPECS or header.coder not in coder_ids or header.policy not in POLICIES:
        raise BitstreamError(
            f"cannot write method '{header.method}', coder '{header.coder}', policy "
            f"'{header.policy}' into an .sdc v{VERSION} file"
        )
    if header.version != VERSION:
        raise BitstreamError(f"this writer produces .sdc version {VERSION} only (header says {header.version})")
    check_header(header, len(payload), limits)
    flags = (FLAG_DENOISE if header.denoise else 0) | (FLAG_DITHER if header.dithered else 0)
    out = bytearray(MAGIC)
    out += struct.pack(
        "<BBBBBB", VERSION, flags, METHODS[header.method], coder_ids[header.coder], POLICIES[header.policy], len(mid)
    )
    out += mid
    out += struct.pack(
        "<IHHBHHfH",
        header.fingerprint & 0xFFFFFFFF,
        header.width,
        header.height,
        header.channels,
        header.latent_height,
        header.latent_width,
        header.quant_span,
        header.colors,
    )
    if header.denoise:
        out += struct.pack("<fH", header.denoise_strength, header.denoise_steps)
    out += struct.pack("<I", len(payload))
    out += payload
    out += struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF)
    return bytes(out)


def _parse_v1(data: bytes) -> tuple[Header, int, int]:
    """v1 layout -> (header, payload offset, payload length); raises on truncation or unknown ids."""
    try:
        flags, method_id, coder_id, policy_id, n = struct.unpack_from("<BBBBB", data, 5)
        pos = 10
        if pos + n > len(data):
            raise struct.error
        model_id = data[pos : pos + n].decode("utf-8")
        pos += n
        fp, w, h, c, lh, lw, span, k = struct.unpack_from("<IHHBHHfH", data, pos)
        pos += struct.calcsize("<IHHBHHfH")
        strength, steps = 0.0, 0
        if flags & FLAG_DENOISE:
            strength, steps = struct.unpack_from("<fH", data, pos)
            pos += 6
        (plen,) = struct.unpack_from("<I", data, pos)
        pos += 4
    except (struct.error, UnicodeDecodeError):
        raise BitstreamError("truncated or corrupted .sdc header: re-encode or re-copy the file") from None
    if pos + plen + 4 != len(data):
        raise BitstreamError(
            f"truncated or corrupted .sdc file: header announces a {plen}-byte payload but "
            f"{len(data) - pos - 4} bytes follow; re-copy the complete file"
        )
    if not _crc_ok(data):
        raise BitstreamError("corrupted .sdc file: CRC32 mismatch; re-copy the file or re-encode the image")
    if flags & ~(FLAG_DENOISE | FLAG_DITHER):
        raise BitstreamError(f"unsupported .sdc content (flags {flags:#04x}): upgrade sdcomp-notebooks")
    names = CODER_NAMES
    if not METHOD_SPECS:
        _spec("")
    if method_id not in METHOD_NAMES or coder_id not in names or policy_id not in POLICY_NAMES:
        raise BitstreamError(
            f"unsupported .sdc content (method {method_id}, coder {coder_id}, policy {policy_id}): "
            f"upgrade sdcomp-notebooks"
        )
    header = Header(
        method=METHOD_NAMES[method_id],
        coder=names[coder_id],
        model_id=model_id,
        fingerprint=fp,
        width=w,
        height=h,
        channels=c,
        latent_height=lh,
        latent_width=lw,
        quant_span=span,
        colors=k,
        policy=POLICY_NAMES[policy_id],
        dithered=bool(flags & FLAG_DITHER),
        denoise=bool(flags & FLAG_DENOISE),
        denoise_strength=strength,
        denoise_steps=steps,
        version=1,
    )
    return header, pos, plen


def _crc_ok(data: bytes) -> bool:
    return (zlib.crc32(data[:-4]) & 0xFFFFFFFF) == struct.unpack("<I", data[-4:])[0]


#: format version -> parser(data) -> (header, payload offset, payload length)
PARSERS: dict[int, Callable[[bytes], tuple[Header, int, int]]] = {1: _parse_v1}


def register_version(version: int, parser: Callable[[bytes], tuple[Header, int, int]]) -> None:
    """Teach :func:`unpack` a new format version (the parser must verify its own CRC and lengths)."""
    PARSERS[version] = parser


def unpack(data: bytes, limits: Limits | None = None) -> tuple[Header, bytes]:
    """Parse, verify and validate a file; raises BitstreamError with a one-line reason on any problem.

    Nothing is allocated beyond the input and nothing is decoded: the caller gets a header that passed
    :func:`check_header` and the payload bytes (decode them with :func:`decode_payload`).
    """
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an .sdc file (bad magic bytes): pass a file written by `python -m helpers encode`")
    if len(data) < 14:
        raise BitstreamError(f"truncated .sdc file ({len(data)} bytes, header incomplete): re-encode or re-copy it")
    version = data[4]
    if version not in PARSERS:
        known = ", ".join(str(v) for v in sorted(PARSERS))
        raise BitstreamError(
            f".sdc version {version} is not supported by this reader (knows {known}): "
            f"upgrade sdcomp-notebooks or re-encode the image"
        )
    header, pos, plen = PARSERS[version](data)
    check_header(header, plen, limits)
    return header, data[pos : pos + plen]


def header_size(header: Header) -> int:
    """Bytes of container overhead (header + CRC) for this header."""
    mid = len(header.model_id.encode("utf-8"))
    return 37 + mid + (6 if header.denoise else 0)
