"""`dreamgrid imagine` on the command line."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.cli import imagine_main


@pytest.fixture
def model_args(tiny_folder):
    return ["--model", str(tiny_folder), "--steps", "4", "--device", "cpu"]


def test_same_arguments_give_byte_identical_pngs(tmp_path, capsys, model_args):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert imagine_main(["a red circle", "--seed", "1", "-o", str(a), *model_args]) == 0
    assert capsys.readouterr().out.strip() == str(a)
    assert imagine_main(["a red circle", "--seed", "1", "-o", str(b), *model_args]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert Image.open(a).size == (128, 128)  # a 2x2 grid of 64 px tiles


def test_aspect_ratio_variation_and_upscale(tmp_path, capsys, model_args):
    grid = tmp_path / "grid.png"
    assert imagine_main(["a red circle", "--seed", "2", "--ar", "3:2", "-o", str(grid), *model_args]) == 0
    assert Image.open(grid).size == (160, 112)
    tile = tmp_path / "tile.png"
    Image.open(grid).crop((0, 0, 80, 56)).save(tile)
    var = tmp_path / "var.png"
    assert (
        imagine_main(
            ["x", "--seed", "3", "--variation", str(tile), "--strength", "subtle", "-o", str(var), *model_args]
        )
        == 0
    )
    assert Image.open(var).size == (160, 112)
    up = tmp_path / "up.png"
    assert imagine_main(["x", "--seed", "3", "--upscale", str(tile), "-o", str(up), *model_args]) == 0
    assert Image.open(up).size == (160, 112)


def test_default_output_goes_to_out(tmp_path, monkeypatch, capsys, model_args):
    monkeypatch.chdir(tmp_path)
    assert imagine_main(["A Red Circle!", "--seed", "1", *model_args]) == 0
    path = capsys.readouterr().out.strip()
    assert path.startswith(f"{tmp_path}/out/") and path.endswith("-a-red-circle.png")  # absolute, to copy
    assert (tmp_path / path).exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["x", "--ar", "3.5:2"], "--ar"),
        (["x", "--chaos", "101"], "101"),
        (["x", "--stop", "5"], "5"),
        (["x", "--q", "3"], "--q"),
        (["x", "--seed", "-1"], "-1"),
        (["x", "--variation", "missing.png"], "missing.png"),
        (["x", "--upscale", "a.png", "--variation", "b.png"], "not allowed"),
        (["x", "--frobnicate"], "frobnicate"),
        ([], "prompt"),
    ],
)
def test_bad_input_is_one_clear_line(argv, named, capsys):
    assert imagine_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "Traceback" not in err


def test_a_tiny_flux_folder_draws_a_grid_of_four_distinct_tiles(tmp_path, capsys, monkeypatch, family_folder):
    """MODEL=<a Flux.1 folder> dreamgrid imagine "…", through the bot's entry point and its settings."""
    import numpy as np

    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODEL", str(family_folder("flux")))
    monkeypatch.setenv("DEVICE", "cpu")
    out = tmp_path / "flux.png"
    assert main(["imagine", "a red circle --seed 7 --ar 3:2", "-o", str(out)]) == 0
    grid = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert grid.shape[:2] == (96, 160)  # 80x48 tiles: --ar 3:2 in Flux's multiples of 16
    h, w = grid.shape[0] // 2, grid.shape[1] // 2
    tiles = [grid[y : y + h, x : x + w] for y in (0, h) for x in (0, w)]
    assert min(np.abs(a - b).mean() for i, a in enumerate(tiles) for b in tiles[i + 1 :]) > 1
    assert "Flux" not in capsys.readouterr().err  # no refusal, no warning about the family
