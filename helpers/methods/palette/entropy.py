"""Lossless coding of a palette (K x C uint8) plus a dithered index map (H x W ints in [0, K)).

Three coders, registered in :data:`CODERS` with stable header ids in :data:`CODER_IDS`:

``zlib``  (id 0)
    The 2022 baseline, byte for byte: ``zlib.compress(palette.tobytes() + indices_bytes, 9)``
    with the indices as uint8 when K <= 256, else uint16 little-endian.

``arith`` (id 1)
    A context-modelling binary range coder (pure Python + numpy, integer arithmetic only, so
    the bitstream is identical on every platform):

    * the palette is reordered along a greedy nearest-neighbour tour (:func:`reorder_palette`)
      and coded as wrapped per-channel deltas from the previous colour, with adaptive binary
      models (zero flag, sign, Elias-gamma magnitude) -- or stored raw (1 flag bit) when that
      is smaller, e.g. for an unstructured palette;
    * every index is coded against a colour predicted from the already-decoded neighbours
      (per-channel MED / LOCO-I predictor over the left, up and up-left colours).  A list of
      the distinct indices of 6 causal neighbours, sorted by distance to the prediction, is
      tried first (flag + position: dithering repeats neighbour colours); otherwise the *rank*
      of the colour among the remaining palette colours sorted by squared distance to the
      prediction (ties by palette index) is coded, binarised Elias-gamma style.  The binary
      models are selected by the list length and by how many palette colours lie within the
      local activity radius of the prediction;
    * a CRC-32 over (K, C, H, W, coded bytes) is stored in front, so truncated, corrupted or
      mismatched streams raise :class:`helpers.errors.BitstreamError` -- every single-bit error
      is caught -- instead of silently decoding to a different map.

    ``unpack_arith`` returns the palette in tour order and the indices remapped accordingly:
    ``palette[indices]`` (the decoded latent) is identical to the input's, the palette order is
    not (keeping it would cost log2(K!) bits, ~210 bytes at K=256).

``lzma``  (id 2)
    Raw LZMA2 of the same bytes as ``zlib`` plus the same 4-byte CRC seal (~13 % smaller than
    zlib on dithered maps, far behind ``arith``; a fast fallback).  Its decoding is stable; its
    encoded bytes may differ between liblzma versions (only ``zlib``/``arith`` are pinned).

Stream layout of ``arith``: ``crc32 (4 bytes, big-endian) | range-coder bytes``; the range coder
starts with one raw bit (palette stored raw / delta-coded) and up to ``MAX_IMPLICIT_ZEROS`` trailing
zero bytes are dropped (the decoder reads zeros past the end, and calls a stream that needs more a
truncated one; it also checks the coder's final state), so the overhead over the entropy-coded payload
is ~5 bytes.  Everything in the coder is integer arithmetic (Python ints, int64 numpy with
exact ranges), so the bitstream is identical on every platform.

Measured on Kodak-derived dithered 64x64 maps (``scripts/measure_entropy.py``, 24 images):
arith saves 33.8 % vs zlib at C=4/K=256 (RGBA palette), 24.4 % at C=4/K=256 (4-channel patch
projection), 26.1 % at C=32/K=64; encode ~50-80 ms, decode ~150-250 ms per map in CPython.
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

from ...errors import BitstreamError

__all__ = [
    "pack_zlib",
    "unpack_zlib",
    "pack_arith",
    "unpack_arith",
    "pack_lzma",
    "unpack_lzma",
    "reorder_palette",
    "CODERS",
    "CODER_IDS",
]

MAX_K = 65536
#: an arith stream drops at most this many trailing zero bytes (3 are always zero after the flush); a
#: decoder that needs more implicit zeros ran out of payload. Files written before this bound dropped
#: every trailing zero: they decode unless more than 5 zero bytes preceded the flush (measured: 3 or 4
#: implicit zeros on every stream tried, see tests/test_entropy.py).
MAX_IMPLICIT_ZEROS = 8
TOUR_MAX_K = 1024  # larger palettes are sorted lexicographically instead of toured


# ----------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------


def _check_inputs(palette, indices):
    palette = np.asarray(palette)
    indices = np.asarray(indices)
    if palette.ndim != 2 or palette.dtype != np.uint8:
        raise ValueError(f"palette must be a (K, C) uint8 array, got {palette.dtype} {palette.shape}")
    K, C = palette.shape
    if not 1 <= K <= MAX_K or C < 1:
        raise ValueError(f"palette must have 1..{MAX_K} colours and >= 1 channel, got {palette.shape}")
    if indices.ndim != 2 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a 2-D integer array, got {indices.dtype} {indices.shape}")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= K):
        raise ValueError(f"indices must lie in [0, {K}), got [{indices.min()}, {indices.max()}]")
    return np.ascontiguousarray(palette), indices.astype(np.int64)


def _check_dims(K, C, H, W):
    """Dimensions come from a file header: bad ones are a BitstreamError, not a crash."""
    for name, v in (("K", K), ("C", C), ("H", H), ("W", W)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise BitstreamError(f"palette/index stream dimension {name}={v!r} is not a non-negative integer")
    if not 1 <= K <= MAX_K or C < 1:
        raise BitstreamError(f"palette/index stream needs K in 1..{MAX_K} and C >= 1, got K={K}, C={C}")
    return int(K), int(C), int(H), int(W)


# ----------------------------------------------------------------------------------------------
# zlib baseline
# ----------------------------------------------------------------------------------------------


def _index_bytes(indices: np.ndarray, K: int) -> bytes:
    dt = np.uint8 if K <= 256 else np.dtype("<u2")
    return np.ascontiguousarray(indices, dtype=dt).tobytes()


def pack_zlib(palette: np.ndarray, indices: np.ndarray) -> bytes:
    """The baseline: ``zlib.compress(palette.tobytes() + indices_bytes, 9)``.

    Indices are stored as uint8 when K <= 256, else as uint16 little-endian.
    """
    palette, idx = _check_inputs(palette, indices)
    return zlib.compress(palette.tobytes() + _index_bytes(idx, palette.shape[0]), 9)


def unpack_zlib(data: bytes, K: int, C: int, H: int, W: int):
    """Inverse of :func:`pack_zlib`; returns ``(palette (K, C) uint8, indices (H, W) int64)``."""
    K, C, H, W = _check_dims(K, C, H, W)
    isz = 1 if K <= 256 else 2
    want = K * C + H * W * isz
    dec = zlib.decompressobj()
    try:
        raw = dec.decompress(bytes(data), want + 1)  # bounded: a corrupt stream cannot balloon
    except zlib.error as e:
        raise BitstreamError(f"zlib palette/index stream is corrupted ({e})") from None
    if not dec.eof:
        raise BitstreamError("zlib palette/index stream is truncated (no end of stream)")
    if len(raw) != want or dec.unused_data or dec.unconsumed_tail:
        raise BitstreamError(
            f"zlib palette/index stream decodes to {len(raw)} bytes"
            f"{' plus trailing data' if dec.unused_data else ''}, expected {want}"
        )
    return _split_raw(raw, K, C, H, W, "zlib")


def _split_raw(raw: bytes, K, C, H, W, name):
    palette = np.frombuffer(raw, dtype=np.uint8, count=K * C).reshape(K, C).copy()
    dt = np.uint8 if K <= 256 else np.dtype("<u2")
    indices = np.frombuffer(raw, dtype=dt, offset=K * C).reshape(H, W).astype(np.int64)
    if indices.size and int(indices.max()) >= K:
        raise BitstreamError(f"{name} index stream holds index {int(indices.max())} >= K={K}")
    return palette, indices


# ----------------------------------------------------------------------------------------------
# palette reordering
# ----------------------------------------------------------------------------------------------


def _nn_tour(palette: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour tour through the colours (deterministic, integer distances).

    Starts at the colour with the smallest channel sum (lowest index on ties); each step goes to
    the nearest unvisited colour in squared L2 distance (lowest index on ties).  Palettes with
    more than ``TOUR_MAX_K`` colours (quadratic cost) are sorted lexicographically instead.
    """
    P = palette.astype(np.int64)
    K = P.shape[0]
    if K > TOUR_MAX_K:
        return np.lexsort(P.T[::-1]).astype(np.int64)
    if K <= 2:
        s = int(np.argmin(P.sum(1)))
        return np.array([s, 1 - s][:K], dtype=np.int64)
    sq = (P * P).sum(1)
    D = sq[:, None] + sq[None, :] - 2 * (P @ P.T)
    big = np.iinfo(np.int64).max
    order = np.empty(K, dtype=np.int64)
    cur = int(np.argmin(P.sum(1)))
    visited = np.zeros(K, dtype=bool)
    for t in range(K):
        order[t] = cur
        visited[cur] = True
        if t + 1 < K:
            row = np.where(visited, big, D[cur])
            cur = int(np.argmin(row))
    return order


def reorder_palette(palette: np.ndarray, indices: np.ndarray):
    """Reorder the palette so that similar colours get nearby indices.

    Returns ``(palette2, indices2, perm)`` with ``palette2 = palette[perm]`` and
    ``indices2[i] = position of indices[i] in perm``, hence ``palette2[indices2] ==
    palette[indices]`` exactly.  The order is a greedy nearest-neighbour tour (see
    :func:`_nn_tour`); it is deterministic.
    """
    palette, idx = _check_inputs(palette, indices)
    perm = _nn_tour(palette)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=np.int64)
    return palette[perm].copy(), inv[idx], perm


# ----------------------------------------------------------------------------------------------
# binary range coder (LZMA style: 32-bit range, carry via cache byte) with adaptive-rate models
# ----------------------------------------------------------------------------------------------

PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
RATE_LIMIT = 60  # adaptation: rate 1/(n+2) for the first observations, then 1/(RATE_LIMIT+2)
_RATE = [PROB_ONE // (n + 2) for n in range(RATE_LIMIT + 1)]
_PMIN = 48
_PMAX = PROB_ONE - 48


class _Model:
    """Adaptive probability that the next bit is 0 (16-bit fixed point) with a growing window."""

    __slots__ = ("p", "n")

    def __init__(self):
        self.p = PROB_ONE >> 1
        self.n = 0

    def update(self, bit):
        r = _RATE[self.n]
        if self.n < RATE_LIMIT:
            self.n += 1
        if bit:
            p = self.p - ((self.p * r) >> 16)
            self.p = p if p > _PMIN else _PMIN
        else:
            p = self.p + (((PROB_ONE - self.p) * r) >> 16)
            self.p = p if p < _PMAX else _PMAX


class _Encoder:
    __slots__ = ("low", "range", "cache", "pending", "out")

    def __init__(self):
        self.low = 0
        self.range = _MASK32
        self.cache = 0  # LZMA convention: a leading 0 byte that finish() drops again
        self.pending = 1  # bytes waiting for a possible carry: cache + (pending-1) x 0xFF
        self.out = bytearray()

    def _shift(self):
        low = self.low
        if low < 0xFF000000 or low > _MASK32:
            carry = low >> 32
            self.out.append((self.cache + carry) & 0xFF)
            if self.pending > 1:
                self.out.extend(bytes([(0xFF + carry) & 0xFF]) * (self.pending - 1))
            self.pending = 0
            self.cache = (low >> 24) & 0xFF
        self.pending += 1
        self.low = (low << 8) & _MASK32

    def bit(self, m: _Model, bit):
        bound = (self.range >> PROB_BITS) * m.p
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        m.update(bit)
        while self.range < _TOP:
            self.range <<= 8
            self._shift()

    def bits(self, value, n):
        """n raw (equiprobable) bits, most significant first."""
        for i in range(n - 1, -1, -1):
            self.range >>= 1
            if (value >> i) & 1:
                self.low += self.range
            while self.range < _TOP:
                self.range <<= 8
                self._shift()

    def finish(self) -> bytes:
        # pick the value in [low, low + range) with the most trailing zero bits
        self.low = (self.low + _TOP - 1) & ~(_TOP - 1)
        for _ in range(5):
            self._shift()
        out = bytes(self.out)
        # the first byte of an LZMA-style stream is always 0 (the initial cache): drop it
        out = out[1:]
        # trailing zero bytes are implicit (the decoder reads zeros past the end), but at most
        # MAX_IMPLICIT_ZEROS of them, so that a decoder running further is a truncated stream
        n = len(out) - len(out.rstrip(b"\x00"))
        return out[: len(out) - min(n, MAX_IMPLICIT_ZEROS)]


class _Decoder:
    __slots__ = ("data", "pos", "range", "code", "end")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.range = _MASK32
        self.code = 0
        self.end = len(data) + MAX_IMPLICIT_ZEROS  # reading byte `end` means the payload ran out
        for _ in range(4):
            self.code = (self.code << 8) | self._byte()

    def _byte(self):
        p = self.pos
        self.pos = p + 1
        if p < len(self.data):
            return self.data[p]
        if p >= self.end:
            raise BitstreamError(
                f"arith palette/index stream ran out of payload after {len(self.data)} bytes "
                f"(truncated or corrupted); re-copy the file"
            )
        return 0

    def finished_cleanly(self) -> bool:
        """After the last symbol: the encoder flushed ``low`` rounded up to a multiple of 2^24, so the
        code value lies below 2^24 and at least 3 implicit zero bytes were read."""
        return self.code < _TOP and len(self.data) + 3 <= self.pos

    def bit(self, m: _Model):
        bound = (self.range >> PROB_BITS) * m.p
        if self.code < bound:
            self.range = bound
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        m.update(bit)
        while self.range < _TOP:
            self.range <<= 8
            self.code = ((self.code << 8) | self._byte()) & _MASK32
        return bit

    def bits(self, n):
        v = 0
        for _ in range(n):
            self.range >>= 1
            if self.code >= self.range:
                self.code -= self.range
                b = 1
            else:
                b = 0
            v = (v << 1) | b
            while self.range < _TOP:
                self.range <<= 8
                self.code = ((self.code << 8) | self._byte()) & _MASK32
        return v


# ----------------------------------------------------------------------------------------------
# palette coding: wrapped per-channel deltas along the tour, adaptive binary models
# ----------------------------------------------------------------------------------------------


def _mag_bucket(m):
    # 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, 8+ -> 4
    b = m.bit_length()
    return b if b < 4 else 4


class _PaletteModels:
    def __init__(self, C):
        nctx = 6  # previous-channel magnitude bucket (0..4) or 5 = first channel
        self.zero = [[_Model() for _ in range(nctx)] for _ in range(C)]
        self.sign = [_Model() for _ in range(nctx)]
        self.unary = [[_Model() for _ in range(8)] for _ in range(nctx)]
        self.mant = [[_Model() for _ in range(16)] for _ in range(8)]


def _encode_palette(enc: _Encoder, pal: np.ndarray):
    K, C = pal.shape
    M = _PaletteModels(C)
    prev = [128] * C
    rows = pal.tolist()
    for row in rows:
        pctx = 5
        for c in range(C):
            v = row[c]
            d = ((v - prev[c] + 128) & 255) - 128
            prev[c] = v
            enc.bit(M.zero[c][pctx], 1 if d else 0)
            if not d:
                pctx = 0
                continue
            enc.bit(M.sign[pctx], 1 if d < 0 else 0)
            m = -d if d < 0 else d
            u = m.bit_length() - 1
            um = M.unary[pctx]
            for j in range(u):
                enc.bit(um[j], 1)
            if u < 7:
                enc.bit(um[u], 0)
            if u:
                top = (m >> (u - 1)) & 1
                enc.bit(M.mant[u][0], top)
                if u > 1:
                    enc.bits(m & ((1 << (u - 1)) - 1), u - 1)
            pctx = _mag_bucket(m)


def _decode_palette(dec: _Decoder, K: int, C: int) -> np.ndarray:
    M = _PaletteModels(C)
    prev = [128] * C
    out = np.empty((K, C), dtype=np.uint8)
    for k in range(K):
        row = [0] * C
        pctx = 5
        for c in range(C):
            if not dec.bit(M.zero[c][pctx]):
                row[c] = prev[c]
                pctx = 0
                continue
            neg = dec.bit(M.sign[pctx])
            um = M.unary[pctx]
            u = 0
            while u < 7 and dec.bit(um[u]):
                u += 1
            m = 1 << u
            if u:
                m |= dec.bit(M.mant[u][0]) << (u - 1)
                if u > 1:
                    m |= dec.bits(u - 1)
            d = -m if neg else m
            v = (prev[c] + d) & 255
            row[c] = v
            prev[c] = v
            pctx = _mag_bucket(m)
        out[k] = row
    return out


# ----------------------------------------------------------------------------------------------
# index map coding
#
# For every pixel (raster order) the decoder knows the colours of the causal neighbours.
# 1. prediction: per-channel MED (LOCO-I) of the left/up/up-left colours; activity = squared
#    gradients; key_k = squared distance(palette_k, prediction) * K + k (unique, ties by index).
# 2. candidate list: the distinct indices of 6 causal neighbours (left, up, up-left, up-right,
#    left-left, up-up), sorted by key.  A flag says whether the pixel's index is in the list;
#    if so, its position is coded (truncated unary), otherwise its rank among the remaining
#    colours sorted by key is coded (Elias-gamma binarisation of rank+1).
# 3. contexts: number of candidates and a "density" bucket (how many palette colours lie within
#    the activity radius of the prediction, log2-bucketed).
# ----------------------------------------------------------------------------------------------

N_DENS = 8  # density buckets: min(bit_length(#colours with distance <= activity), N_DENS - 1)
MAX_LIST = 6  # neighbours in the candidate list
MANT_ADAPT = 1  # mantissa bits (below the leading 1) coded with adaptive models; rest raw
_NB_OFFSETS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0))


def _dens_bucket(dens):
    b = dens.bit_length()
    return b if b < N_DENS else N_DENS - 1


class _IndexModels:
    def __init__(self, K):
        self.umax = K.bit_length() - 1  # rank+1 lies in [1, K] -> leading-bit position <= umax
        L1 = MAX_LIST + 1
        self.inlist = [[_Model() for _ in range(N_DENS)] for _ in range(L1)]
        self.pos = [[[_Model() for _ in range(MAX_LIST)] for _ in range(N_DENS)] for _ in range(L1)]
        self.unary = [[_Model() for _ in range(max(self.umax, 1))] for _ in range(N_DENS)]
        self.mant = [[_Model() for _ in range(1 << MANT_ADAPT)] for _ in range(self.umax + 1)]


def _shifted(idx, dy, dx):
    """idx shifted so that out[y, x] = idx[y + dy, x + dx] (-1 outside)."""
    H, W = idx.shape
    out = np.full((H, W), -1, dtype=np.int64)
    ys, ye = max(-dy, 0), H - max(dy, 0)
    xs, xe = max(-dx, 0), W - max(dx, 0)
    if ys < ye and xs < xe:
        out[ys:ye, xs:xe] = idx[ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def _pred_neighbours(idx):
    """Left a, up b, up-left c, up-right d for the predictor, with border substitutes.

    First row: b = c = d = a.  First column: a = c = b.  Last column: d = b.
    The first pixel has none (-1).
    """
    a = _shifted(idx, 0, -1)
    b = _shifted(idx, -1, 0)
    c = _shifted(idx, -1, -1)
    d = _shifted(idx, -1, 1)
    a[1:, 0] = b[1:, 0]
    c[1:, 0] = b[1:, 0]
    d[1:, -1] = b[1:, -1]
    b[0, 1:] = a[0, 1:]
    c[0, 1:] = a[0, 1:]
    d[0, 1:] = a[0, 1:]
    return a, b, c, d


def _index_symbols(pal: np.ndarray, idx: np.ndarray):
    """Encoder side, vectorised.  Per pixel (raster order): list length L, density bucket,
    in-list flag, position in the list (if in) or rank among the non-listed colours (if not)."""
    H, W = idx.shape
    K, C = pal.shape
    P = pal.astype(np.int64)
    a, b, c, d = _pred_neighbours(idx)
    first = a < 0
    A, B, Cc, Dd = (P[np.where(first, 0, x)] for x in (a, b, c, d))
    pred = np.clip(A + B - Cc, np.minimum(A, B), np.maximum(A, B))
    pred[first] = 128
    act = ((A - Cc) ** 2 + (B - Cc) ** 2 + (B - Dd) ** 2).sum(-1)
    act[first] = 0
    n = H * W
    pred = pred.reshape(n, C)
    act = act.reshape(n)
    # candidate list members (deduplicated: a repeat of an earlier neighbour is dropped)
    nbs = [_shifted(idx, dy, dx).reshape(n) for dy, dx in _NB_OFFSETS]
    valid = []
    for j, nj in enumerate(nbs):
        v = nj >= 0
        for i in range(j):
            v &= nj != nbs[i]
        valid.append(v)
    t = idx.reshape(n)
    ar = np.arange(K, dtype=np.int64)
    sqP = (P * P).sum(1)
    rank = np.empty(n, dtype=np.int64)
    dens = np.empty(n, dtype=np.int64)
    below = np.zeros(n, dtype=np.int64)  # listed neighbours with key < key(true)
    inlist = np.zeros(n, dtype=bool)
    L = np.zeros(n, dtype=np.int64)
    step = max(1, (1 << 20) // K)
    for s in range(0, n, step):
        e = min(n, s + step)
        pr = pred[s:e]
        D = sqP[None, :] - 2 * (pr @ P.T) + (pr * pr).sum(1)[:, None]
        key = D * K + ar[None, :]
        rows = np.arange(e - s)
        kt = key[rows, t[s:e]]
        rank[s:e] = (key < kt[:, None]).sum(1)
        dens[s:e] = (act[s:e, None] >= D).sum(1)
        for nj, vj in zip(nbs, valid):
            v = vj[s:e]
            kn = key[rows, np.maximum(nj[s:e], 0)]
            below[s:e] += v & (kn < kt)
            inlist[s:e] |= v & (nj[s:e] == t[s:e])
            L[s:e] += v
    # in the list: position = #listed with smaller key; else: rank among non-listed colours
    sym = np.where(inlist, below, rank - below)
    dens_b = np.array([_dens_bucket(x) for x in dens.tolist()], dtype=np.int64)
    return L, dens_b, inlist, sym


def _encode_indices(enc: _Encoder, pal: np.ndarray, idx: np.ndarray):
    K = pal.shape[0]
    if K == 1 or idx.size == 0:
        return
    Ls, dbs, ins, syms = _index_symbols(pal, idx)
    M = _IndexModels(K)
    umax = M.umax
    mmask = (1 << MANT_ADAPT) - 1
    bit = enc.bit
    for L, db, inl, s in zip(Ls.tolist(), dbs.tolist(), ins.tolist(), syms.tolist()):
        if L:
            bit(M.inlist[L][db], 1 if inl else 0)
            if inl:
                pm = M.pos[L][db]
                for q in range(s):
                    bit(pm[q], 1)
                if s < L - 1:
                    bit(pm[s], 0)
                continue
        # rank among the non-listed colours: Elias-gamma of v = rank + 1 (v <= K - L)
        um = M.unary[db]
        v = s + 1
        u = v.bit_length() - 1
        for j in range(u):
            bit(um[j], 1)
        if u < umax:
            bit(um[u], 0)
        if u:
            mm = M.mant[u]
            na = u if u < MANT_ADAPT else MANT_ADAPT
            node = 1
            for j in range(u - 1, u - 1 - na, -1):
                bb = (v >> j) & 1
                bit(mm[node & mmask], bb)
                node = node * 2 + bb
            rest = u - na
            if rest:
                enc.bits(v & ((1 << rest) - 1), rest)


def _decode_indices(dec: _Decoder, pal: np.ndarray, H: int, W: int) -> np.ndarray:
    K, C = pal.shape
    if K == 1 or H * W == 0:
        return np.zeros((H, W), dtype=np.int64)
    P = pal.astype(np.int64)
    ar = np.arange(K, dtype=np.int64)
    # key_k = D_k * K + k with D_k = |P_k|^2 - 2 P_k.pred + |pred|^2, one matrix-vector product
    base = (P * P).sum(1) * K + ar
    P2K = P * (2 * K)
    M = _IndexModels(K)
    umax = M.umax
    mmask = (1 << MANT_ADAPT) - 1
    bit = dec.bit
    pred0 = np.full(C, 128, dtype=np.int64)
    minimum = np.minimum
    maximum = np.maximum
    count_nonzero = np.count_nonzero
    rows = [[0] * W for _ in range(H)]
    for y in range(H):
        row = rows[y]
        up = rows[y - 1] if y > 0 else None
        up2 = rows[y - 2] if y > 1 else None
        for x in range(W):
            # --- prediction and activity
            if y == 0:
                pred = P[row[x - 1]] if x else pred0
                act = 0
            else:
                ib = up[x]
                if x == 0:
                    ia = ic = ib
                else:
                    ia = row[x - 1]
                    ic = up[x - 1]
                id_ = up[x + 1] if x + 1 < W else ib
                A = P[ia]
                B = P[ib]
                Cc = P[ic]
                if ia == ib:
                    pred = A
                else:
                    mn = minimum(A, B)
                    s = A + B
                    pred = minimum(maximum(s - Cc, mn), s - mn)
                t1 = A - Cc
                t2 = B - Cc
                t3 = B - P[id_]
                act = int(t1 @ t1 + t2 @ t2 + t3 @ t3)
            key = base - P2K @ pred + int(pred @ pred) * K
            db = _dens_bucket(int(count_nonzero(key < (act + 1) * K)))  # #{D_k <= act}
            # --- candidate list (same order of offsets as _NB_OFFSETS)
            nb = []
            if x > 0:
                nb.append(row[x - 1])
            if y > 0:
                v = up[x]
                if v not in nb:
                    nb.append(v)
                if x > 0:
                    v = up[x - 1]
                    if v not in nb:
                        nb.append(v)
                if x + 1 < W:
                    v = up[x + 1]
                    if v not in nb:
                        nb.append(v)
            if x > 1:
                v = row[x - 2]
                if v not in nb:
                    nb.append(v)
            if y > 1:
                v = up2[x]
                if v not in nb:
                    nb.append(v)
            L = len(nb)
            if L:
                if L > 1:
                    kn = key[nb].tolist()
                    nb = [k for _, k in sorted(zip(kn, nb))]
                if bit(M.inlist[L][db]):
                    pm = M.pos[L][db]
                    q = 0
                    while q < L - 1 and bit(pm[q]):
                        q += 1
                    row[x] = nb[q]
                    continue
            # --- rank among the non-listed colours
            um = M.unary[db]
            u = 0
            while u < umax and bit(um[u]):
                u += 1
            v = 1
            if u:
                mm = M.mant[u]
                na = u if u < MANT_ADAPT else MANT_ADAPT
                for _ in range(na):
                    v = v * 2 + bit(mm[v & mmask])
                rest = u - na
                if rest:
                    v = (v << rest) | dec.bits(rest)
            r = v - 1
            if r >= K - L:
                raise BitstreamError(f"arith index stream decodes rank {r} >= {K - L} (corrupted)")
            if L:
                order = np.argpartition(key, r + L)[: r + L + 1] if r + L + 1 < K else ar
                order = order[np.argsort(key[order])]
                cnt = 0
                for k in order.tolist():
                    if k in nb:
                        continue
                    if cnt == r:
                        row[x] = k
                        break
                    cnt += 1
            elif r == 0:
                row[x] = int(np.argmin(key))
            else:
                row[x] = int(np.argpartition(key, r)[r])
    return np.array(rows, dtype=np.int64).reshape(H, W)


# ----------------------------------------------------------------------------------------------
# integrity seal: CRC-32 over the dimensions and the coded bytes (4 bytes, in front)
# ----------------------------------------------------------------------------------------------


def _dims_bytes(K, C, H, W) -> bytes:
    return b"".join(int(v).to_bytes(4, "big") for v in (K, C, H, W))


def _seal(payload: bytes, K, C, H, W) -> bytes:
    return zlib.crc32(payload, zlib.crc32(_dims_bytes(K, C, H, W))).to_bytes(4, "big") + payload


def _unseal(data, K, C, H, W, name: str) -> bytes:
    data = bytes(data)
    if len(data) < 4:
        raise BitstreamError(f"{name} palette/index stream is truncated ({len(data)} bytes)")
    payload = data[4:]
    if zlib.crc32(payload, zlib.crc32(_dims_bytes(K, C, H, W))) != int.from_bytes(data[:4], "big"):
        raise BitstreamError(
            f"{name} palette/index stream is corrupted or truncated, or K/C/H/W do not match (CRC mismatch)"
        )
    return payload


# ----------------------------------------------------------------------------------------------
# arith: public API
# ----------------------------------------------------------------------------------------------


def pack_arith(palette: np.ndarray, indices: np.ndarray) -> bytes:
    """Context-modelling range coder for a palette + index map (see the module docstring).

    The palette is coded in nearest-neighbour tour order, so :func:`unpack_arith` returns a
    permuted palette with remapped indices; ``palette[indices]`` is reproduced exactly.
    """
    palette, idx = _check_inputs(palette, indices)
    pal2, idx2, _ = reorder_palette(palette, idx)
    # palette: adaptive delta coding, or raw 8-bit values if that would be smaller (1 flag bit)
    trial = _Encoder()
    _encode_palette(trial, pal2)
    raw_palette = len(trial.finish()) > pal2.size
    enc = _Encoder()
    enc.bits(int(raw_palette), 1)
    if raw_palette:
        for v in pal2.reshape(-1).tolist():
            enc.bits(v, 8)
    else:
        _encode_palette(enc, pal2)
    _encode_indices(enc, pal2, idx2)
    return _seal(enc.finish(), *pal2.shape, *idx2.shape)


def unpack_arith(data: bytes, K: int, C: int, H: int, W: int):
    """Inverse of :func:`pack_arith`: ``(palette (K, C) uint8, indices (H, W) int64)``.

    The palette comes back in tour order (``palette[indices]`` equals the packed one).
    Raises :class:`BitstreamError` on truncated, corrupted or trailing-garbage input.
    """
    K, C, H, W = _check_dims(K, C, H, W)
    payload = _unseal(data, K, C, H, W, "arith")
    try:
        dec = _Decoder(payload)
        if dec.bits(1):
            palette = np.array([dec.bits(8) for _ in range(K * C)], dtype=np.uint8).reshape(K, C)
        else:
            palette = _decode_palette(dec, K, C)
        indices = _decode_indices(dec, palette, H, W)
    except BitstreamError:
        raise
    except (IndexError, ValueError, OverflowError) as e:  # defensive: never leak a traceback
        raise BitstreamError(f"arith palette/index stream is corrupted ({type(e).__name__})") from None
    # the coder's last 3 bytes are always zero and dropped by the encoder (see _Encoder.finish)
    if len(payload) + 3 > dec.pos:
        raise BitstreamError(f"arith palette/index stream has {len(payload) + 3 - dec.pos} unexpected trailing bytes")
    if not dec.finished_cleanly():
        raise BitstreamError("arith palette/index stream does not end where the coder ends (truncated or corrupted)")
    return palette, indices


# ----------------------------------------------------------------------------------------------
# lzma: raw LZMA2 of the same bytes as zlib, sealed with a CRC-32 (a cheap middle ground)
# ----------------------------------------------------------------------------------------------

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]


def pack_lzma(palette: np.ndarray, indices: np.ndarray) -> bytes:
    """``crc32 | raw LZMA2(palette bytes + index bytes)`` -- same layout as :func:`pack_zlib`."""
    palette, idx = _check_inputs(palette, indices)
    raw = palette.tobytes() + _index_bytes(idx, palette.shape[0])
    comp = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return _seal(comp, *palette.shape, *idx.shape)


def unpack_lzma(data: bytes, K: int, C: int, H: int, W: int):
    """Inverse of :func:`pack_lzma`; returns ``(palette (K, C) uint8, indices (H, W) int64)``."""
    K, C, H, W = _check_dims(K, C, H, W)
    payload = _unseal(data, K, C, H, W, "lzma")
    isz = 1 if K <= 256 else 2
    want = K * C + H * W * isz
    # the decoder's dictionary only has to span the output (no match reaches further back), so a small
    # file does not cost the encoder's 64 MiB preset-9 dictionary
    dict_size = min(1 << 26, max(1 << 12, want))
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": dict_size, "lc": 0, "lp": 0, "pb": 0}]
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    try:
        raw = dec.decompress(payload, max_length=want + 1)
    except lzma.LZMAError as e:
        raise BitstreamError(f"lzma palette/index stream is corrupted ({e})") from None
    if len(raw) != want or not dec.eof or dec.unused_data:
        raise BitstreamError(f"lzma palette/index stream decodes to {len(raw)} bytes, expected {want}")
    return _split_raw(raw, K, C, H, W, "lzma")


CODERS = {
    "zlib": (pack_zlib, unpack_zlib),
    "arith": (pack_arith, unpack_arith),
    "lzma": (pack_lzma, unpack_lzma),
}

# stable ids for the file header -- never renumber
CODER_IDS = {"zlib": 0, "arith": 1, "lzma": 2}  # id 3 is the tc method's range coder (helpers.methods.tc)
