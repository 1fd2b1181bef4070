"""What the edit buttons record on a job, and the canvas a stored edit is drawn from again."""

from __future__ import annotations

import pytest
from PIL import Image

from bot import edits
from bot.image_files import REGION_OVERLAY_SIDE, region_overlay
from bot.spec import EditSpec, JobSpec, RenderSpec
from engine.canvas import Direction


@pytest.mark.parametrize(
    ("text", "prompt", "zoom"),
    [
        ("a lighthouse --zoom 2", "a lighthouse", 2.0),
        ("a lighthouse --ar 16:9 --zoom 1.5", "a lighthouse --ar 16:9", 1.5),
        ("a lighthouse —ZOOM 1.25 --seed 3", "a lighthouse --seed 3", 1.25),
        ("a lighthouse --ar 16:9", "a lighthouse --ar 16:9", None),
        ("zoomed photo of a lens", "zoomed photo of a lens", None),
    ],
)
def test_custom_zoom_reads_zoom_out_of_the_prompt(text, prompt, zoom):
    assert edits.split_zoom(text) == (prompt, zoom)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a lighthouse --zoom 3", "from 1 to 2"),
        ("a lighthouse --zoom", "got nothing"),
        ("a lighthouse --zoom far", "got `far`"),
        ("a --zoom 2 b --zoom 1.5", "more than once"),
    ],
)
def test_custom_zoom_refuses_a_bad_zoom_with_the_range(text, message):
    with pytest.raises(edits.EditError, match=message):
        edits.split_zoom(text)


def test_each_edit_records_the_members_choice_and_knows_the_size_it_makes():
    assert edits.zoom(64, 64, 2.0) == EditSpec(zoom=2.0)
    assert edits.result_size(EditSpec(zoom=2.0), 64, 64) == (64, 64)
    wide = edits.zoom(64, 64, 1.0, (2, 1))
    assert wide == EditSpec(zoom=1.0, aspect="2:1") and edits.result_size(wide, 64, 64) == (88, 48)
    assert edits.result_size(edits.make_square(80, 48), 80, 48) == (64, 64)
    up = edits.pan(64, 64, Direction.UP, tile_size=64, size_limit=2048)
    assert up == EditSpec(pan="up", pan_by=32) and edits.result_size(up, 64, 64) == (64, 96)
    assert edits.region(64, 64, [7, 6, 6]) == EditSpec(cells=(6, 7))
    assert edits.result_size(EditSpec(cells=(6, 7)), 64, 64) == (64, 64)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: edits.make_square(64, 64), "already square"),
        (lambda: edits.pan(96, 64, Direction.RIGHT, tile_size=64, size_limit=96), "96 px wide"),
        (lambda: edits.region(64, 64, []), "Choose at least one cell"),
        (lambda: edits.zoom(64, 64, 1.0), "changes nothing"),
    ],
)
def test_an_edit_that_cannot_be_made_says_why(make, message):
    with pytest.raises(edits.EditError, match=message):
        make()


def test_a_stored_edit_is_drawn_from_the_same_canvas_again():
    source = Image.new("RGB", (64, 64), (200, 20, 20))
    left = edits.pan(64, 64, Direction.LEFT, tile_size=64, size_limit=2048)
    stored = JobSpec.from_json(JobSpec(render=RenderSpec(prompt="a fox"), edit=left).to_json()).edit
    assert stored == left
    pan = edits.render_inputs(stored, source)
    assert pan.init_image.size == pan.mask_image.size == (96, 64)
    assert pan.init_image.getpixel((40, 10)) == (200, 20, 20) and pan.mask_image.getpixel((40, 10)) == 0
    assert pan.mask_image.getpixel((10, 10)) == 255  # the new strip on the left is drawn

    zoom = edits.render_inputs(edits.zoom(64, 64, 2.0), source)
    assert zoom.mask_image.getpixel((32, 32)) == 0 and zoom.mask_image.getpixel((4, 4)) == 255

    region = edits.render_inputs(
        JobSpec.from_json(JobSpec(render=RenderSpec(prompt="x"), edit=EditSpec(cells=(1,))).to_json()).edit, source
    )
    assert region.init_image.size == (64, 64) and region.mask_image.getpixel((0, 0)) == 255
    assert region.mask_image.getpixel((40, 40)) == 0


def test_describe_names_the_edit_after_its_kinds_label():
    assert edits.describe(EditSpec(zoom=1.5)) == "1.5x"
    assert edits.describe(EditSpec(zoom=1.0, aspect="16:9")) == "1x --ar 16:9"
    assert edits.describe(EditSpec(aspect="1:1")) == ""  # Make Square says it all
    assert edits.describe(EditSpec(pan="right", pan_by=32)) == "➡️"
    assert edits.describe(EditSpec(cells=(6, 7))) == "cells 6, 7"


def test_the_region_picture_is_large_enough_to_read_and_keeps_the_shape():
    shown = region_overlay(Image.new("RGB", (96, 64), (0, 0, 255)))
    assert shown.size == (REGION_OVERLAY_SIDE, round(64 * REGION_OVERLAY_SIDE / 96))
    colours = {colour for _, colour in shown.getcolors(maxcolors=1 << 16)}
    assert (0, 0, 255) in colours and (255, 255, 255) in colours and len(colours) > 10  # lines and numbers drawn
