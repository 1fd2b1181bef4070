"""The edit buttons' geometry: what each does to the picture's size and where the kept part goes."""

from __future__ import annotations

import pytest

from engine import canvas
from engine.canvas import Direction


def test_zoom_out_keeps_the_size_and_centres_the_picture_at_half_or_two_thirds():
    assert canvas.zoom_out(64, 64, 2.0) == canvas.Outpaint(64, 64, (16, 16, 48, 48))
    plan = canvas.zoom_out(512, 512, 1.5)
    assert (plan.width, plan.height) == (512, 512)
    assert plan.kept_size == (341, 341) and plan.box[0] == (512 - 341) // 2
    wide = canvas.zoom_out(80, 48, 2.0)
    assert (wide.width, wide.height) == (80, 48) and wide.kept_size == (40, 24)


def test_custom_zoom_with_a_new_aspect_keeps_the_pixel_count_and_fits_the_picture():
    plan = canvas.zoom_out(512, 512, 1.0, (16, 9))
    assert (plan.width, plan.height) == (680, 384)  # 261,120 px ~ 512² = 262,144, multiples of 8
    assert plan.kept_size == (384, 384)  # edge to edge vertically, new scene left and right
    zoomed = canvas.zoom_out(512, 512, 1.6, (16, 9))
    assert zoomed.kept_size == (240, 240)


@pytest.mark.parametrize(
    ("zoom", "aspect", "message"),
    [(2.5, None, "between 1 and 2"), (0.5, None, "between 1 and 2"), (1.0, None, "changes nothing")],
)
def test_custom_zoom_refuses_what_does_nothing_or_is_out_of_range(zoom, aspect, message):
    with pytest.raises(ValueError, match=message):
        canvas.zoom_out(64, 64, zoom, aspect)


def test_make_square_extends_the_short_side_at_the_same_pixel_count():
    plan = canvas.make_square(80, 48)
    assert plan.width == plan.height == 64
    assert plan.kept_size == (64, 38) and plan.box[1] == 13
    tall = canvas.make_square(48, 80)
    assert tall.kept_size == (38, 64)
    with pytest.raises(ValueError, match="already square"):
        canvas.make_square(64, 64)


@pytest.mark.parametrize(
    ("direction", "size", "box"),
    [
        (Direction.RIGHT, (96, 64), (0, 0, 64, 64)),
        (Direction.LEFT, (96, 64), (32, 0, 96, 64)),
        (Direction.DOWN, (64, 96), (0, 0, 64, 64)),
        (Direction.UP, (64, 96), (0, 32, 64, 96)),
    ],
)
def test_pan_grows_the_canvas_by_half_a_tile_and_keeps_the_picture_whole(direction, size, box):
    plan = canvas.pan(64, 64, direction, canvas.pan_step(64), max_side=2048)
    assert (plan.width, plan.height) == size
    assert plan.box == box


def test_pan_stops_at_the_size_limit():
    assert canvas.pan_step(512) == 256 and canvas.pan_step(64) == 32 and canvas.pan_step(8) == 8
    assert canvas.pan(1920, 512, Direction.RIGHT, 256, max_side=2048).width == 2048  # as far as it may
    with pytest.raises(ValueError, match="already 2048 px wide"):
        canvas.pan(2048, 512, Direction.LEFT, 256, max_side=2048)
    assert canvas.pan(2048, 512, Direction.UP, 256, max_side=2048).height == 768  # other ways still grow


def test_place_puts_the_picture_in_its_box_and_masks_the_rest():
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (200, 10, 10))
    image, mask = canvas.place(picture, canvas.zoom_out(64, 64, 2.0))
    assert image.size == mask.size == (64, 64)
    assert image.getpixel((32, 32)) == (200, 10, 10) and mask.getpixel((32, 32)) == 0
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((15, 32)) == 255 and mask.getpixel((16, 32)) == 0


def test_region_grid_has_near_square_cells_and_fits_a_select_menu():
    assert canvas.region_grid(64, 64) == (4, 4)
    assert canvas.region_grid(128, 64) == (6, 3)
    for width, height in ((64, 64), (96, 64), (2048, 512), (512, 2048), (8, 4096)):
        columns, rows = canvas.region_grid(width, height)
        assert 1 <= columns * rows <= canvas.REGION_CELLS_MAX
        boxes = canvas.cell_boxes(width, height)
        assert sum((r - left) * (b - t) for left, t, r, b in boxes) == width * height  # they tile the picture


def test_region_mask_marks_exactly_the_chosen_cells():
    mask = canvas.region_mask(64, 64, [1, 6])
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((15, 15)) == 255 and mask.getpixel((16, 0)) == 0
    assert mask.getpixel((16, 16)) == 255 and mask.getpixel((31, 31)) == 255 and mask.getpixel((32, 32)) == 0
    assert mask.histogram()[255] == 2 * 16 * 16
    shortcuts = canvas.region_shortcuts(64, 64)
    assert shortcuts["Everything but the middle"] == frozenset({1, 2, 3, 4, 5, 8, 9, 12, 13, 14, 15, 16})
    assert shortcuts["Left half"] == frozenset({1, 2, 5, 6, 9, 10, 13, 14})
    assert shortcuts["Bottom half"] == frozenset(range(9, 17))
    assert list(canvas.region_shortcuts(8, 4096)) == ["Top half", "Bottom half"]  # one column: no left half
    with pytest.raises(ValueError, match="at least one cell"):
        canvas.region_mask(64, 64, [])
    with pytest.raises(ValueError, match="cell 17 is not on the grid"):
        canvas.region_mask(64, 64, [17])
    with pytest.raises(ValueError, match="whole picture"):
        canvas.region_mask(64, 64, range(1, 17))


def test_a_new_frame_is_made_in_the_model_familys_multiples():
    """Flux-style families draw sides in multiples of 16: a Custom Zoom --ar, Make Square and Pan round
    to them instead of asking for a size that would be refused (the default is latent diffusion's 8)."""
    assert (canvas.zoom_out(64, 64, 1.5, (2, 1)).width, canvas.zoom_out(64, 64, 1.5, (2, 1)).height) == (88, 48)
    wide = canvas.zoom_out(64, 64, 1.5, (2, 1), multiple=16)
    assert (wide.width, wide.height) == (96, 48)
    assert wide.kept_size[1] == 32  # the picture fitted to the frame's height, then shrunk by 1.5
    square = canvas.make_square(80, 48, multiple=16)
    assert (square.width, square.height) == (64, 64)
    assert canvas.pan_step(1328, 8) == 664 and canvas.pan_step(1328, 16) == 656  # Qwen-Image's half tile
    panned = canvas.pan(1328, 1328, Direction.RIGHT, 656, 1328 + 700, multiple=16)
    assert (panned.width, panned.height) == (1984, 1328) and panned.box == (0, 0, 1328, 1328)
    short = canvas.pan(64, 64, Direction.UP, 32, 88, multiple=16)  # the limit cuts the step to whole 16s
    assert (short.width, short.height) == (64, 80)
    with pytest.raises(ValueError, match="multiple of 8"):
        canvas.pan_step(64, 12)
