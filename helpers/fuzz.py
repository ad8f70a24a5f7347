"""Structure-aware fuzzing of the .sdc reader: parsing, header checks and entropy decoding.

    python -m helpers.fuzz --n 100000            # long run: prints counts per outcome, exits 1 on any failure
    python -m helpers.fuzz --n 2000 --seed 7 --json

Seeds are small valid files built without a model (random palettes + smooth index maps, every method,
coder, policy and the denoise fields). Each input is one seed plus one mutation:

* ``bitflip``     1-3 flipped bits anywhere, outer CRC (and the arith/lzma inner CRC) resealed
* ``field``       one header field set to an extreme (0, 1, max, NaN, inf, negative, huge), resealed
* ``geometry``    width/height/latent size set consistently large or inconsistent, resealed
* ``truncate``    payload cut short (length field fixed, CRCs resealed); ``extend``: bytes appended
* ``payload``     payload bytes overwritten / zeroed, CRCs resealed
* ``bomb``        zlib / lzma streams that expand far beyond what the header allows
  (transform-coded ``tc`` seeds carry inline tables, so they decode without a model)
* ``cut``         the file cut anywhere (no resealing); ``garbage``: random bytes after the magic
* ``model_id``    odd model ids (invalid UTF-8, control characters, ``~user``, paths, very long)

An input *passes* when the reader either returns a latent of the announced shape or raises the
project's own error type (:class:`helpers.errors.SDCError`). It *fails* on any other exception, on
taking longer than ``time_bound`` seconds, or on allocating more than ``alloc_bound`` bytes (tracemalloc
peak, which covers numpy buffers). The harness decodes under a small pixel cap (``Limits(max_pixels=
65536)``), so that a header claiming a big (but consistent) image stays cheap to refuse or decode.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import lzma
import math
import struct
import sys
import time
import tracemalloc
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import bitstream
from .backends.base import Backend
from .errors import SDCError
from .methods import registry  # noqa: F401 - registers the shipped methods with the container
from .methods.palette import entropy

FUZZ_LIMITS = bitstream.Limits(max_pixels=65536)
MUTATIONS = ("bitflip", "field", "geometry", "truncate", "extend", "payload", "bomb", "cut", "garbage", "model_id")

# v1 header fields after the model id: name -> (struct format, offset from the end of the model id)
_FIELDS = {
    "fingerprint": ("<I", 0),
    "width": ("<H", 4),
    "height": ("<H", 6),
    "channels": ("<B", 8),
    "latent_height": ("<H", 9),
    "latent_width": ("<H", 11),
    "quant_span": ("<f", 13),
    "colors": ("<H", 17),
}
_EXTREMES = {
    "<H": [0, 1, 2, 255, 256, 4096, 4097, 32768, 65534, 65535],
    "<B": [0, 1, 3, 4, 5, 32, 33, 128, 255],
    "<I": [0, 1, 0xFFFFFFFF],
    "<f": [0.0, -0.0, -1.0, 1e-30, 1e-6, 1.0, 1024.0, 1025.0, 1e30, math.inf, -math.inf, math.nan, 3.4e38],
}


# ------------------------------------------------------------------------------------------
# seeds
# ------------------------------------------------------------------------------------------


def _seed(rng: np.random.Generator) -> bytes:
    """A small valid file: every method, coder and policy; latents up to 6x6 so decoding stays fast."""
    method = str(rng.choice(["kmeans", "kmeans", "liq", "raw", "tc", "tc"]))
    coder = {"raw": "zlib", "tc": "range"}.get(method) or str(rng.choice(["zlib", "arith", "arith", "lzma"]))
    c = 4 if method == "liq" else int(rng.choice([1, 3, 4, 8]))
    lh, lw = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    policy = str(rng.choice(["pad8", "none"]))
    w = lw * 8 - (int(rng.integers(0, 8)) if policy == "pad8" else 0)
    h = lh * 8 - (int(rng.integers(0, 8)) if policy == "pad8" else 0)
    if method == "raw":
        payload, k = zlib.compress(rng.integers(0, 256, c * lh * lw, dtype=np.uint8).tobytes(), 9), 0
    elif method == "tc":  # inline tables (no model needed), a smooth latent plus noise
        from .methods.tc import tcoder

        yy, xx = np.mgrid[0:lh, 0:lw]
        z = np.sin(xx / 2.0 + yy / 3.0)[None] * rng.normal(0, 2, (c, 1, 1)) + rng.normal(0, 0.5, (c, lh, lw))
        payload, k = (
            tcoder.encode_latent(z.astype(np.float32), None, step=float(rng.choice([0.05, 0.3, 1.0])))[0].payload,
            0,
        )
    else:
        k = int(rng.integers(1, min(16, lh * lw) + 1))
        base = np.linspace(0, 255, k)[:, None] + rng.normal(0, 12, (k, c))
        pal = np.clip(base, 0, 255).astype(np.uint8)
        yy, xx = np.mgrid[0:lh, 0:lw]
        idx = np.clip(
            np.rint((k - 1) * (0.5 + 0.5 * np.sin(xx / 2.0 + yy / 3.0)) + rng.normal(0, 1, (lh, lw))), 0, k - 1
        ).astype(np.int64)
        payload = entropy.CODERS[coder][0](pal, idx)
    denoise = bool(rng.random() < 0.2)
    header = bitstream.Header(
        method=method,
        coder=coder,
        model_id=str(rng.choice(["taef2", "owner/name", "x"])),
        fingerprint=int(rng.integers(0, 2**32)),
        width=w,
        height=h,
        channels=c,
        latent_height=lh,
        latent_width=lw,
        quant_span=float(rng.choice([8.0, 46.448])),
        colors=k,
        policy=policy,
        dithered=bool(rng.random() < 0.5),
        denoise=denoise,
        denoise_strength=0.04 if denoise else 0.0,
        denoise_steps=66 if denoise else 0,
    )
    return bitstream.pack(header, payload, FUZZ_LIMITS)


# ------------------------------------------------------------------------------------------
# raw access to a v1 file (no validation), so mutations can produce any header
# ------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    data: bytearray
    mid_end: int  # offset just after the model id
    payload_at: int
    plen: int

    @classmethod
    def parse(cls, data: bytes) -> _Raw:
        n = data[9]
        mid_end = 10 + n
        flags = data[5]
        pos = mid_end + 19 + (6 if flags & bitstream.FLAG_DENOISE else 0)
        (plen,) = struct.unpack_from("<I", data, pos)
        return cls(bytearray(data), mid_end, pos + 4, plen)

    @property
    def payload(self) -> bytes:
        return bytes(self.data[self.payload_at : self.payload_at + self.plen])

    def get(self, name):
        fmt, off = _FIELDS[name]
        return struct.unpack_from(fmt, self.data, self.mid_end + off)[0]

    def set(self, name, value):
        fmt, off = _FIELDS[name]
        struct.pack_into(fmt, self.data, self.mid_end + off, value)

    def set_payload(self, payload: bytes, reseal_inner: bool = True):
        coder_id = self.data[7]
        if reseal_inner and coder_id in (entropy.CODER_IDS["arith"], entropy.CODER_IDS["lzma"]) and len(payload) >= 4:
            dims = (self.get("colors"), self.get("channels"), self.get("latent_height"), self.get("latent_width"))
            payload = entropy._seal(payload[4:], *dims)
        self.data[self.payload_at - 4 :] = struct.pack("<I", len(payload)) + payload + b"\0\0\0\0"
        self.plen = len(payload)

    def reseal_inner(self):
        self.set_payload(self.payload)

    def sealed(self) -> bytes:
        body = bytes(self.data[:-4])
        return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


# ------------------------------------------------------------------------------------------
# mutations
# ------------------------------------------------------------------------------------------


def mutate(seed: bytes, kind: str, rng: np.random.Generator) -> bytes:
    raw = _Raw.parse(seed)
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(4, len(raw.data) - 4))
            raw.data[i] ^= 1 << int(rng.integers(0, 8))
        try:
            raw2 = _Raw.parse(bytes(raw.data))
            if raw2.payload_at + raw2.plen + 4 == len(raw2.data) and rng.random() < 0.7:
                raw2.reseal_inner()
                return raw2.sealed()
        except (struct.error, IndexError):
            pass
        return raw.sealed()
    if kind == "field":
        name = str(rng.choice(list(_FIELDS)))
        fmt = _FIELDS[name][0]
        raw.set(name, _EXTREMES[fmt][int(rng.integers(0, len(_EXTREMES[fmt])))])
        if rng.random() < 0.5:
            raw.reseal_inner()
        if rng.random() < 0.2:  # also set the method / coder / policy / flag bytes to odd values
            raw.data[int(rng.integers(5, 9))] = int(rng.integers(0, 256))
        return raw.sealed()
    if kind == "geometry":
        lh, lw = (int(v) for v in rng.choice([1, 2, 64, 255, 256, 1024, 8191, 8192, 65535], 2))
        d = int(rng.choice([4, 8, 16, 64]))
        consistent = rng.random() < 0.6
        raw.set("latent_height", lh)
        raw.set("latent_width", lw)
        raw.set("height", min(65535, lh * d) if consistent else int(rng.integers(0, 65536)))
        raw.set("width", min(65535, lw * d) if consistent else int(rng.integers(0, 65536)))
        if rng.random() < 0.5:
            raw.set("colors", int(rng.choice([1, 2, 255, 4096, 65535])))
        raw.reseal_inner()
        return raw.sealed()
    if kind in ("truncate", "extend", "payload"):
        p = bytearray(raw.payload)
        if kind == "truncate":
            p = p[: int(rng.integers(0, max(1, len(p))))]
        elif kind == "extend":
            p += bytes(int(rng.integers(1, 9))) if rng.random() < 0.5 else rng.bytes(int(rng.integers(1, 64)))
        elif len(p) > 4:
            i = int(rng.integers(4, len(p)))
            j = min(len(p), i + int(rng.integers(1, 9)))
            p[i:j] = bytes(j - i) if rng.random() < 0.3 else rng.bytes(j - i)
        raw.set_payload(bytes(p), reseal_inner=rng.random() < 0.9)
        return raw.sealed()
    if kind == "bomb":
        size = int(rng.choice([1 << 16, 1 << 20, 1 << 24]))
        blob = bytes(size)
        if raw.data[7] == entropy.CODER_IDS["lzma"]:
            comp = b"\0\0\0\0" + lzma.compress(blob, format=lzma.FORMAT_RAW, filters=entropy._LZMA_FILTERS)
        else:
            comp = zlib.compress(blob, 9)
        raw.set_payload(comp)
        return raw.sealed()
    if kind == "cut":
        return seed[: int(rng.integers(0, len(seed)))]
    if kind == "garbage":
        return bitstream.MAGIC + bytes([1]) + rng.bytes(int(rng.integers(0, 200)))
    if kind == "model_id":
        odd = [
            b"",
            b"\xff\xfe",
            b"~nosuchuser",
            b"/etc",
            b"../../x",
            b"a\x00b",
            b"a\nb",
            b"x" * 255,
            b"C:\\models",
            b" taef2",
            "ünï/cödé".encode(),
            b"a/b/c",
            b"taef2",
        ]
        mid = odd[int(rng.integers(0, len(odd)))]
        body = bytes(raw.data[:9]) + bytes([len(mid)]) + mid + bytes(raw.data[raw.mid_end : -4])
        return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)
    raise ValueError(f"unknown mutation {kind!r}")


# ------------------------------------------------------------------------------------------
# target and runner
# ------------------------------------------------------------------------------------------


def target(data: bytes, limits: bitstream.Limits = FUZZ_LIMITS) -> str:
    """What the CLI's decode does before the model runs: parse + check, model id, geometry, entropy decode."""
    from .backends.resolve import check_model_spec

    header, payload = bitstream.unpack(data, limits)
    check_model_spec(header.model_id, from_file=True)
    bitstream.check_geometry(header, 8)
    _, _, q = bitstream.decode_payload(header, payload, limits)
    assert q.shape == (header.channels, header.latent_height, header.latent_width)
    assert q.dtype == np.uint8 or (header.method == "tc" and q.dtype == np.float32 and np.isfinite(q).all())
    return "decoded"


def _category(exc: BaseException) -> str:
    import re

    msg = re.sub(r"'[^']*'|\([^)]*\)", "_", str(exc))
    head = re.sub(r"[-+]?[0-9][0-9.,e+x#]*|nan|inf", "#", msg.split(":")[0])
    return f"{type(exc).__name__}: {head[:70]}"


@dataclass
class Report:
    n: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    by_mutation: collections.Counter = field(default_factory=collections.Counter)
    failures: list = field(default_factory=list)
    slowest: float = 0.0
    max_alloc: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "failures": self.failures[:50],
            "slowest_s": round(self.slowest, 3),
            "max_alloc_MiB": round(self.max_alloc / 2**20, 2),
            "outcomes": dict(self.outcomes.most_common()),
            "by_mutation": dict(sorted(self.by_mutation.items())),
        }


def run(
    n: int = 5000,
    seed: int = 0,
    time_bound: float = 2.0,
    alloc_bound: int = 64 << 20,
    trace_alloc: bool = True,
    progress: bool = False,
) -> Report:
    """Run ``n`` mutated inputs; see the module docstring for what counts as a failure."""
    rng = np.random.default_rng(seed)
    seeds = [_seed(rng) for _ in range(64)]
    report = Report()
    for warm in seeds[:8]:  # imports and first-call caches are not the inputs' cost
        with contextlib.suppress(Exception):
            target(warm)
    if trace_alloc:
        tracemalloc.start()
    it = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="fuzz", unit="input", mininterval=1.0)
    t_all, c_all = time.perf_counter(), time.process_time()
    try:
        for i in it:
            kind = MUTATIONS[i % len(MUTATIONS)]
            data = mutate(seeds[int(rng.integers(0, len(seeds)))], kind, rng)
            if trace_alloc:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            try:
                outcome = target(data)
                failed = None
            except SDCError as exc:
                outcome, failed = "rejected: " + _category(exc), None
            except Exception as exc:
                outcome = "CRASH " + _category(exc)
                failed = f"{type(exc).__name__}: {str(exc)[:200]}"
            dt = time.perf_counter() - t0
            alloc = tracemalloc.get_traced_memory()[1] - base if trace_alloc else 0
            report.slowest = max(report.slowest, dt)
            report.max_alloc = max(report.max_alloc, alloc)
            if failed is None and dt > time_bound:
                outcome, failed = "SLOW", f"{dt:.2f}s > {time_bound}s"
            if failed is None and alloc > alloc_bound:
                outcome, failed = "ALLOC", f"{alloc / 2**20:.1f} MiB > {alloc_bound / 2**20:.0f} MiB"
            report.outcomes[outcome] += 1
            report.by_mutation[
                f"{kind}: {'fail' if failed else ('decoded' if outcome == 'decoded' else 'rejected')}"
            ] += 1
            if failed:
                report.failures.append(
                    {"index": i, "seed": seed, "mutation": kind, "why": failed, "input_hex": data[:400].hex()}
                )
    finally:
        if trace_alloc:
            tracemalloc.stop()
    report.n = n
    report.seconds = time.perf_counter() - t_all
    report.cpu_seconds = time.process_time() - c_all
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.fuzz", description="fuzz the .sdc reader")
    ap.add_argument("--n", type=int, default=10000, help="number of mutated inputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-bound", type=float, default=2.0, help="seconds one input may take")
    ap.add_argument("--alloc-bound-mb", type=float, default=64, help="MiB one input may allocate (tracemalloc peak)")
    ap.add_argument("--no-trace", action="store_true", help="skip tracemalloc (faster, no allocation bound)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    rep = run(
        args.n,
        args.seed,
        args.time_bound,
        int(args.alloc_bound_mb * 2**20),
        not args.no_trace,
        progress=sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(rep.as_dict(), indent=1))
    else:
        print(
            f"{rep.n} inputs in {rep.seconds:.1f}s ({rep.cpu_seconds:.1f}s CPU); slowest "
            f"{rep.slowest * 1000:.0f} ms; largest allocation {rep.max_alloc / 2**20:.2f} MiB; "
            f"failures: {len(rep.failures)}"
        )
        print("outcomes:")
        for k, v in rep.outcomes.most_common():
            print(f"  {v:7d}  {k}")
        print("per mutation:")
        for k, v in sorted(rep.by_mutation.items()):
            print(f"  {v:7d}  {k}")
        for f in rep.failures[:20]:
            print(f"FAIL #{f['index']} ({f['mutation']}): {f['why']}")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())


# ------------------------------------------------------------------------------------------
# the default pixel cap's largest sizes: the whole CLI decode (stub decoder) under an address-space limit
# ------------------------------------------------------------------------------------------

#: the issue's 46-byte file: K = 1 arith palette file, a 1024x1024 latent, an 8192x8192 image
TINY_8192 = bytes.fromhex(
    "5344431a01000101010574616566322bba5bf7002000202000040004000000410100040000004c219761a77902cb"
)
#: address-space limit (RLIMIT_AS) for the decodes at the cap: the 2.5 GiB the issue was found under
CAP_AS_LIMIT = int(2.5 * 2**30)


class StubDecoder(Backend):
    """A stand-in for TAEF2 with its decode path but no network: each latent tile becomes 8x8 pixel blocks of its
    first three channels (tanh-squashed), written tile by tile into the uint8 output as the real backends do
    (:func:`helpers.backends.tiling.tiled_apply` with a sink, :func:`helpers.images.signed_to_uint8`). It accepts any
    file's fingerprint and channel count, so the rest of the CLI decode (header checks, payload decoding,
    output allocation, PNG writing) runs at full size in seconds."""

    kind = "stub"
    runtime = "stub"
    has_unet = False
    random_weights = True
    load_seconds = 0.0
    progress = False

    device_name = "cpu"

    def __init__(self, header: bitstream.Header, tile: int = 1024):
        self.model_id, self.fingerprint = header.model_id, header.fingerprint
        self.latent_channels, self.downsample, self.quant_span = header.channels, 8, header.quant_span
        self.tile = tile

    def describe(self) -> str:
        return "stub decoder (fuzzing)"

    def encode_array(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        raise NotImplementedError("the stub decoder only decodes")

    def decode_array(self, z: np.ndarray) -> np.ndarray:
        return self.decode_uint8(z).transpose(2, 0, 1)[None].astype(np.float32) / np.float32(127.5) - np.float32(1)

    def decode_uint8(self, z: np.ndarray) -> np.ndarray:
        from .backends.tiling import tiled_apply
        from .images import signed_to_uint8

        _, c, h, w = z.shape
        out = np.empty((8 * h, 8 * w, 3), dtype=np.uint8)

        def fn(t):
            rgb = np.tanh(t[:, [i % c for i in range(3)]])
            return rgb.repeat(8, axis=2).repeat(8, axis=3)

        def sink(place, t):
            y0, y1, x0, x1 = place
            signed_to_uint8(t, out[y0:y1, x0:x1])

        tiled_apply(z, fn, scale=8, tile=self.tile // 8, halo=0, sink=sink)
        return out


def cap_seeds() -> dict[str, bytes]:
    """Valid files at the default cap's largest sizes, each a few hundred bytes: 8192x8192 and the two
    65535-pixel-long strips, with the palette coders and raw latents (tc files at the cap take ~30 s to
    encode: tests/fuzz_cap/tc_8192x8192.sdc holds one, see make_tc_cap_file)."""
    out = {"issue19_46_bytes": TINY_8192}
    for name, (w, h) in {"8192x8192": (8192, 8192), "65535x1024": (65535, 1024), "1024x65535": (1024, 65535)}.items():
        lh, lw = -(-h // 8), -(-w // 8)
        for coder in ("zlib", "lzma", "arith"):
            pal = np.full((1, 32), 128, dtype=np.uint8)
            payload = entropy.CODERS[coder][0](pal, np.zeros((lh, lw), dtype=np.int64))
            header = bitstream.Header(
                method="kmeans",
                coder=coder,
                model_id="taef2",
                fingerprint=1,
                width=w,
                height=h,
                channels=32,
                latent_height=lh,
                latent_width=lw,
                quant_span=8.0,
                colors=1,
                policy="pad8",
                dithered=False,
            )
            out[f"{name}_k1_{coder}"] = bitstream.pack(header, payload)
        raw = zlib.compress(bytes(32 * lh * lw), 9)
        header = replace(header, method="raw", coder="zlib", colors=0)  # the same geometry as raw 8-bit latents
        out[f"{name}_raw"] = bitstream.pack(header, raw)
    return out


def make_tc_cap_file() -> bytes:
    """An 8192x8192 tc file (a zero 32 x 1024 x 1024 latent, inline tables, 2,703 bytes): about 30 s to encode,
    so tests read the committed copy (tests/fuzz_cap/tc_8192x8192.sdc, written by this function)."""
    from .methods.tc import tcoder

    coded, _ = tcoder.encode_latent(np.zeros((32, 1024, 1024), np.float32), None, step=1.0)
    header = bitstream.Header(
        method="tc",
        coder="range",
        model_id="taef2",
        fingerprint=1,
        width=8192,
        height=8192,
        channels=32,
        latent_height=1024,
        latent_width=1024,
        quant_span=8.0,
        colors=0,
        policy="pad8",
        dithered=False,
    )
    return bitstream.pack(header, coded.payload)


def cap_inputs(tc_file: bytes | None = None, mutations: int = 6, seed: int = 0) -> dict[str, bytes]:
    """What CI decodes at the cap: one file per coder and shape (the 46-byte file; 8192x8192 lzma and raw; the
    65535-pixel strips), the tc file when given, and ``mutations`` mutated copies of them."""
    seeds = cap_seeds()
    files = {
        k: seeds[k]
        for k in ("issue19_46_bytes", "8192x8192_k1_lzma", "8192x8192_raw", "65535x1024_k1_zlib", "1024x65535_k1_arith")
    }
    if tc_file is not None:
        files["8192x8192_tc"] = tc_file
    rng = np.random.default_rng(seed)
    names = list(files)
    for i in range(mutations):
        kind = ("bitflip", "field", "payload", "truncate", "extend", "geometry")[i % 6]
        base = names[int(rng.integers(0, len(names)))]
        files[f"{base}_{kind}{i}"] = mutate(files[base], kind, rng)
    return files


def _cap_child(src: str, dst: str, limit: int) -> int:
    """In a fresh process: set RLIMIT_AS, then ``python -m helpers decode src dst`` with the stub decoder."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from . import cli
    from .memory import process_memory

    def stub_load(spec, device, runtime="torch", taef2_dir=None, purpose=None):
        header, _ = bitstream.unpack(Path(src).read_bytes())
        return StubDecoder(header)

    cli._load = stub_load
    cli._resolve_runtime = lambda spec, args: ("stub", None)
    rc = cli.main(["decode", src, dst])
    # the child's own peak since exec (VmHWM, as the CLI's stage log reads it); ru_maxrss would keep the forking
    # parent's high-water mark across exec (a pytest process of 1.6 GiB made a 453 MiB decode read 1641 MiB)
    print(f"peak_rss_MiB={process_memory()['hwm_MiB']:.0f}")
    return rc


def run_cap(files: dict[str, bytes], folder, limit: int = CAP_AS_LIMIT, timeout: float = 300.0) -> list[dict]:
    """Decode each file through the CLI (stub decoder) in a subprocess under an address-space limit. Each
    result: name, rc, wall seconds, peak RSS (MiB), the last stderr lines, the output's size from its PNG header,
    and ``ok``: exit 0 with an image of the header's size, or exit 2 with one ``error:`` line, the last, after
    at most ``note:`` / ``model:`` lines."""
    import os
    import subprocess
    from pathlib import Path

    folder = Path(folder)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    results = []
    for name, data in files.items():
        src, dst = folder / f"{name}.sdc", folder / f"{name}.png"
        src.write_bytes(data)
        code = f"import sys; from helpers.fuzz import _cap_child; sys.exit(_cap_child({str(src)!r}, {str(dst)!r}, {limit}))"
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        peak = [float(ln.split("=")[1]) for ln in out.splitlines() if ln.startswith("peak_rss_MiB=")]
        lines = [ln for ln in err.splitlines() if ln.strip()]
        size = None
        if proc.returncode == 0 and dst.is_file():
            with open(dst, "rb") as fh:
                head = fh.read(24)
            size = struct.unpack(">II", head[16:24]) if head[12:16] == b"IHDR" else None
            dst.unlink()
        try:
            header = bitstream.unpack(data)[0]
            want = (header.width, header.height)
        except SDCError:
            want = None
        others = [ln for ln in lines if not ln.startswith(("note: ", "model: "))]  # notes may precede it
        ok = (proc.returncode == 0 and size == want) or (
            proc.returncode == 2 and others == lines[-1:] and lines[-1].startswith("error: ")
        )
        results.append(
            {
                "name": name,
                "rc": proc.returncode,
                "seconds": round(time.perf_counter() - t0, 2),
                "peak_rss_MiB": peak[0] if peak else None,
                "stderr": lines[-3:],
                "size": size,
                "ok": ok,
            }
        )
    return results
