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
