"""Input images as a viewer shows them: 16-bit, EXIF orientation, transparency, animation, pixel cap."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers.cli import main
from helpers.errors import ImageInputError
from helpers.images import load_image


def _png16_rgb(arr: np.ndarray, path):
    """Write a 16-bit RGB PNG by hand (Pillow cannot write one), for an independent reference."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    got = np.asarray(load_image(tmp_path / "g16.png"))
    want = np.rint(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(got[..., 0], want)
    np.testing.assert_array_equal(got[..., 1], want)
    assert got.mean() == pytest.approx(127.5, abs=1)  # not all white


def test_16bit_rgb(tmp_path):
    arr = np.zeros((16, 24, 3), np.uint16)
    arr[..., 0], arr[..., 1], arr[..., 2] = 40000, 1000, 65535
    _png16_rgb(arr, tmp_path / "rgb16.png")
    got = np.asarray(load_image(tmp_path / "rgb16.png"))
    assert abs(int(got[0, 0, 0]) - 40000 // 257) <= 1 and int(got[0, 0, 1]) <= 4 and got[0, 0, 2] == 255


def test_16bit_png_through_the_cli_is_not_white(taef2, tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert (
        main(["encode", str(tmp_path / "g16.png"), str(tmp_path / "g.sdc"), "--model", "taef2", "--method", "raw"]) == 0
    )
    assert main(["decode", str(tmp_path / "g.sdc"), str(tmp_path / "g.png")]) == 0
    dec = np.asarray(Image.open(tmp_path / "g.png").convert("L"), dtype=np.float64)
    assert dec.mean() < 200 and dec[:8].mean() + 150 < dec[-8:].mean()  # a dark-to-light ramp, top to bottom
    assert np.abs(dec - ramp / 257.0).mean() < 12  # the 8-bit latents reproduce it


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # red left half, blue right half, as stored
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    img = load_image(tmp_path / "rot.jpg")
    assert img.size == (20, 40)  # portrait as viewed
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[-3, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200  # red on top after a 90-degree CW turn


def test_animated_gif_is_refused(tmp_path):
    frames = []
    for i in range(3):
        f = np.zeros((32, 32, 3), np.uint8)
        f[8 * i : 8 * i + 8, 8 * i : 8 * i + 8] = (255, 200, 0)  # a moving square
        frames.append(Image.fromarray(f))
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageInputError, match=r"animated or has several pages \(3 frames, GIF\)"):
        load_image(tmp_path / "anim.gif")
    assert main(["encode", str(tmp_path / "anim.gif"), str(tmp_path / "a.sdc"), "--model", "taef2"]) == 2


def test_transparency_refused_or_flattened(tmp_path, capsys):
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:, :16, 3] = 0  # left half transparent
    Image.fromarray(rgba).save(tmp_path / "t.png")
    with pytest.raises(ImageInputError, match=r"transparent pixels \(50.0% not opaque\).*--background"):
        load_image(tmp_path / "t.png")
    flat = np.asarray(load_image(tmp_path / "t.png", background="white"))
    np.testing.assert_array_equal(flat[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(flat[0, -1], [200, 0, 0])
    assert main(["encode", str(tmp_path / "t.png"), str(tmp_path / "t.sdc"), "--model", "taef2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--background" in err and "\n" not in err
    # fully opaque alpha carries no information: accepted as is
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "o.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "o.png")), rgba[..., :3])
    # palette image with a transparent index
    p = Image.new("P", (16, 16), 0)
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 1)
    p.save(tmp_path / "p.png", transparency=1)
    with pytest.raises(ImageInputError, match="transparent"):
        load_image(tmp_path / "p.png")


def test_pixel_cap_refuses_before_decoding(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageInputError, match="over the pixel cap of 50,000"):
        load_image(tmp_path / "big.png", max_pixels=50_000)
    assert load_image(tmp_path / "big.png", max_pixels=60_000).size == (300, 200)


def test_list_images_sorted_or_in_the_order_asked(tmp_path):
    from helpers.images import list_images

    for n in ("b", "a", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{n}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.stem for p in list_images(tmp_path)] == ["a", "b", "c"]
    assert [p.stem for p in list_images(tmp_path, ["c", "a"])] == ["a", "c"]
    assert [p.stem for p in list_images(tmp_path, ["c", "a.png"], keep_order=True)] == ["c", "a"]
    with pytest.raises(ImageInputError, match="images not found in .*: d"):
        list_images(tmp_path, ["a", "d"], keep_order=True)
