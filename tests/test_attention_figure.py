"""Tests for vqa.attention_figure: the maps drawn over the image, on synthetic maps (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vqa.attention_figure import (figure_size, overlay_attention, panel_boxes, save_attention_figure,
                                  upsample_attention)
from vqa.errors import InputError

GREY = 128


def one_hot_map(grid_size: int, row: int, column: int) -> np.ndarray:
    """float32 (S, S): almost all attention on one region, a little spread over the rest."""
    attention = np.full((grid_size, grid_size), 0.1 / (grid_size * grid_size - 1), np.float32)
    attention[row, column] = 0.9
    return attention


def cell_centre(box, grid_size: int, row: int, column: int) -> tuple[int, int]:
    """(x, y) pixel of region (row, column)'s centre in a panel box (left, top, right, bottom)."""
    left, top, right, bottom = box
    return (int(left + (column + 0.5) * (right - left) / grid_size),
            int(top + (row + 0.5) * (bottom - top) / grid_size))


def test_upsampling_keeps_region_centres_and_interpolates_between_them():
    attention = np.arange(9, dtype=np.float32).reshape(3, 3)
    big = upsample_attention(attention, 33, 63)  # 11 x 21 pixels a region: one pixel at each centre
    assert big.shape == (33, 63) and big.dtype == np.float32
    assert big[16, 31] == pytest.approx(attention[1, 1])
    assert big[5, 52] == pytest.approx(attention[0, 2])
    assert big[0, 0] == pytest.approx(attention[0, 0]) and big[-1, -1] == pytest.approx(attention[2, 2])
    assert np.all(np.diff(big, axis=1) >= -1e-6) and np.all(np.diff(big, axis=0) >= -1e-6)  # smooth ramps
    assert len(np.unique(np.round(big[16], 4))) > 10  # a ramp, not 3 blocks
    assert np.allclose(upsample_attention(np.full((3, 3), 0.25), 10, 10), 0.25)


def test_overlay_colours_the_hot_region_and_leaves_cold_ones_as_the_image():
    image = np.full((70, 70, 3), GREY, np.uint8)
    overlay = overlay_attention(image, one_hot_map(7, 2, 5))
    assert overlay.shape == (70, 70, 3) and overlay.dtype == np.uint8
    hot, cold = overlay[25, 55].astype(int), overlay[65, 5].astype(int)
    assert np.abs(hot - GREY).max() > 60
    assert np.abs(cold - GREY).max() <= 3
    # the brightest overlay pixel lies in the hot region
    y, x = np.unravel_index(np.abs(overlay.astype(int) - GREY).sum(axis=2).argmax(), (70, 70))
    assert (y // 10, x // 10) == (2, 5)


def test_overlay_of_an_all_zero_map_is_the_image():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert np.array_equal(overlay_attention(image, np.zeros((4, 4))), image)


def test_figure_has_one_panel_per_layer_plus_the_image_and_peaks_where_each_map_peaks(tmp_path):
    grid_size, hot = 7, [(1, 1), (5, 4)]
    attention = np.stack([one_hot_map(grid_size, *cell) for cell in hot])
    image = np.full((64, 64, 3), GREY, np.float32)
    out = tmp_path / "figures" / "attention.png"
    save_attention_figure(out, image, attention, question="what shape is at the top left?",
                          answers=[("circle", 0.8), ("square", 0.1)])
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert (picture.shape[1], picture.shape[0]) == figure_size(2)
    boxes = panel_boxes(2)
    assert len(boxes) == 3 and boxes[0][2] < boxes[1][0] < boxes[1][2] < boxes[2][0]
    first_left, first_top, first_right, first_bottom = boxes[0]
    assert np.abs(picture[first_top + 5:first_bottom - 5, first_left + 5:first_right - 5] - GREY).max() <= 3
    for (row, column), box in zip(hot, boxes[1:]):
        x, y = cell_centre(box, grid_size, row, column)
        cold_row, cold_column = (grid_size - 1 - row, grid_size - 1 - column)
        cold_x, cold_y = cell_centre(box, grid_size, cold_row, cold_column)
        assert np.abs(picture[y, x] - GREY).max() > 60, (row, column)
        assert np.abs(picture[cold_y, cold_x] - GREY).max() <= 3
    assert not list(tmp_path.glob("figures/.*"))  # no temporary file left behind


@pytest.mark.parametrize("image, attention, message", [
    (np.zeros((8, 8)), np.ones((1, 2, 2)), "RGB"),
    (np.zeros((8, 8, 3)), np.ones((2, 2)), "(layers, S, S)"),
    (np.zeros((8, 8, 3)), np.ones((1, 2, 3)), "square"),
    (np.zeros((8, 8, 3)), -np.ones((1, 2, 2)), "non-negative"),
])
def test_bad_figure_inputs_raise_input_error(tmp_path, image, attention, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        save_attention_figure(tmp_path / "a.png", image, attention, question="q", answers=[("a", 1.0)])
    assert not (tmp_path / "a.png").exists()
