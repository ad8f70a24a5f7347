"""Tests for helpers.baselines: real encodes of a Kodak image, budget matching, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import baselines as B
from helpers.errors import BudgetError, ImageInputError, SDCError, UnavailableError
from helpers.metrics import psnr

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
BUDGETS = (3000, 5000, 8000)


@pytest.fixture(scope="module")
def crop() -> Image.Image:
    """kodim23, center-cropped to 512x512."""
    path = KODAK / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"Kodak test image {path} is absent (expected ../shared/data/kodak beside the project)")
    with Image.open(path) as im:
        img = im.convert("RGB")
    w, h = img.size
    left, top = (w - 512) // 2, (h - 512) // 2
    return img.crop((left, top, left + 512, top + 512))


def _need(codec: str) -> None:
    reason = B.codec_status()[codec]
    if reason is not None:
        pytest.skip(reason)


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


def test_codec_table():
    assert list(B.CODECS) == ["jpeg", "webp", "avif", "jxl"]
    for name, (encode, (qmin, qmax)) in B.CODECS.items():
        assert callable(encode) and 0 <= qmin < qmax <= 100, name
    assert set(B.available_codecs()) <= set(B.CODECS)
    # This environment ships every plugin; a missing one would show up here with its reason.
    assert B.available_codecs() == list(B.CODECS), B.codec_status()


@pytest.mark.parametrize("codec", list(B.CODECS))
def test_round_trip(crop, codec):
    _need(codec)
    encode, (qmin, qmax) = B.CODECS[codec]
    low, high = encode(crop, qmin + (qmax - qmin) // 10), encode(crop, qmin + 9 * (qmax - qmin) // 10)
    assert len(low) < len(high) < 512 * 512 * 3
    for data, min_psnr in ((low, 24.0), (high, 35.0)):
        out = B.decode_bytes(data)
        assert out.mode == "RGB" and out.size == crop.size
        assert min_psnr < psnr(crop, out) < 60
    # Numpy input is accepted and gives the same stream size.
    assert len(encode(np.asarray(crop), qmin + (qmax - qmin) // 10)) == len(low)


def test_jpeg_stream_and_mozjpeg(crop):
    _need("jpeg")
    for q in (5, 10, 75):
        data = B.encode_jpeg(crop, q)
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=q, optimize=True, subsampling=1)
        plain = buf.getvalue()
        assert len(data) < len(plain), q  # the MozJPEG pass saved bytes
        # ... losslessly: same pixels as the plain stream.
        assert np.array_equal(np.asarray(B.decode_bytes(data)), np.asarray(B.decode_bytes(plain)))
    with Image.open(io.BytesIO(B.encode_jpeg(crop, 50))) as im:
        assert im.format == "JPEG" and im.layers == 3
        # 4:2:2: chroma is subsampled horizontally only.
        assert [s[1:3] for s in im.layer] == [(2, 1), (1, 1), (1, 1)]


def test_formats(crop):
    magic = {
        "webp": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
        "avif": lambda d: d[4:8] == b"ftyp" and b"avif" in d[8:32],
        "jxl": lambda d: d[:2] == b"\xff\x0a" or d[4:8] == b"JXL ",
    }
    for codec, check in magic.items():
        if B.codec_status()[codec] is None:
            assert check(B.CODECS[codec].encode(crop, 30)), codec


def test_bad_quality(crop):
    with pytest.raises(SDCError, match="quality") as info:
        B.encode_jpeg(crop, 0)
    _one_line(info.value)
    with pytest.raises(SDCError):
        B.encode_jxl(crop, 100)


def test_decode_garbage(crop):
    truncated = B.encode_webp(crop, 50)[:200]
    for data in (b"", b"definitely not an image", truncated, B.encode_jpeg(crop, 50)[:300]):
        with pytest.raises(ImageInputError) as info:
            B.decode_bytes(data)
        _one_line(info.value)
    with pytest.raises(ImageInputError):
        B.decode_bytes("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("codec", list(B.CODECS))
def test_match_budget_ge(crop, codec, budget):
    _need(codec)
    encode, (qmin, qmax) = B.CODECS[codec]
    r = B.match_budget(crop, codec, budget, rule="ge")
    assert (r.codec, r.rule, r.nbytes) == (codec, "ge", len(r.data))
    assert qmin <= r.quality <= qmax
    assert r.image.size == crop.size and r.image.mode == "RGB"
    assert np.array_equal(np.asarray(r.image), np.asarray(B.decode_bytes(r.data)))
    assert len(encode(crop, r.quality)) == r.nbytes  # deterministic
    if r.nbytes < budget:  # only allowed when even the top quality is below the budget
        assert r.quality == qmax
    else:
        assert r.quality == qmin or len(encode(crop, r.quality - 1)) < budget


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("codec", list(B.CODECS))
def test_match_budget_le(crop, codec, budget):
    _need(codec)
    encode, (qmin, qmax) = B.CODECS[codec]
    try:
        r = B.match_budget(crop, codec, budget, rule="le")
    except BudgetError as exc:
        # Only when even the lowest quality is over the budget, and the message says so.
        smallest = len(encode(crop, qmin))
        assert smallest > budget
        assert f"{smallest} bytes" in _one_line(exc)
        return
    assert (r.codec, r.rule, r.nbytes) == (codec, "le", len(r.data))
    assert r.nbytes <= budget
    assert len(encode(crop, r.quality)) == r.nbytes
    assert r.quality == qmax or len(encode(crop, r.quality + 1)) > budget


def test_match_budget_is_globally_best_for_jpeg(crop):
    _need("jpeg")
    sizes = {q: len(B.encode_jpeg(crop, q)) for q in range(1, 101)}
    for budget in (2500, 3000, 5000, 8000, 20000, 400000):
        ge = B.match_budget(crop, "jpeg", budget, "ge")
        above = [s for s in sizes.values() if s >= budget]
        assert ge.nbytes == (min(above) if above else sizes[100])
        if min(sizes.values()) <= budget:
            assert B.match_budget(crop, "jpeg", budget, "le").nbytes == max(s for s in sizes.values() if s <= budget)


def test_jxl_size_jump_is_handled(crop):
    """libjxl's file size drops from quality 18 to 19; both sides must be searched."""
    _need("jxl")
    sizes = {q: len(B.encode_jxl(crop, q)) for q in range(14, 26)}
    assert sizes[19] < sizes[18]  # the known non-monotonicity
    budget = (sizes[18] + sizes[19]) // 2  # sizes 19.. cross it again above 19
    ge, le = B.match_budget(crop, "jxl", budget, "ge"), B.match_budget(crop, "jxl", budget, "le")
    assert ge.nbytes == min(s for s in sizes.values() if s >= budget)
    assert le.nbytes == max(s for s in sizes.values() if s <= budget)


def test_search_on_synthetic_curves():
    calls: list[int] = []

    def curve(values):
        def size(q):
            calls.append(q)
            return values[q]

        return size

    mono = [100 + 10 * q for q in range(101)]
    assert B._search_quality(curve(mono), [(0, 100)], 555, "ge") == 46  # 560
    assert B._search_quality(curve(mono), [(0, 100)], 555, "le") == 45  # 550
    assert B._search_quality(curve(mono), [(0, 100)], 560, "le") == 46
    assert B._search_quality(curve(mono), [(0, 100)], 5000, "ge") == 100
    assert B._search_quality(curve(mono), [(0, 100)], 5000, "le") == 100
    assert B._search_quality(curve(mono), [(0, 100)], 50, "ge") == 0
    with pytest.raises(BudgetError, match="100 bytes"):
        B._search_quality(curve(mono), [(0, 100)], 50, "le")
    calls.clear()
    B._search_quality(curve(mono), [(0, 100)], 555, "ge")
    assert len(calls) == len(set(calls)) and len(calls) < 20  # cached, logarithmic
    # A local dip next to the crossing: 47 is smaller than 46.
    bumpy = list(mono)
    bumpy[47] = 552
    assert B._search_quality(curve(bumpy), [(0, 100)], 551, "ge") == 47
    assert B._search_quality(curve(bumpy), [(0, 100)], 555, "le") == 47


def test_budget_errors(crop):
    for codec in B.available_codecs():
        with pytest.raises(BudgetError, match="smallest achievable") as info:
            B.match_budget(crop, codec, 50, rule="le")
        _one_line(info.value)
    with pytest.raises(SDCError, match="jpeg, webp, avif, jxl") as info:
        B.match_budget(crop, "bpg", 5000)
    _one_line(info.value)
    with pytest.raises(SDCError, match="rule"):
        B.match_budget(crop, "jpeg", 5000, rule="eq")
    for bad in (0, -5, 2.5):
        with pytest.raises(BudgetError):
            B.match_budget(crop, "jpeg", bad)  # type: ignore[arg-type]
    with pytest.raises(ImageInputError):
        B.match_budget(np.zeros((8, 8), np.float32), "jpeg", 5000)  # type: ignore[arg-type]


def test_compare_at_budget(crop):
    results = B.compare_at_budget(crop, 5000, codecs=["jpeg", "webp"], rule="ge")
    assert list(results) == ["jpeg", "webp"]
    for name, r in results.items():
        assert r.codec == name and r.nbytes >= 5000
    assert set(B.compare_at_budget(crop, 400000, rule="ge")) == set(B.available_codecs())


def test_missing_plugin_is_reported_not_raised(crop, monkeypatch):
    def broken(img, quality):
        raise OSError("encoder not built\nwith this plugin")

    monkeypatch.setitem(B.CODECS, "broken", B.CodecSpec(broken, (0, 10)))
    B.codec_status.cache_clear()
    try:
        status = B.codec_status()
        assert "broken" not in B.available_codecs()
        assert status["broken"] and "\n" not in status["broken"]
        with pytest.raises(UnavailableError):
            B.match_budget(crop, "broken", 5000)
    finally:
        monkeypatch.undo()
        B.codec_status.cache_clear()
    assert "broken" not in B.codec_status()
