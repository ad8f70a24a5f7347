"""The transform coder (method 'tc'): wavelet, tables, range coding, rate control, hostile payloads."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from helpers.errors import BitstreamError, BudgetError
from helpers.methods.tc import tcoder as T


def _latent(c=32, h=64, w=64, seed=0):
    """A smooth-plus-texture random latent with TAEF2-like ranges (correlated channels)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(c, h // 4 + 1, w // 4 + 1))
    up = np.repeat(np.repeat(base, 4, 1), 4, 2)[:, :h, :w]
    mix = rng.normal(size=(c, c)) / np.sqrt(c)
    return (np.einsum("ij,jyx->iyx", mix, up) + 0.3 * rng.normal(size=(c, h, w))).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (8, 8), (13, 10), (64, 64), (33, 96)])
def test_wavelet_is_perfect_for_any_size(shape):
    x = np.random.default_rng(1).normal(size=(3,) + shape)
    L = T.levels_for(*shape)
    bands = T.dwt2(x, L)
    assert [b.shape[1:] for b in bands] == T.band_shapes(*shape, L)
    assert sum(b[0].size for b in bands) == shape[0] * shape[1]
    np.testing.assert_allclose(T.idwt2(bands), x, atol=1e-12)


def test_wavelet_compacts_a_smooth_signal():
    y, x = np.mgrid[0:64, 0:64]
    sig = np.sin(x / 20.0) + np.cos(y / 25.0)
    bands = T.dwt2(sig[None], 4)
    energy = [float((b**2).sum()) for b in bands]
    assert energy[0] > 0.99 * sum(energy)  # nearly all energy in the 4x4 LL band


def test_levels_for_sizes():
    assert [T.levels_for(s, s) for s in (1, 4, 7, 8, 16, 32, 64, 500)] == [0, 0, 0, 1, 2, 3, 4, 4]


def test_class_tables_are_the_shipped_integers():
    freq, shift = T.class_tables()
    f2, s2 = T.make_class_tables()
    np.testing.assert_array_equal(freq, f2)
    np.testing.assert_array_equal(shift, s2)
    assert freq.shape == (T.N_CLASSES, 2 * T.M + 2) and freq.min() >= 1


@pytest.mark.parametrize("c,h,w", [(4, 16, 16), (4, 10, 13), (32, 8, 8), (32, 64, 64), (3, 1, 1)])
def test_inline_round_trip_is_bit_exact(c, h, w):
    z = _latent(c, h, w, seed=c + h)
    coded, _ = T.encode_latent(z, fingerprint=None, step=0.2)
    assert coded.tables.table_id == 0
    got = T.decode_payload(coded.payload, c, h, w, fingerprint=None)
    np.testing.assert_array_equal(got, coded.latent())
    # the quantized coefficients come back exactly: re-analysing the decode's own tables
    assert got.dtype == np.float32 and got.shape == (c, h, w)


def test_finer_steps_cost_more_and_reconstruct_better():
    z = _latent()
    sizes, errs = [], []
    for step in (2.0, 0.5, 0.1):
        coded, _ = T.encode_latent(z, None, step=step)
        sizes.append(len(coded.payload))
        errs.append(float(np.mean((coded.latent() - z) ** 2)))
    assert sizes[0] < sizes[1] < sizes[2]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("c,budget", [(4, 300), (4, 900), (32, 3000), (32, 5000), (32, 12000)])
def test_rate_control_never_exceeds_the_budget(c, budget):
    z = _latent(c=c, seed=3)
    coded, trials = T.encode_latent(z, None, budget=budget, overhead=42)
    assert len(coded.payload) + 42 <= budget
    # the next finer step would not have fitted: the search is tight
    finer = T.encode_coeffs(T.analyze(z, coded.tables, coded.levels), coded.tables, coded.levels, coded.k - 1)
    assert len(finer.payload) + 42 > budget or coded.k == 0
    assert len(trials) <= 18


def test_impossible_budget_is_a_budget_error():
    with pytest.raises(BudgetError, match="coarsest"):
        T.encode_latent(_latent(), None, budget=2000)  # 32 inline channels: their KLT alone is 2 KB


def _coded():
    coded, _ = T.encode_latent(_latent(4, 16, 16), None, step=0.1)
    return coded.payload


def test_truncated_and_altered_payloads_are_errors():
    payload = _coded()
    for cut in (0, 5, 8, len(payload) - 4, len(payload) - 1):
        with pytest.raises(BitstreamError):
            T.decode_payload(payload[:cut], 4, 16, 16, None)
    bad = bytearray(payload)
    bad[-3] ^= 0x55
    with pytest.raises(BitstreamError):
        T.decode_payload(bytes(bad), 4, 16, 16, None)
    for extra in (b"\x01", b"\x01\x02\x03\x04", bytes(8)):
        with pytest.raises(BitstreamError, match="words announced"):
            T.decode_payload(payload + extra, 4, 16, 16, None)


def test_header_fields_of_the_payload_are_checked():
    payload = bytearray(_coded())
    wrong_version = bytes([9]) + payload[1:]
    with pytest.raises(BitstreamError, match="version 9"):
        T.decode_payload(wrong_version, 4, 16, 16, None)
    with pytest.raises(BitstreamError, match="levels"):
        T.decode_payload(bytes(payload), 4, 64, 64, None)
    unknown = bytes(payload[:1]) + struct.pack("<I", 0xDEADBEEF) + bytes(payload[5:])
    with pytest.raises(BitstreamError, match="tables deadbeef"):
        T.decode_payload(unknown, 4, 16, 16, fingerprint=123)


def test_random_garbage_never_escapes_as_another_exception():
    rng = np.random.default_rng(5)
    payload = _coded()
    for _i in range(300):
        data = bytearray(payload)
        for _ in range(rng.integers(1, 6)):
            data[rng.integers(8, len(data))] = rng.integers(0, 256)
        try:
            out = T.decode_payload(bytes(data), 4, 16, 16, None)
        except BitstreamError:
            continue
        assert out.shape == (4, 16, 16) and np.all(np.isfinite(out))


def test_retrained_tables_keep_old_files_decodable(tmp_path, monkeypatch):
    """save_tables archives the tables it replaces; a file names its tables by id and finds the archived set."""
    monkeypatch.setenv("SDCOMP_CACHE", str(tmp_path))
    fp = 0x0BADF00D
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 16, 16)).astype(np.float32)
    levels = T.levels_for(16, 16)
    path = T.tables_path(fp)[1]
    old = dataclasses.replace(T.inline_tables(z, levels), fingerprint=fp)
    old_id = T.save_tables(path, old)
    coded, _ = T.encode_latent(z, fp, step=0.5)
    assert struct.unpack_from("<I", coded.payload, 1)[0] == old_id  # trained tables, referenced by id
    z_old = T.decode_payload(coded.payload, 4, 16, 16, fp)
    new = dataclasses.replace(old, mu=old.mu + 0.25)
    new_id = T.save_tables(path, new)
    assert new_id != old_id and path.with_name(f"{path.stem}_{old_id:08x}.npz").is_file()
    assert T.trained_tables(fp).table_id == new_id
    np.testing.assert_array_equal(T.decode_payload(coded.payload, 4, 16, 16, fp), z_old)
    path.with_name(f"{path.stem}_{old_id:08x}.npz").unlink()
    with pytest.raises(BitstreamError, match=f"needs transform tables {old_id:08x}.*tc_{fp:08x}_{old_id:08x}.npz"):
        T.decode_payload(coded.payload, 4, 16, 16, fp)


def test_shipped_tables_are_present_and_their_absence_is_an_error(tmp_path, monkeypatch):
    """The stock TAEF2's tables ship with the package; without them the encoder refuses (no silent inline fallback)."""
    from helpers.errors import SDCError

    for fp in T.SHIPPED_TABLES:
        assert (T.DATA_DIR / f"tc_{fp:08x}.npz").is_file() and T.trained_tables(fp).fingerprint == fp
    fp = next(iter(T.SHIPPED_TABLES))
    z = _latent()
    monkeypatch.setattr(T, "DATA_DIR", tmp_path / "data")
    monkeypatch.setenv("SDCOMP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SDCError, match=f"tc tables for this decoder \\(tc_{fp:08x}.npz\\) are missing.*reinstall"):
        T.encode_latent(z, fp, budget=5000)
    coded, _ = T.encode_latent(z, 0x0BADF00D, budget=5000)  # a decoder without shipped tables: inline tables
    assert struct.unpack_from("<I", coded.payload, 1)[0] == 0


# --- payload version 2: per-image scale offsets (trained tables) ---


def _trained():
    from helpers.backends.taef2_spec import TAEF2_FINGERPRINT

    return TAEF2_FINGERPRINT, T.trained_tables(TAEF2_FINGERPRINT)


def test_offset_nibbles_round_trip_every_value_and_odd_counts():
    for shape in ((13, 4), (7, 3), (1, 1), (4, 4)):
        v = np.resize(np.arange(-8, 8), shape[0] * shape[1]).reshape(shape)
        buf = T.offsets_bytes(v)
        assert len(buf) == (v.size + 1) // 2
        np.testing.assert_array_equal(T.parse_offsets(buf, *shape), v)
    assert T.comp_groups(32) == [range(0, 4), range(4, 8), range(8, 16), range(16, 32)]
    assert T.comp_groups(4) == [range(0, 4)] and T.comp_groups(6) == [range(0, 4), range(4, 6)]


def test_chosen_offsets_are_the_brute_force_optimum():
    # an independent reference: every candidate priced on every value of each band and component group
    fp, tables = _trained()
    z = 3.0 * _latent()
    coeffs = T.analyze(z, tables, 4)
    groups = T.comp_groups(32)
    for k in (T.k_of(0.5), T.k_of(2.0), T.k_of(8.0)):
        q = T.quantize(coeffs, k)
        cls = T.coefficient_classes(q, tables, 4, k, clip=False)
        want = np.zeros((len(q), len(groups)), np.int64)
        for b, (v, s) in enumerate(zip(q, cls)):
            for gi, g in enumerate(groups):
                bits = {d: T.value_bits(v[g], np.clip(s[g] + d, 0, T.N_CLASSES - 1)).sum() for d in range(-8, 8)}
                best = min(bits.values())
                want[b, gi] = min((d for d in bits if bits[d] == best), key=lambda d: (abs(d), d))
        got = T.choose_offsets(q, tables, 4, k)
        np.testing.assert_array_equal(got, want)
        assert np.abs(got).max() > 0  # this latent is no average training photo: the offsets move something


def test_version_2_payload_round_trips_and_is_smaller_than_version_1_at_the_same_step():
    fp, tables = _trained()
    z = 3.0 * _latent(seed=2)
    k = T.k_of(2.0)
    coded, _ = T.encode_latent(z, fp, k=k)
    assert coded.payload[0] == 2 and coded.offsets.shape == (13, 4)
    q, kk, dec_tables, levels = T.decode_symbols(coded.payload, 32, 64, 64, fp)
    assert kk == k and all(np.array_equal(a, b) for a, b in zip(q, coded.q))
    np.testing.assert_array_equal(dec_tables.base[4], coded.tables.base[4])
    np.testing.assert_allclose(T.decode_payload(coded.payload, 32, 64, 64, fp), coded.latent(), atol=1e-6)
    # the same coefficients as a version-1 payload (no offsets: the trained base scales): still decodable, and
    # larger by more than the offsets' 26 bytes
    import zlib

    import constriction

    prefix = struct.pack("<BIBH", 1, tables.table_id, 4, k)
    enc = constriction.stream.queue.RangeEncoder()
    T._code_passes(coded.q, [x.shape[1:] for x in coded.q], 32, tables, 4, k, enc=enc, crc=zlib.crc32(prefix))
    words = enc.get_compressed().astype("<u4").tobytes()
    v1 = prefix + T._varint(len(words) // 4) + words
    q1, *_ = T.decode_symbols(v1, 32, 64, 64, fp)
    assert all(np.array_equal(a, b) for a, b in zip(q1, coded.q))
    assert len(coded.payload) < len(v1), (len(coded.payload), len(v1))


def test_version_2_offsets_cut_short_or_altered_are_errors():
    fp, _ = _trained()
    coded, _ = T.encode_latent(3.0 * _latent(seed=3), fp, k=T.k_of(2.0))
    for cut in (9, 20, 33):
        with pytest.raises(BitstreamError, match="truncated"):
            T.decode_payload(coded.payload[:cut], 32, 64, 64, fp)
    bad = bytearray(coded.payload)
    bad[10] ^= 0x11  # an offset changed: the symbols decode under other classes, or the head's check value fails
    with pytest.raises(BitstreamError, match="corrupted"):
        T.decode_payload(bytes(bad), 32, 64, 64, fp)
    with pytest.raises(BitstreamError, match=r"version 3 is not supported \(reads 1, 2\)"):
        T.decode_payload(bytes([3]) + coded.payload[1:], 32, 64, 64, fp)
