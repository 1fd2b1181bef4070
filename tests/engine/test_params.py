"""The Midjourney parameter mapping (pure, torch-free: the bot imports it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import params


@pytest.mark.parametrize(
    ("aspect", "budget", "multiple", "expected"),
    [
        ((1, 1), 512 * 512, 64, (512, 512)),
        ((3, 2), 512 * 512, 64, (640, 448)),
        ((2, 3), 512 * 512, 64, (448, 640)),
        ((16, 9), 512 * 512, 64, (704, 384)),
        ((1, 1), 64 * 64, 8, (64, 64)),
        ((3, 2), 64 * 64, 8, (80, 56)),
        ((100, 1), 64 * 64, 8, (640, 8)),  # never below one multiple
    ],
)
def test_size_for_aspect(aspect, budget, multiple, expected):
    width, height = params.size_for_aspect(*aspect, budget, multiple)
    assert (width, height) == expected
    assert width % multiple == 0 and height % multiple == 0


def test_size_keeps_the_pixel_budget_and_the_shape():
    for w, h in [(1, 1), (4, 3), (3, 4), (16, 9), (21, 9), (2, 1)]:
        width, height = params.size_for_aspect(w, h, 512 * 512)
        assert 0.8 < width * height / (512 * 512) < 1.25
        assert abs(width / height - w / h) / (w / h) < 0.2


@pytest.mark.parametrize("bad", [(0, 1), (3, -2), (1.5, 1)])
def test_size_rejects_non_whole_aspects(bad):
    with pytest.raises(ValueError, match="whole number"):
        params.size_for_aspect(*bad, 512 * 512)


def test_quality_maps_to_steps():
    assert [params.steps_for_quality(q) for q in params.QUALITY_VALUES] == [5, 10, 20, 40]
    with pytest.raises(ValueError, match="0.3"):
        params.steps_for_quality(0.3)


def test_stylize_maps_to_guidance():
    assert params.guidance_for_stylize(params.STYLIZE_DEFAULT) == 7.5
    values = [params.guidance_for_stylize(s) for s in range(0, 1001, 50)]
    assert values == sorted(values, reverse=True)  # more stylize, looser prompt
    assert values[0] == 12.0 and values[-1] == 3.0
    with pytest.raises(ValueError, match="1001"):
        params.guidance_for_stylize(1001)


def test_stop_and_ranges():
    assert params.steps_for_stop(20, 100) == 20
    assert params.steps_for_stop(20, 50) == 10
    assert params.steps_for_stop(5, 10) == 1
    with pytest.raises(ValueError, match="9"):
        params.steps_for_stop(20, 9)
    assert (params.SEED_MIN, params.SEED_MAX) == (0, 4294967295)
    assert (params.CHAOS_MIN, params.CHAOS_MAX) == (0, 100)
    assert params.VARY_SUBTLE < params.VARY_STRONG
    assert params.UPSCALE_SUBTLE < params.UPSCALE_CREATIVE


@pytest.mark.parametrize("text", ["3:2:1", "3.5:2", "a:b", "0:1", "3"])
def test_parse_aspect_rejects(text):
    with pytest.raises(ValueError, match="--ar"):
        params.parse_aspect(text)


def test_params_and_the_seam_import_no_torch():
    code = "import sys, engine.params, engine.requests, engine.grid; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_img2img_steps_always_leave_steps_to_run():
    assert params.img2img_steps(20, params.UPSCALE_SUBTLE) == 20  # 2 steps run
    assert params.img2img_steps(5, params.UPSCALE_SUBTLE) == 20  # --q .25 would run none
    assert params.img2img_steps(5, params.VARY_STRONG) == 5
    # an upscale runs at least UPSCALE_MIN_STEPS, even at --q .25
    assert int(params.img2img_steps(5, params.UPSCALE_SUBTLE, minimum=params.UPSCALE_MIN_STEPS) * 0.1) == 4
    for steps in (1, 5, 10, 20, 40):
        for strength in (0.05, 0.1, 0.2, 0.35, 0.4, 0.75, 1.0):
            assert int(params.img2img_steps(steps, strength) * strength) >= 2


@pytest.mark.parametrize(
    ("native", "multiple", "step"),
    [(512, 8, 64), (1024, 16, 128), (64, 16, 16), (1328, 16, 16), (1328, 8, 16), (768, 16, 96), (1000, 16, 16)],
)
def test_aspect_sizes_come_in_steps_the_family_can_draw_and_keep_the_native_square(native, multiple, step):
    assert params.size_step(native, multiple) == step
    buckets = params.aspect_buckets(native, multiple=multiple)
    assert all(w % multiple == 0 and h % multiple == 0 for w, h in buckets)
    if native % multiple == 0:
        assert params.tile_size(1, 1, native, multiple) == (native, native)
    fields = params.request_fields({"ar": (3, 2)}, native=native, size_multiple=multiple)
    assert fields["width"] % multiple == 0 and fields["height"] % multiple == 0
