"""The before/after slider (plain ipywidgets), driven headlessly: no browser, no kernel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers.plots import compose_split, png_bytes, slider_widget

W, H = 40, 12
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def solid(colour, size=(W, H)) -> Image.Image:
    return Image.new("RGB", size, colour)


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the slider must send PNG (no JPEG artefacts in a codec comparison)"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def assert_split(arr: np.ndarray, split: int, line: bool = True):
    """Columns < split-1 are the left image, split-1 the white line, >= split the right image."""
    assert arr.shape == (H, W, 3)
    left_end = split - 1 if line and 0 < split < W else split
    assert (arr[:, :left_end] == RED).all()
    if line and 0 < split < W:
        assert (arr[:, split - 1] == WHITE).all()
    assert (arr[:, split:] == BLUE).all()


def test_widget_structure_and_initial_picture():
    box = slider_widget(solid(RED), solid(BLUE), "original", "decoded")
    assert box.children == (box.children[0], box.slider, box.image), "caption, then the slider above the picture"
    assert box.image.format == "png"
    assert (box.slider.min, box.slider.max, box.slider.value) == (0.0, 1.0, 0.5)
    assert "original" in box.children[0].value and "decoded" in box.children[0].value
    assert "shown at" not in box.children[0].value
    assert (box.image.layout.width, box.image.layout.height) == (f"{W}px", f"{H}px")
    assert box.slider.layout.width == f"{W}px"
    assert_split(decode_png(box.image.value), round(0.5 * W))


def test_tall_pictures_are_shown_scaled_to_fit_with_the_slider():
    """A 512x768 Kodak portrait is displayed 640 px tall (slider as wide as the shown picture); the PNG it
    receives keeps every pixel."""
    box = slider_widget(solid(RED, (512, 768)), solid(BLUE, (512, 768)))
    assert (box.image.layout.width, box.image.layout.height) == ("427px", "640px")
    assert box.slider.layout.width == "427px"
    assert "shown at 83%" in box.children[0].value
    with Image.open(io.BytesIO(box.image.value)) as im:
        assert im.size == (512, 768)
    wide = slider_widget(solid(RED, (768, 512)), solid(BLUE, (768, 512)))  # Kodak landscape: 1:1
    assert (wide.image.layout.width, wide.image.layout.height) == ("768px", "512px")


@pytest.mark.parametrize("position", [0.25, 0.75])
def test_dragging_the_slider_recomposes_the_png(position):
    box = slider_widget(solid(RED), solid(BLUE))
    box.slider.value = position
    assert_split(decode_png(box.image.value), round(position * W))


def test_slider_moves_back_and_forth():
    box = slider_widget(solid(RED), solid(BLUE), position=0.1)
    assert_split(decode_png(box.image.value), round(0.1 * W))
    for position in (0.9, 0.3):
        box.slider.value = position
        assert_split(decode_png(box.image.value), round(position * W))


def test_widget_accepts_arrays_and_keeps_the_sources():
    left, right = np.full((H, W, 3), RED, np.uint8), np.full((H, W, 3), BLUE, np.uint8)
    box = slider_widget(left, right, position=0.75)
    assert box.left_image.size == box.right_image.size == (W, H)
    assert_split(decode_png(box.image.value), round(0.75 * W))


@pytest.mark.parametrize("position,expected", [(0.0, BLUE), (1.0, RED), (-0.5, BLUE), (1.5, RED)])
def test_compose_split_edges(position, expected):
    """At 0 the picture is all right image, at 1 all left image, with no split line; out-of-range is clamped."""
    arr = np.asarray(compose_split(solid(RED), solid(BLUE), position))
    assert arr.shape == (H, W, 3)
    assert (arr == expected).all()


def test_compose_split_without_line():
    arr = np.asarray(compose_split(solid(RED), solid(BLUE), 0.5, line=False))
    assert_split(arr, W // 2, line=False)


def test_compose_split_does_not_modify_inputs():
    left, right = solid(RED), solid(BLUE)
    compose_split(left, right, 0.5)
    assert (np.asarray(left) == RED).all() and (np.asarray(right) == BLUE).all()


def test_compose_split_rejects_different_sizes():
    with pytest.raises(ValueError):
        compose_split(solid(RED), solid(BLUE, (W + 8, H)), 0.5)


def test_png_bytes_is_lossless():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert (decode_png(png_bytes(img)) == np.asarray(img)).all()
