"""The ``.sdc`` file format (version 1): a small self-describing header, the payload and a CRC.

Layout (little-endian)::

    offset size  field
    0      4     magic b"SDC\\x1a"
    4      1     version (1)
    5      1     flags: bit0 = UNet denoising requested at decode, bit1 = dithered
    6      1     palette method: 0 = libimagequant RGBA, 1 = latent k-means, 2 = raw 8-bit latents
    7      1     lossless coder id (see helpers.entropy.CODER_IDS)
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
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import BitstreamError

MAGIC = b"SDC\x1a"
VERSION = 1
FLAG_DENOISE = 1
FLAG_DITHER = 2
METHODS = {"liq": 0, "kmeans": 1, "raw": 2}
METHOD_NAMES = {v: k for k, v in METHODS.items()}
POLICIES = {"none": 0, "pad8": 1, "crop512": 2}
POLICY_NAMES = {v: k for k, v in POLICIES.items()}


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


def _coder_ids():
    from .entropy import CODER_IDS

    return CODER_IDS


def pack(header: Header, payload: bytes) -> bytes:
    """Serialise header + payload + CRC32."""
    coder_ids = _coder_ids()
    mid = header.model_id.encode("utf-8")
    if len(mid) > 255:
        raise BitstreamError(f"model id too long for the header ({len(mid)} > 255 bytes): use a shorter name")
    flags = (FLAG_DENOISE if header.denoise else 0) | (FLAG_DITHER if header.dithered else 0)
    out = bytearray(MAGIC)
    out += struct.pack("<BBBBBB", VERSION, flags, METHODS[header.method], coder_ids[header.coder],
                       POLICIES[header.policy], len(mid))
    out += mid
    out += struct.pack("<IHHBHHfH", header.fingerprint & 0xFFFFFFFF, header.width, header.height,
                       header.channels, header.latent_height, header.latent_width, header.quant_span, header.colors)
    if header.denoise:
        out += struct.pack("<fH", header.denoise_strength, header.denoise_steps)
    out += struct.pack("<I", len(payload))
    out += payload
    out += struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF)
    return bytes(out)


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and verify a file; raises BitstreamError with a one-line reason on any problem."""
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an .sdc file (bad magic bytes): pass a file written by `python -m helpers encode`")
    if len(data) < 10:
        raise BitstreamError(f"truncated .sdc file ({len(data)} bytes, header incomplete): re-encode or re-copy it")
    version = data[4]
    if version != VERSION:
        raise BitstreamError(f".sdc version {version} is not supported by this reader (knows {VERSION}): "
                             f"upgrade sdcomp-notebooks or re-encode the image")
    if len(data) < 8:
        raise BitstreamError("truncated .sdc file: re-encode or re-copy it")
    stored_crc = struct.unpack("<I", data[-4:])[0]
    crc_ok = (zlib.crc32(data[:-4]) & 0xFFFFFFFF) == stored_crc
    try:
        flags, method_id, coder_id, policy_id, n = struct.unpack_from("<BBBBB", data, 5)
        pos = 10
        model_id = data[pos:pos + n].decode("utf-8")
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
        raise BitstreamError(f"truncated or corrupted .sdc file: header announces a {plen}-byte payload but "
                             f"{len(data) - pos - 4} bytes follow; re-copy the complete file")
    if not crc_ok:
        raise BitstreamError("corrupted .sdc file: CRC32 mismatch; re-copy the file or re-encode the image")
    names = {v: k for k, v in _coder_ids().items()}
    if method_id not in METHOD_NAMES or coder_id not in names or policy_id not in POLICY_NAMES:
        raise BitstreamError(f"unsupported .sdc content (method {method_id}, coder {coder_id}, policy {policy_id}): "
                             f"upgrade sdcomp-notebooks")
    header = Header(method=METHOD_NAMES[method_id], coder=names[coder_id], model_id=model_id, fingerprint=fp,
                    width=w, height=h, channels=c, latent_height=lh, latent_width=lw, quant_span=span, colors=k,
                    policy=POLICY_NAMES[policy_id], dithered=bool(flags & FLAG_DITHER),
                    denoise=bool(flags & FLAG_DENOISE), denoise_strength=strength, denoise_steps=steps)
    return header, data[pos:pos + plen]


def header_size(header: Header) -> int:
    """Bytes of container overhead (header + CRC) for this header."""
    return len(pack(header, b""))
