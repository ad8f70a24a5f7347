"""Transform coding of latents (method ``tc``): a decoder-aware transform, scalar quantization and
context-adaptive range coding with ``constriction``.

The palette method of the 2022 notebook treats the latent as a picture of K colours. This method treats it
as a signal and codes it the way image codecs code pixels, with one difference that matters: the error it
minimises is the error *after the decoder*, not the error in the latent.

Transform (numpy only, no torch):

1. the channel means ``mu`` are removed;
2. each channel is split into wavelet bands: ``L`` levels of the CDF 9/7 lifting wavelet (symmetric
   extension, any size; ``L = clip(floor(log2(min(h, w))) - 2, 0, 4)``, so a 64x64 latent gets 4 levels);
3. in every band ``b`` the C channels are mixed by a matrix ``A_b``: the Karhunen-Loeve transform of the
   band's coefficients *in a metric where squared coefficient error equals squared pixel error*. The metric
   is ``G_b = E[J_b^T J_b]``, the decoder's Jacobian restricted to the band's coefficients, measured on
   licensed photographs by back-propagating random pixel-space probes through the decoder
   (:mod:`helpers.methods.tc.tc_train`). Low spatial frequencies and a few channel directions matter far more to the
   decoder than the rest; PCA in the plain latent space ignores that and renders grey, washed-out pictures.

Because every coefficient's squared error is (to first order) squared pixel error, one quantization step
``delta`` for all coefficients is the rate-distortion optimal allocation (the reverse water-filling of
Gaussian theory: components below the step simply quantize to zero). Rate control searches ``delta``.
The wavelet makes the coding layered: at small budgets only the coarse bands (a low-resolution latent)
survive quantization, and detail bands are spent as the budget grows.

Entropy coding (integers only, so every platform decodes the same symbols): each quantized coefficient
gets one of ``S`` scale classes, a discretized Laplace distribution of scale ``2**((s - 40) / 4)``
(in units of the step) with large scales split into a coded high part and uniform low bits. The class is
``base[b, j] - shift(delta) + offset[context]``: ``base`` is the band/component's trained log-scale, the
context is an integer activity from already decoded neighbours: the parent coefficient (same channel, the
coarser band at the same place), the four spatial neighbours decoded in the first of two checkerboard
passes, and (for channels 8 and up) the first eight channels at the same position. Symbols of a pass are
grouped by class and range-coded with ``constriction``'s ``Categorical`` models built from integer
frequency tables shipped with the code; escapes (values beyond +-63 in a class) carry an Elias-gamma tail.
A CRC-32 of the payload's head, its inline tables and every decoded value closes the stream, so a truncated
or altered payload is an error.

**Per-image scale offsets** (payload version 2, trained tables only): the trained base scales are averages over the
training photos, and one picture's coefficients can sit several classes away from them (a whole-picture offset chosen
after the fact saved 0-19 % of a 5 KB payload of licensed photos, ``scripts/exp_oracle_scales.py``). The encoder
therefore picks, at every step it tries, one class offset in -8..7 per wavelet band and group of KLT components
(:func:`comp_groups`: 0-3, 4-7, 8-15, 16-C for TAEF2's 32; 13 bands x 4 groups = 26 bytes of nibbles at 4 levels),
the one that minimises the ideal code length of that band and group's values under the coder's own classes, and
sends them after the head; the decoder adds them to ``base``. Measured (``scripts/exp_band_offsets.py``, the
default encoder, stock decoder, side bytes counted): Kodak 5000 B 25.16 -> 25.43 dB (better on 24 of 24 crops),
12000 B 27.26 -> 27.56; holdout 27.84 -> 27.94 and 29.15 -> 29.32. Version-1 payloads (no offsets) still decode.

Models without trained tables (SD v1.x here, where the weights cannot be downloaded, or any new model) use
*inline* tables: a per-image channel KLT (plain latent metric) and per-band scales, sent in the payload
(about 100 bytes for SD's 4 channels). ``python -m helpers.methods.tc.tc_train --model ...`` trains real tables.

Payload layout (little-endian)::

    0   1  tc payload version (2; 1 = the same without scale offsets, still decoded)
    1   4  table id: CRC-32 of the trained tables, or 0 for inline tables
    5   1  wavelet levels L
    6   2  step index k: delta = 2 ** ((k - 32768) / 1024)
    8   .. inline tables only: mu (C float16), A (C*C float16), base (nbands*C int8)
    8   .. trained tables, version 2 only: scale offsets, nbands x len(comp_groups(C)) signed 4-bit values in
           band-major order, two per byte (low nibble first), ceil(n / 2) bytes
    ..  .. number of range coder words n (LEB128 varint)
    ..  4n range coder words (uint32); nothing may follow
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...backends.taef2_spec import TAEF2_FINGERPRINT
from ...errors import BitstreamError, BudgetError, SDCError
from ..base import fit_budget

PAYLOAD_VERSION = 2
READ_VERSIONS = (1, 2)  # payload versions the decoder reads
OFFSET_RANGE = (-8, 7)  # a per-image scale offset is a signed nibble
MAX_LEVELS = 4
K_ZERO = 32768  # step index of delta = 1
K_PER_OCTAVE = 1024
CLASS_ZERO = 40  # class of scale 1 (in steps)
CLASS_PER_OCTAVE = 4
N_CLASSES = 96
M = 63  # the categorical alphabet covers high parts -M..M, plus one escape symbol
ESC = 2 * M + 1
N_BUCKETS = 8
G1 = 8  # channels [0, G1) form the first group; the rest use them as cross-channel context
MAX_ABS_Q = 1 << 24  # quantized values are clamped here (far beyond any real latent)
DATA_DIR = Path(__file__).resolve().parents[2] / "data"  # helpers/data
CLASS_TABLES = DATA_DIR / "tc_classes.npz"

# CDF 9/7 lifting constants (Daubechies & Sweldens), with the usual normalisation K
_A1, _A2, _A3, _A4 = -1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971
_K = 1.230174104914001


# ----------------------------------------------------------------------------------------------
# CDF 9/7 wavelet on numpy arrays, any length, symmetric extension
# ----------------------------------------------------------------------------------------------


def _nbr(n_out: int, n_src: int, shift: int) -> np.ndarray:
    """Indices i + shift clamped to [0, n_src) for i in range(n_out) (whole-sample symmetric extension
    of the interleaved signal: the missing neighbour of a border sample is its other neighbour)."""
    return np.clip(np.arange(n_out) + shift, 0, n_src - 1)


def _lift(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.moveaxis(x, axis, -1)
    s, d = x[..., 0::2].copy(), x[..., 1::2].copy()
    ns, nd = s.shape[-1], d.shape[-1]
    if nd:
        r, lm, l0 = _nbr(nd, ns, 1), _nbr(ns, nd, -1), _nbr(ns, nd, 0)
        d += _A1 * (s[..., :nd] + s[..., r])
        s += _A2 * (d[..., lm] + d[..., l0])
        d += _A3 * (s[..., :nd] + s[..., r])
        s += _A4 * (d[..., lm] + d[..., l0])
        s *= _K
        d /= _K
    return np.moveaxis(s, -1, axis), np.moveaxis(d, -1, axis)


def _unlift(s: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
    s, d = np.moveaxis(s, axis, -1).copy(), np.moveaxis(d, axis, -1).copy()
    ns, nd = s.shape[-1], d.shape[-1]
    if nd:
        r, lm, l0 = _nbr(nd, ns, 1), _nbr(ns, nd, -1), _nbr(ns, nd, 0)
        s /= _K
        d *= _K
        s -= _A4 * (d[..., lm] + d[..., l0])
        d -= _A3 * (s[..., :nd] + s[..., r])
        s -= _A2 * (d[..., lm] + d[..., l0])
        d -= _A1 * (s[..., :nd] + s[..., r])
    x = np.empty(s.shape[:-1] + (ns + nd,), dtype=s.dtype)
    x[..., 0::2], x[..., 1::2] = s, d
    return np.moveaxis(x, -1, axis)


def levels_for(h: int, w: int) -> int:
    """Wavelet levels for an h x w latent: 4 for 64x64 and up, fewer for small latents (coarsest band >= 4)."""
    return int(np.clip(int(np.floor(np.log2(max(1, min(h, w))))) - 2, 0, MAX_LEVELS))


def dwt_bands(ll, levels: int, lift) -> list:
    """The multilevel 2-D lifting recursion, for any array type with its own ``lift(x, axis) -> (s, d)``: this
    module's numpy one, :mod:`helpers.methods.tc.rate_model`'s torch one."""
    details = []
    for _ in range(levels):
        lo, hi = lift(ll, -1)
        ll, lh = lift(lo, -2)
        hl, hh = lift(hi, -2)
        details.append((hl, lh, hh))
    out = [ll]
    for trio in details[::-1]:
        out += list(trio)
    return out


def idwt_bands(bands: list, unlift):
    """The inverse of :func:`dwt_bands` with ``unlift(s, d, axis) -> x``."""
    ll = bands[0]
    for i in range(1, len(bands), 3):
        hl, lh, hh = bands[i : i + 3]
        ll = unlift(unlift(ll, lh, -2), unlift(hl, hh, -2), -1)
    return ll


def dwt2(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """(..., h, w) -> bands [LL, HL_L, LH_L, HH_L, ..., HL_1, LH_1, HH_1] (coarsest detail level first;
    HL = high-pass along the width)."""
    return dwt_bands(np.asarray(x, dtype=np.float64), levels, _lift)


def idwt2(bands: list[np.ndarray]) -> np.ndarray:
    return idwt_bands(bands, _unlift)


def band_shapes(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    for _ in range(levels):
        hh_, ww_ = sizes[-1]
        sizes.append(((hh_ + 1) // 2, (ww_ + 1) // 2))
    out = [sizes[-1]]
    for lev in range(levels, 0, -1):
        ph, pw = sizes[lev - 1]
        out += [((ph + 1) // 2, pw // 2), (ph // 2, (pw + 1) // 2), (ph // 2, pw // 2)]
    return out


def parent_of(b: int) -> int | None:
    """Band index of a band's parent: the same orientation one level coarser (the LL band for the
    coarsest details); None for LL."""
    if b == 0:
        return None
    return 0 if b <= 3 else b - 3


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


@functools.cache
def class_tables() -> tuple[np.ndarray, np.ndarray]:
    """(frequencies (N_CLASSES, 2M+2) uint32, low-bit counts r (N_CLASSES,) int) shipped in data/tc_classes.npz."""
    if not CLASS_TABLES.is_file():
        raise SDCError(
            f"{CLASS_TABLES} is missing: reinstall sdcomp-notebooks (or run "
            f"python -m helpers.methods.tc.tc_train --classes-only)"
        )
    with np.load(CLASS_TABLES) as d:
        return d["freq"].astype(np.uint32), d["shift"].astype(np.int64)


def make_class_tables() -> tuple[np.ndarray, np.ndarray]:
    """Compute the class tables (run once when the data file is made; decoders read the stored integers,
    so no transcendental function ever runs on the decoding side)."""
    freq = np.zeros((N_CLASSES, 2 * M + 2), np.uint64)
    shift = np.zeros(N_CLASSES, np.int64)
    total = 1 << 24
    for s in range(N_CLASSES):
        sigma = 2.0 ** ((s - CLASS_ZERO) / CLASS_PER_OCTAVE)
        r = max(0, int(np.ceil(np.log2(sigma / 16.0)))) if sigma > 16 else 0
        shift[s] = r
        # P(hi = h) for hi = floor(q / 2^r), q ~ discretized Laplace(0, sigma)
        edges = (np.arange(-M, M + 2, dtype=np.float64) * 2.0**r) - 0.5  # q in [h*2^r, (h+1)*2^r - 1]
        with np.errstate(over="ignore"):
            cdf = np.where(edges < 0, 0.5 * np.exp(edges / sigma), 1 - 0.5 * np.exp(-edges / sigma))
        p = np.diff(cdf)
        p_esc = max(0.0, 1.0 - p.sum())
        p = np.append(p, p_esc)
        f = np.maximum(1, np.floor(p / p.sum() * (total - len(p)))).astype(np.uint64)
        freq[s] = f
    return freq.astype(np.uint32), shift


@dataclass
class Tables:
    """A trained transform + entropy model for one autoencoder (or inline tables of one image)."""

    channels: int
    mu: np.ndarray  # (C,)
    A: dict[int, np.ndarray]  # levels -> (nbands, C, C) analysis matrices
    Ai: dict[int, np.ndarray]  # levels -> (nbands, C, C) synthesis matrices
    base: dict[int, np.ndarray]  # levels -> (nbands, C) int class index at delta = 1
    offsets: np.ndarray  # (2 band kinds, 2 groups, 2 passes, N_BUCKETS) int class offsets
    table_id: int = 0  # CRC-32 of the trained tables; 0 = inline
    name: str = "inline"
    fingerprint: int | None = None  # decoder weights the tables were trained for

    def check(self, levels: int) -> None:
        if levels not in self.A:
            raise BitstreamError(f"the tc tables '{self.name}' have no {levels}-level transform")


def tables_path(fingerprint: int) -> list[Path]:
    """Where trained tables for decoder weights ``fingerprint`` are looked up: the package's data folder,
    then the user cache ($SDCOMP_CACHE or ~/.cache/sdcomp)."""
    import os

    name = f"tc_{fingerprint:08x}.npz"
    cache = Path(os.environ.get("SDCOMP_CACHE") or Path.home() / ".cache" / "sdcomp")
    return [DATA_DIR / name, cache / "tc" / name]


def _tables_crc(d: dict) -> int:
    crc = 0
    for key in sorted(d):
        crc = zlib.crc32(key.encode() + np.ascontiguousarray(d[key]).tobytes(), crc)
    return crc & 0xFFFFFFFF or 1


@functools.lru_cache(maxsize=8)
def _load_tables_file(path: str) -> Tables:
    with np.load(path) as f:
        d = {k: f[k] for k in f.files}
    C = int(d["mu"].shape[0])
    A, Ai, base = {}, {}, {}
    for L in range(MAX_LEVELS + 1):
        if f"A{L}" in d:
            A[L], Ai[L], base[L] = (
                d[f"A{L}"].astype(np.float64),
                d[f"Ai{L}"].astype(np.float64),
                d[f"base{L}"].astype(np.int64),
            )
    return Tables(
        channels=C,
        mu=d["mu"].astype(np.float64),
        A=A,
        Ai=Ai,
        base=base,
        offsets=d["offsets"].astype(np.int64),
        table_id=_tables_crc(d),
        name=Path(path).name,
        fingerprint=int(d["fingerprint"]),
    )


def save_tables(path: Path, tables: Tables, extra: dict | None = None) -> int:
    """Write trained tables (npz); returns their table id (CRC-32 of the arrays)."""
    d = {
        "mu": tables.mu.astype(np.float32),
        "offsets": tables.offsets.astype(np.int8),
        "fingerprint": np.int64(tables.fingerprint or 0),
    }
    for L in tables.A:
        d[f"A{L}"] = tables.A[L].astype(np.float32)
        d[f"Ai{L}"] = tables.Ai[L].astype(np.float32)
        d[f"base{L}"] = tables.base[L].astype(np.int16)
    d.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # keep the tables being replaced: files coded with them name their id
        old = _load_tables_file(str(path))
        if old.table_id != _tables_crc({k: np.asarray(v) for k, v in d.items()}):
            path.replace(path.with_name(f"{path.stem}_{old.table_id:08x}.npz"))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **d)
    tmp.replace(path)
    _load_tables_file.cache_clear()
    return _tables_crc({k: np.asarray(v) for k, v in d.items()})


def trained_tables(fingerprint: int, table_id: int | None = None) -> Tables | None:
    """The current trained tables for these decoder weights; with ``table_id``, the tables with that id: the
    current ones or an archived set (``tc_<fingerprint>_<table id>.npz``, which :func:`save_tables` leaves
    behind when retraining replaces a file, so that files coded with older tables keep decoding)."""
    paths = tables_path(fingerprint)
    if table_id is not None:
        paths = paths + [p.with_name(f"{p.stem}_{table_id:08x}.npz") for p in paths]
    for p in paths:
        if p.is_file():
            t = _load_tables_file(str(p))
            if t.fingerprint == fingerprint and (table_id is None or t.table_id == table_id):
                return t
    return None


# ----------------------------------------------------------------------------------------------
# transform
# ----------------------------------------------------------------------------------------------


def analyze(z: np.ndarray, tables: Tables, levels: int) -> list[np.ndarray]:
    """Latent (C, h, w) -> coefficient bands [(C, hb, wb), ...] (decoder-metric KLT per band)."""
    bands = dwt2(np.asarray(z, np.float64) - tables.mu[:, None, None], levels)
    A = tables.A[levels]
    return [np.einsum("ij,jyx->iyx", A[b], x) for b, x in enumerate(bands)]


def synthesize(coeffs: list[np.ndarray], tables: Tables, levels: int) -> np.ndarray:
    """Inverse of :func:`analyze` -> float32 latent (C, h, w)."""
    Ai = tables.Ai[levels]
    bands = [np.einsum("ij,jyx->iyx", Ai[b], x) for b, x in enumerate(coeffs)]
    return (idwt2(bands) + tables.mu[:, None, None]).astype(np.float32)


def step_of(k: int) -> float:
    return float(2.0 ** ((int(k) - K_ZERO) / K_PER_OCTAVE))


def k_of(step: float) -> int:
    return int(np.clip(np.round(np.log2(step) * K_PER_OCTAVE) + K_ZERO, 0, 65535))


def class_shift(k: int) -> int:
    # CLASS_PER_OCTAVE * log2(delta), rounded half up, in integers
    return (int(k) - K_ZERO + K_PER_OCTAVE // (2 * CLASS_PER_OCTAVE)) // (K_PER_OCTAVE // CLASS_PER_OCTAVE)


def quantize(coeffs: list[np.ndarray], k: int) -> list[np.ndarray]:
    step = step_of(k)
    return [np.clip(np.rint(c / step), -MAX_ABS_Q, MAX_ABS_Q).astype(np.int64) for c in coeffs]


def dequantize(q: list[np.ndarray], k: int) -> list[np.ndarray]:
    step = step_of(k)
    return [x.astype(np.float64) * step for x in q]


# ----------------------------------------------------------------------------------------------
# contexts: everything a decoder can compute before a pass, in integers
# ----------------------------------------------------------------------------------------------


def bucket(a: np.ndarray) -> np.ndarray:
    """Integer activity -> bucket min(bit_length(a), N_BUCKETS - 1)."""
    b = np.zeros(a.shape, np.int64)
    v = a.copy()
    for _ in range(N_BUCKETS - 1):
        nz = v > 0
        if not nz.any():
            break
        b += nz
        v >>= 1
    return b


def passes(C: int, shape: tuple[int, int]):
    """(group channels, parity) of each pass of one band, in coding order."""
    groups = [range(0, min(C, G1))] + ([range(G1, C)] if C > G1 else [])
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    par = (yy + xx) % 2
    for g, chans in enumerate(groups):
        for t in (0, 1):
            yield g, t, chans, par == t


def activity(absq: list[np.ndarray], b: int, g: int, t: int, chans: range, mask: np.ndarray) -> np.ndarray:
    """Activity (len(chans), n) for the masked positions of band b, from already decoded magnitudes."""
    cur = absq[b]
    h, w = cur.shape[1:]
    ys, xs = np.nonzero(mask)
    ch = np.asarray(chans)
    a = np.zeros((len(ch), len(ys)), np.int64)
    pb = parent_of(b)
    if pb is not None:
        par = absq[pb]
        ph, pw = par.shape[1:]
        py = np.minimum(ys * ph // max(h, 1), ph - 1)
        px = np.minimum(xs * pw // max(w, 1), pw - 1)
        a += 2 * par[ch][:, py, px]
    if t == 1:  # checkerboard neighbours, decoded in pass 0 of this group
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            a[:, ok] += cur[ch][:, ny[ok], nx[ok]]
    if g == 1:  # cross-channel: the first group at the same position (complete by now)
        a += cur[:G1][:, ys, xs].sum(0)[None]
    return a


def _classes(
    tables: Tables, levels: int, b: int, g: int, t: int, chans: range, act: np.ndarray, k: int, clip: bool = True
) -> np.ndarray:
    base = tables.base[levels][b][np.asarray(chans)][:, None]
    off = tables.offsets[0 if b == 0 else 1, g, t][bucket(act)]
    cls = base - class_shift(k) + off
    return np.clip(cls, 0, N_CLASSES - 1) if clip else cls


# ----------------------------------------------------------------------------------------------
# per-image scale offsets (payload version 2)
# ----------------------------------------------------------------------------------------------


def comp_groups(C: int) -> list[range]:
    """The groups of KLT components that share one scale offset per band: 0-3, 4-7, 8-15, 16-C (fewer for fewer
    channels): the strongest components alone, the weak tail together."""
    edges = sorted({min(e, C) for e in (0, 4, 8, 16)} | {C})
    return [range(a, b) for a, b in zip(edges, edges[1:])]


def offsets_bytes(offsets: np.ndarray) -> bytes:
    """(nbands, ngroups) offsets in -8..7 -> nibbles, band-major, low nibble first."""
    v = (np.asarray(offsets, np.int64).ravel() & 0xF).astype(np.uint8)
    if v.size % 2:
        v = np.append(v, 0)
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()


def parse_offsets(buf: bytes, nbands: int, ngroups: int) -> np.ndarray:
    """Inverse of :func:`offsets_bytes`."""
    n = nbands * ngroups
    raw = np.frombuffer(buf[: (n + 1) // 2], np.uint8)
    v = np.empty(2 * raw.size, np.int64)
    v[0::2], v[1::2] = raw & 0xF, raw >> 4
    v = v[:n]
    return np.where(v > 7, v - 16, v).reshape(nbands, ngroups)


def with_offsets(tables: Tables, levels: int, offsets: np.ndarray) -> Tables:
    """The tables with each band and component group's base scale class moved by ``offsets`` (nbands, ngroups)."""
    import dataclasses

    base = tables.base[levels].copy()
    for gi, g in enumerate(comp_groups(tables.channels)):
        base[:, g.start : g.stop] += np.asarray(offsets, np.int64)[:, gi : gi + 1]
    return dataclasses.replace(tables, base={**tables.base, levels: base})


def offsets_shape(tables: Tables, levels: int) -> tuple[int, int]:
    """(wavelet bands, component groups): the shape of the scale offsets a version-2 payload with trained tables
    carries."""
    return len(tables.A[levels]), len(comp_groups(tables.channels))


def offsets_size(tables: Tables, levels: int) -> int:
    """Bytes of the scale offsets a payload coded with ``tables`` carries (0 for inline tables)."""
    if tables.table_id == 0:
        return 0
    nb, ng = offsets_shape(tables, levels)
    return (nb * ng + 1) // 2


def coding_tables(q: list[np.ndarray], tables: Tables, levels: int, k: int) -> Tables:
    """The tables the coder codes ``q`` at step index ``k`` with: trained tables moved by :func:`choose_offsets`,
    inline tables as they are (for the rate model, which must price what the coder spends)."""
    return tables if tables.table_id == 0 else with_offsets(tables, levels, choose_offsets(q, tables, levels, k))


def choose_offsets(q: list[np.ndarray], tables: Tables, levels: int, k: int) -> np.ndarray:
    """(nbands, ngroups) offsets in -8..7 minimising the ideal code length (:func:`value_bits`, the shipped integer
    tables) of each band and component group of ``q`` at step index ``k``. Contexts do not depend on the offsets, so
    the classes are computed once, and every candidate is priced on the distinct (group, class, value) triples only
    (a few thousand for a 512x512 latent; values beyond +-64, rare, one by one). Of equal candidates, the smallest move.
    """
    groups = comp_groups(tables.channels)
    cls = coefficient_classes(q, tables, levels, k, clip=False)
    ng = len(groups)
    gid = np.concatenate(
        [np.full((g.stop - g.start) * v[0].size, b * ng + gi) for b, v in enumerate(q) for gi, g in enumerate(groups)]
    )
    ss = np.concatenate([c[g.start : g.stop].ravel() for c in cls for g in groups])
    vv = np.concatenate([v[g.start : g.stop].ravel() for v in q for g in groups])
    vmax = 64
    small = np.abs(vv) <= vmax
    s0, ns, nv = int(ss.min(initial=0)), int(ss.max(initial=0)) - int(ss.min(initial=0)) + 1, 2 * vmax + 1
    key = (gid[small] * ns + (ss[small] - s0)) * nv + (vv[small] + vmax)
    counts = np.bincount(key)
    keys = np.flatnonzero(counts)
    pg, rest = np.divmod(keys, ns * nv)
    ps, pv = np.divmod(rest, nv)
    big = ~small
    pg = np.concatenate([pg, gid[big]])
    ps = np.concatenate([ps + s0, ss[big]])
    pv = np.concatenate([pv - vmax, vv[big]])
    w = np.concatenate([counts[keys], np.ones(int(big.sum()), np.int64)]).astype(np.float64)
    cand = np.array(sorted(range(OFFSET_RANGE[0], OFFSET_RANGE[1] + 1), key=lambda d: (abs(d), d)))
    bits = value_bits(np.broadcast_to(pv, (len(cand), len(pv))), np.clip(ps[None] + cand[:, None], 0, N_CLASSES - 1))
    total = np.stack([np.bincount(pg, weights=bits[i] * w, minlength=len(q) * ng) for i in range(len(cand))])
    return cand[np.argmin(total, axis=0)].reshape(len(q), ng)


# ----------------------------------------------------------------------------------------------
# entropy coding with constriction
# ----------------------------------------------------------------------------------------------


@functools.cache
def _models():
    import constriction

    freq, shift = class_tables()
    Cat = constriction.stream.model.Categorical
    return [Cat(freq[s].astype(np.float64), perfect=False) for s in range(N_CLASSES)], shift


@functools.cache
def _uniform(n: int):
    import constriction

    return constriction.stream.model.Uniform(n)


def _split(v: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    hi = v >> r  # floor division, also for negatives
    return hi, v - (hi << r)


def _encode_group(enc, v: np.ndarray, s: int) -> None:
    models, shift = _models()
    r = int(shift[s])
    hi, lo = _split(v, r)
    sym = np.where(np.abs(hi) <= M, hi + M, ESC)
    enc.encode(sym.astype(np.int32), models[s])
    esc = hi[sym == ESC]
    if esc.size:
        mag = np.abs(esc) - M - 1  # >= 0
        enc.encode((esc < 0).astype(np.int32), _uniform(2))
        nbits = np.array([int(x + 1).bit_length() - 1 for x in mag.tolist()], np.int32)
        enc.encode(nbits, _uniform(32))
        for n in sorted(set(nbits.tolist())):
            if n:
                sel = (mag[nbits == n] + 1) - (1 << n)
                enc.encode(sel.astype(np.int32), _uniform(1 << n))
    if r:
        enc.encode(lo.astype(np.int32), _uniform(1 << r))


def _decode_group(dec, n: int, s: int) -> np.ndarray:
    models, shift = _models()
    r = int(shift[s])
    sym = np.asarray(dec.decode(models[s], n), np.int64)
    hi = sym - M
    esc = np.flatnonzero(sym == ESC)
    if esc.size:
        neg = np.asarray(dec.decode(_uniform(2), esc.size), np.int64)
        nbits = np.asarray(dec.decode(_uniform(32), esc.size), np.int64)
        if nbits.max() > 24:
            raise BitstreamError("corrupted tc payload: an escaped value is out of range")
        mag = np.zeros(esc.size, np.int64)
        for nb in sorted(set(nbits.tolist())):
            sel = nbits == nb
            low = np.asarray(dec.decode(_uniform(1 << nb), int(sel.sum())), np.int64) if nb else 0
            mag[sel] = (1 << nb) + low - 1
        hi[esc] = np.where(neg == 1, -(mag + M + 1), mag + M + 1)
    v = hi << r
    if r:
        v += np.asarray(dec.decode(_uniform(1 << r), n), np.int64)
    if np.abs(v).max(initial=0) > MAX_ABS_Q:
        raise BitstreamError("corrupted tc payload: a decoded value is out of range")
    return v


def _code_passes(
    q: list[np.ndarray] | None,
    shapes,
    C: int,
    tables: Tables,
    levels: int,
    k: int,
    dec=None,
    enc=None,
    crc: int = 0,
    only_band: int | None = None,
) -> list[np.ndarray]:
    """Run the coding order once: encode ``q`` (enc given) or decode into fresh arrays (dec given). The check
    value at the end is a CRC-32 of every value, started from ``crc`` (the payload's head and inline tables)."""
    out = [np.zeros((C,) + s, np.int64) for s in shapes] if dec is not None else q
    absq = [np.zeros((C,) + s, np.int64) for s in shapes]
    for b, shape in enumerate(shapes):
        if shape[0] * shape[1] == 0:
            continue
        for g, t, chans, mask in passes(C, shape):
            act = activity(absq, b, g, t, chans, mask)
            cls = _classes(tables, levels, b, g, t, chans, act, k).ravel()
            if cls.size == 0:
                continue
            ys, xs = np.nonzero(mask)
            ch = np.repeat(np.asarray(chans), len(ys))
            yy, xx = np.tile(ys, len(chans)), np.tile(xs, len(chans))
            order = np.argsort(cls, kind="stable")
            cs = cls[order]
            bounds = np.flatnonzero(np.diff(cs)) + 1
            starts = np.concatenate([[0], bounds])
            ends = np.concatenate([bounds, [len(cs)]])
            vals = np.empty(len(cls), np.int64)
            if enc is not None:
                vals = out[b][ch, yy, xx]
                for s0, e0 in zip(starts, ends):
                    if only_band is None or only_band == b:
                        _encode_group(enc, vals[order[s0:e0]], int(cs[s0]))
            else:
                for s0, e0 in zip(starts, ends):
                    vals[order[s0:e0]] = _decode_group(dec, int(e0 - s0), int(cs[s0]))
                out[b][ch, yy, xx] = vals
            absq[b][ch, yy, xx] = np.abs(vals)
            crc = zlib.crc32(vals.astype("<i8").tobytes(), crc)
    crc &= 0xFFFFFFFF
    if only_band is not None:
        return out
    if enc is not None:
        enc.encode(np.array([crc >> 16, crc & 0xFFFF], np.int32), _uniform(1 << 16))
    else:
        got = np.asarray(dec.decode(_uniform(1 << 16), 2), np.int64)
        if (int(got[0]) << 16 | int(got[1])) != crc:
            raise BitstreamError(
                "corrupted or truncated tc payload: the check value after the coefficients does not match"
            )
        if not dec.maybe_exhausted():
            raise BitstreamError("corrupted tc payload: data after the end of the coefficient stream")
    return out


# ----------------------------------------------------------------------------------------------
# inline tables (models without trained tables)
# ----------------------------------------------------------------------------------------------


def inline_tables(z: np.ndarray, levels: int) -> Tables:
    """Per-image tables: channel KLT of the latent (float16-rounded, as sent) and per-band scales."""
    C = z.shape[0]
    mu = z.reshape(C, -1).mean(1).astype(np.float16).astype(np.float64)
    x = z.reshape(C, -1) - mu[:, None]
    ev, R = np.linalg.eigh(x @ x.T / max(1, x.shape[1]) + 1e-9 * np.eye(C))
    A = R[:, np.argsort(ev)[::-1]].T.astype(np.float16).astype(np.float64)
    nb = 3 * levels + 1
    t = Tables(
        channels=C,
        mu=mu,
        A={levels: np.repeat(A[None], nb, 0)},
        Ai={levels: np.repeat(_safe_inv(A)[None], nb, 0)},
        base={levels: np.zeros((nb, C), np.int64)},
        offsets=np.zeros((2, 2, 2, N_BUCKETS), np.int64),
    )
    coeffs = analyze(z, t, levels)
    scale = np.array([[np.abs(c[j]).mean() for j in range(C)] for c in coeffs])
    t.base[levels] = np.clip(
        np.round(CLASS_PER_OCTAVE * np.log2(np.maximum(scale, 1e-12))) + CLASS_ZERO, -128, 127
    ).astype(np.int64)
    return t


def _safe_inv(A: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(A)) or abs(np.linalg.det(A)) < 1e-12:
        raise BitstreamError("corrupted tc payload: the inline channel transform is not invertible")
    return np.linalg.inv(A)


def _inline_bytes(t: Tables, levels: int) -> bytes:
    return (
        t.mu.astype("<f2").tobytes() + t.A[levels][0].astype("<f2").tobytes() + t.base[levels].astype(np.int8).tobytes()
    )


def _parse_inline(buf: bytes, C: int, levels: int) -> tuple[Tables, int]:
    nb = 3 * levels + 1
    need = 2 * C + 2 * C * C + nb * C
    if len(buf) < need:
        raise BitstreamError("truncated tc payload: the inline tables are incomplete")
    mu = np.frombuffer(buf, "<f2", C, 0).astype(np.float64)
    A = np.frombuffer(buf, "<f2", C * C, 2 * C).reshape(C, C).astype(np.float64)
    base = np.frombuffer(buf, np.int8, nb * C, 2 * C + 2 * C * C).reshape(nb, C).astype(np.int64)
    if not np.all(np.isfinite(mu)):
        raise BitstreamError("corrupted tc payload: the inline channel means are not finite")
    t = Tables(
        channels=C,
        mu=mu,
        A={levels: np.repeat(A[None], nb, 0)},
        Ai={levels: np.repeat(_safe_inv(A)[None], nb, 0)},
        base={levels: base},
        offsets=np.zeros((2, 2, 2, N_BUCKETS), np.int64),
    )
    return t, need


# ----------------------------------------------------------------------------------------------
# payloads
# ----------------------------------------------------------------------------------------------


@dataclass
class Coded:
    payload: bytes
    k: int
    levels: int
    q: list[np.ndarray]
    tables: Tables  # as coded: trained tables carry the payload's scale offsets (with_offsets)
    offsets: np.ndarray | None = None  # (nbands, ngroups) per-image scale offsets; None for inline tables

    @property
    def step(self) -> float:
        return step_of(self.k)

    def latent(self) -> np.ndarray:
        return synthesize(dequantize(self.q, self.k), self.tables, self.levels)

    def header_fields(self) -> dict:
        return {"coder": "range", "colors": 0, "dithered": False}


def _head(tables: Tables, levels: int, k: int) -> bytes:
    return struct.pack("<BIBH", PAYLOAD_VERSION, tables.table_id, levels, k)


def encode_coeffs(coeffs: list[np.ndarray], tables: Tables, levels: int, k: int) -> Coded:
    """Quantize analysed coefficients with step index ``k`` and range-code them into a payload (trained tables:
    with the per-image scale offsets of :func:`choose_offsets`)."""
    import constriction

    q = quantize(coeffs, k)
    offsets = None
    if tables.table_id == 0:
        prefix = _head(tables, levels, k) + _inline_bytes(tables, levels)
    else:
        offsets = choose_offsets(q, tables, levels, k)
        tables = with_offsets(tables, levels, offsets)
        prefix = _head(tables, levels, k) + offsets_bytes(offsets)
        assert len(prefix) == 8 + offsets_size(tables, levels)
    enc = constriction.stream.queue.RangeEncoder()
    _code_passes(q, [x.shape[1:] for x in q], tables.channels, tables, levels, k, enc=enc, crc=zlib.crc32(prefix))
    words = enc.get_compressed().astype("<u4").tobytes()
    return Coded(prefix + _varint(len(words) // 4) + words, k, levels, q, tables, offsets)


def band_bytes(coded: Coded) -> list[float]:
    """Bytes each wavelet band costs in ``coded`` (LL first, then detail bands coarse to fine): each band range
    coded alone with the same contexts (the sum is within a few bytes of the payload's range coder part)."""
    import constriction

    shapes = [x.shape[1:] for x in coded.q]
    out = []
    for b in range(len(shapes)):
        enc = constriction.stream.queue.RangeEncoder()
        _code_passes(coded.q, shapes, coded.tables.channels, coded.tables, coded.levels, coded.k, enc=enc, only_band=b)
        out.append(enc.num_bits() / 8)
    return out


def band_names(levels: int) -> list[str]:
    """``LL``, then ``HL<l> LH<l> HH<l>`` per detail level, coarsest (``levels``) to finest (1)."""
    return ["LL"] + [f"{o}{lev}" for lev in range(levels, 0, -1) for o in ("HL", "LH", "HH")]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for i in range(pos, min(len(buf), pos + 5)):
        n |= (buf[i] & 0x7F) << shift
        shift += 7
        if not buf[i] & 0x80:
            return n, i + 1
    raise BitstreamError("truncated tc payload: the word count is incomplete")


def decode_payload(payload: bytes, channels: int, h: int, w: int, fingerprint: int | None) -> np.ndarray:
    """Payload -> float32 latent (C, h, w). Raises BitstreamError (one line) on anything malformed."""
    q, k, tables, levels = decode_symbols(payload, channels, h, w, fingerprint)
    return synthesize(dequantize(q, k), tables, levels)


def decode_symbols(
    payload: bytes, channels: int, h: int, w: int, fingerprint: int | None
) -> tuple[list[np.ndarray], int, Tables, int]:
    """Payload -> (quantized coefficients per band, step index k, tables, wavelet levels): the entropy decoder's
    exact integer output, before the float synthesis. Raises BitstreamError (one line) on anything malformed."""
    import constriction

    if len(payload) < 8:
        raise BitstreamError(f"truncated tc payload ({len(payload)} bytes)")
    version, table_id, levels, k = struct.unpack_from("<BIBH", payload, 0)
    if version not in READ_VERSIONS:
        raise BitstreamError(
            f"tc payload version {version} is not supported (reads {', '.join(map(str, READ_VERSIONS))}): "
            "upgrade sdcomp-notebooks"
        )
    if levels != levels_for(h, w):
        raise BitstreamError(
            f"corrupted tc payload: {levels} wavelet levels for a {h}x{w} latent (expected {levels_for(h, w)})"
        )
    pos = 8
    if table_id == 0:
        tables, n = _parse_inline(payload[pos:], channels, levels)
        pos += n
    else:
        tables = trained_tables(fingerprint, table_id) if fingerprint is not None else None
        if tables is None:
            current = trained_tables(fingerprint) if fingerprint is not None else None
            have = f"{current.table_id:08x}" if current is not None else "none"
            raise BitstreamError(
                f"this tc file needs transform tables {table_id:08x} for these decoder weights, "
                f"but this installation has {have}: put tc_{fingerprint:08x}_{table_id:08x}.npz (kept by "
                f"the retraining that replaced them) in helpers/data or $SDCOMP_CACHE/tc, or decode "
                f"with the sdcomp-notebooks version that wrote the file"
            )
        if tables.channels != channels:
            raise BitstreamError(f"corrupted tc payload: tables for {tables.channels} channels, header says {channels}")
        tables.check(levels)
        if version >= 2:
            n = offsets_size(tables, levels)
            if len(payload) < pos + n:
                raise BitstreamError(f"truncated tc payload ({len(payload)} bytes, its scale offsets need {pos + n})")
            tables = with_offsets(tables, levels, parse_offsets(payload[pos : pos + n], *offsets_shape(tables, levels)))
            pos += n
    prefix_crc = zlib.crc32(payload[:pos])
    nwords, pos = _read_varint(payload, pos)
    words = payload[pos:]
    if len(words) != 4 * nwords:
        raise BitstreamError(
            f"truncated or corrupted tc payload: {nwords} range coder words announced, {len(words)} bytes follow"
        )
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(words, "<u4").astype(np.uint32))
    try:
        q = _code_passes(None, band_shapes(h, w, levels), channels, tables, levels, k, dec=dec, crc=prefix_crc)
    except BitstreamError:
        raise
    except Exception as exc:
        raise BitstreamError(f"corrupted tc payload ({type(exc).__name__})") from None
    return q, k, tables, levels


# ----------------------------------------------------------------------------------------------
# the encoder: tables, rate control
# ----------------------------------------------------------------------------------------------


#: decoder fingerprints whose trained tables ship in helpers/data (the stock TAEF2's): coding for one of these without
#: its tables file is a broken installation (inline tables would make every file larger and worse), not a decoder to
#: code with inline tables
SHIPPED_TABLES = frozenset({TAEF2_FINGERPRINT})


def _codes(t: Tables | None, channels: int, levels: int) -> bool:
    """Whether trained tables ``t`` can code a latent of ``channels`` at ``levels`` wavelet levels."""
    return t is not None and t.channels == channels and levels in t.A


def tables_for(z: np.ndarray, fingerprint: int | None, levels: int) -> Tables:
    """The tables to code ``z`` with: the trained ones for these decoder weights, else inline tables fitted to ``z``
    (decoders without trained tables, e.g. the tiny test models). Raises where shipped tables are missing."""
    t = trained_tables(fingerprint) if fingerprint is not None else None
    if t is None and fingerprint in SHIPPED_TABLES:
        raise SDCError(
            f"the tc tables for this decoder (tc_{fingerprint:08x}.npz) are missing from {DATA_DIR}: "
            f"restore the file (git checkout helpers/data) or reinstall sdcomp-notebooks"
        )
    return t if _codes(t, z.shape[0], levels) else inline_tables(z, levels)


#: without a budget or a step the encoder spends this many bits per latent value (about 5 KB for a 512x512 image
#: with TAEF2's 32x64x64 latent: the article's operating point)
DEFAULT_BITS_PER_VALUE = 0.3


def default_budget(z: np.ndarray, fingerprint: int | None, overhead: int = 0) -> int:
    """The byte budget used when neither a budget nor a step is given (inline tables add their own bytes)."""
    C, h, w = z.shape
    levels = levels_for(h, w)
    t = trained_tables(fingerprint) if fingerprint is not None else None
    inline = 0 if _codes(t, C, levels) else 2 * C + 2 * C * C + (3 * levels + 1) * C
    return overhead + inline + 16 + int(np.ceil(DEFAULT_BITS_PER_VALUE * z.size / 8))


def encode_latent(
    z: np.ndarray,
    fingerprint: int | None,
    k: int | None = None,
    step: float | None = None,
    budget: int | None = None,
    overhead: int = 0,
    tables: Tables | None = None,
) -> tuple[Coded, list[tuple[int, int]]]:
    """Code a latent (C, h, w): at step index ``k`` (or ``step``), or the finest step whose payload plus
    ``overhead`` (the container's bytes) fits ``budget``. Returns (coded, trials [(k, total bytes)]). ``tables``:
    code with these instead of the trained (or inline) tables for ``fingerprint``, for experiments with modified
    tables; a decoder finds only registered tables, so use :meth:`Coded.latent` to see what such a payload holds."""
    z = np.asarray(z, np.float32)
    C, h, w = z.shape
    levels = levels_for(h, w)
    tables = tables if tables is not None else tables_for(z, fingerprint, levels)
    coeffs = analyze(z, tables, levels)
    trials: list[tuple[int, int]] = []

    def attempt(kk: int) -> Coded:
        c = encode_coeffs(coeffs, tables, levels, kk)
        trials.append((kk, len(c.payload) + overhead))
        return c

    if budget is None:
        if k is None:
            k = k_of(step if step is not None else 1.0)
        return attempt(int(k)), trials
    # the file size falls as the step grows: the coarsest step must fit, then bisect for the finest that does
    coarse = attempt(65535)
    if len(coarse.payload) + overhead > budget:
        raise BudgetError(
            f"cannot meet {budget} bytes: even the coarsest tc file is {len(coarse.payload) + overhead} "
            f"bytes; raise --target-bytes"
        )
    return fit_budget(lambda kk: (c := attempt(kk), len(c.payload) + overhead), 65535, 0, budget, coarse), trials


# ----------------------------------------------------------------------------------------------
# public wrappers for the differentiable rate model (helpers.methods.tc.rate_model)
# ----------------------------------------------------------------------------------------------


def coefficient_classes(
    q: list[np.ndarray], tables: Tables, levels: int, k: int, clip: bool = True
) -> list[np.ndarray]:
    """The scale class the range coder gives each quantized coefficient of ``q`` (bands of (C, hb, wb) ints) at
    step index ``k``: the same coding order and contexts as :func:`encode_coeffs`, without coding anything
    (``clip=False``: before clipping to the class range, for :func:`choose_offsets`)."""
    shapes = [x.shape[1:] for x in q]
    C = q[0].shape[0]
    absq = [np.zeros((C,) + s, np.int64) for s in shapes]
    out = [np.zeros((C,) + s, np.int64) for s in shapes]
    for b, shape in enumerate(shapes):
        if shape[0] * shape[1] == 0:
            continue
        for g, t, chans, mask in passes(C, shape):
            act = activity(absq, b, g, t, chans, mask)
            cls = _classes(tables, levels, b, g, t, chans, act, k, clip)
            if cls.size == 0:
                continue
            ch, (ys, xs) = np.asarray(chans)[:, None], np.nonzero(mask)
            out[b][ch, ys[None], xs[None]] = cls
            absq[b][ch, ys[None], xs[None]] = np.abs(q[b][ch, ys[None], xs[None]])
    return out


def value_bits(v: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Ideal code length in bits of every quantized value ``v`` under its class ``s`` (same shapes), from the
    shipped integer tables: the high part's symbol, the uniform low bits and an escape's Elias-gamma tail."""
    freq, shift = class_tables()
    logp = np.log2(freq.astype(np.float64)) - np.log2(freq.astype(np.float64).sum(1, keepdims=True))
    r = shift[s]
    hi = v >> r
    sym = np.where(np.abs(hi) <= M, hi + M, ESC)
    out = -logp[s, sym] + r
    esc = sym == ESC
    out[esc] += 6 + np.floor(np.log2(np.abs(hi[esc]) - M))
    return out


def coefficient_bits(q: list[np.ndarray], classes: list[np.ndarray]) -> float:
    """Bits the range coder's models spend on ``q`` with ``classes`` (:func:`value_bits` summed; without the
    payload's head, word padding and check value)."""
    return float(sum(value_bits(v, s).sum() for v, s in zip(q, classes)))
