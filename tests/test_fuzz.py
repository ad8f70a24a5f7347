"""Fuzzing in CI: >= 5,000 mutated .sdc inputs through parsing, header checks and entropy decoding."""

from __future__ import annotations

import time

import numpy as np
import pytest

from helpers import bitstream, fuzz


def test_fuzz_5000_inputs():
    t0 = time.perf_counter()
    rep = fuzz.run(n=5000, seed=0, time_bound=2.0, alloc_bound=16 << 20)
    cpu = rep.cpu_seconds
    assert rep.ok, rep.failures[:5]
    assert rep.n == 5000 and sum(rep.outcomes.values()) == 5000
    # every mutation kind was exercised and most inputs were refused with the project's error type
    kinds = {k.split(":")[0] for k in rep.by_mutation}
    assert kinds == set(fuzz.MUTATIONS)
    assert sum(v for k, v in rep.outcomes.items() if k.startswith("rejected")) > 4000
    assert rep.max_alloc < 16 << 20 and rep.slowest < 2.0
    # the budget: < 60 s on this machine; CPU time, so other processes on a shared machine don't count
    assert cpu < 60, f"fuzzing took {cpu:.1f} s of CPU"
    assert time.perf_counter() - t0 < 600  # hang guard


def test_fuzz_cli_prints_counts(capsys):
    assert fuzz.main(["--n", "60", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("60 inputs in") and "outcomes:" in out and "per mutation:" in out


def test_fuzz_detects_a_crash(monkeypatch):
    """The harness itself can fail: an exception other than SDCError is reported."""
    real = bitstream.decode_payload

    def broken(h, payload, limits=None):
        if h.coder == "lzma":
            raise IndexError("boom")
        return real(h, payload, limits)

    monkeypatch.setattr(bitstream, "decode_payload", broken)
    rep = fuzz.run(n=200, seed=1, trace_alloc=False)
    assert not rep.ok and any("IndexError: boom" in f["why"] for f in rep.failures)


@pytest.mark.parametrize("kind", fuzz.MUTATIONS)
def test_every_mutation_keeps_the_magic_or_cuts(kind):
    rng = np.random.default_rng(0)
    seed = fuzz._seed(rng)
    for _ in range(20):
        data = fuzz.mutate(seed, kind, rng)
        assert isinstance(data, bytes) and (data[:4] == bitstream.MAGIC or kind == "cut")


def test_fuzz_at_the_default_pixel_caps_largest_sizes(tmp_path):
    """Files at the default cap's largest sizes (8192x8192, 65535x1024, 1024x65535; every palette coder, raw
    latents, tc) and mutations of them, decoded by the whole CLI with the stub decoder in subprocesses under a
    2.5 GiB address-space limit: each ends with an image of the header's size (exit 0) or one `error:` line
    (exit 2)."""
    from pathlib import Path

    tc = (Path(__file__).parent / "fuzz_cap" / "tc_8192x8192.sdc").read_bytes()
    assert bitstream.unpack(tc)[0].latent_height == 1024
    files = fuzz.cap_inputs(tc_file=tc, mutations=6)
    results = fuzz.run_cap(files, tmp_path, limit=fuzz.CAP_AS_LIMIT)
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad
    decoded = {r["name"] for r in results if r["rc"] == 0}
    assert {
        "issue19_46_bytes",
        "8192x8192_k1_lzma",
        "8192x8192_raw",
        "65535x1024_k1_zlib",
        "1024x65535_k1_arith",
        "8192x8192_tc",
    } <= decoded
    assert {r["size"] for r in results if r["rc"] == 0} >= {(8192, 8192), (65535, 1024), (1024, 65535)}
