"""Training pieces a user relies on: the data, the judge, and a short real training run."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from engine.tokenizer import build_tokenizer
from engine.training.dataset import (
    TEMPLATES,
    FolderDataset,
    SyntheticDataset,
    held_out_combos,
    render,
    vocabulary,
)
from engine.training.evaluate import Case, classify, eval_cases, score
from engine.training.train import TrainConfig, train


def test_pixel_judge_is_right_on_ground_truth_images():
    # The eval is only as good as its judge: on the true images it must be perfect.
    cases = eval_cases(4)
    assert len(cases) >= 64
    assert score(cases, [render(c.scene) for c in cases]) == {"background": 1.0, "foreground": 1.0, "shape": 1.0}
    ds = SyntheticDataset(300, seed=3)
    truth = [Case("", 0, s) for s in ds.scenes]
    assert score(truth, [ds.image(i) for i in range(len(ds))]) == {"background": 1.0, "foreground": 1.0, "shape": 1.0}


def test_the_eval_case_sets_are_balanced_and_trained_cases_were_trained_on():
    from collections import Counter

    from engine.training.dataset import SHAPES
    from engine.training.evaluate import case_set

    held, fresh, trained = (case_set(name) for name in ("held-out", "fresh-seeds", "trained"))
    assert [c.prompt for c in held] == [c.prompt for c in fresh]
    assert not {c.seed for c in held} & {c.seed for c in fresh}
    assert not {c.scene.combo for c in trained} & set(held_out_combos())
    for cases in (held, trained):
        assert Counter(c.scene.shape for c in cases) == {shape: len(cases) // len(SHAPES) for shape in SHAPES}
    with pytest.raises(ValueError, match="held-out, fresh-seeds, trained"):
        case_set("all")


def test_pixel_judge_finds_no_shape_on_a_blank_image():
    judgement = classify(Image.new("RGB", (64, 64), (30, 70, 230)))
    assert judgement.bg == "blue" and judgement.fg is None and judgement.shape is None


def test_synthetic_data_is_deterministic_varied_and_never_shows_held_out_scenes():
    a, b, c = SyntheticDataset(200, seed=1), SyntheticDataset(200, seed=1), SyntheticDataset(200, seed=2)
    assert a.captions == b.captions and a.scenes == b.scenes
    assert a.image(5).tobytes() == b.image(5).tobytes()
    assert a.captions != c.captions
    phrasings = {cap for caps in a.captions for cap in caps}
    assert len(phrasings) > 300  # natural variety, not one template
    assert len(TEMPLATES) >= 10
    held = set(held_out_combos())
    assert not held & {s.combo for s in SyntheticDataset(3000, seed=0).scenes}
    assert {c.scene.combo for c in eval_cases(1)} == held


def test_every_caption_word_is_one_token():
    tokenizer = build_tokenizer(vocabulary())
    assert tokenizer.model_max_length == 77
    for word in vocabulary():
        assert len(tokenizer.tokenize(word)) == 1, word
    ids = tokenizer(["a red circle on a blue background", "a blue circle on a red background"]).input_ids
    assert ids[0] != ids[1]


def test_folder_dataset_reads_images_with_same_named_captions(tmp_path):
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (80, 60), colour).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"a {colour} square\nplain {colour}\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "uncaptioned.png")
    ds = FolderDataset(tmp_path, size=64)
    assert len(ds) == 2
    assert ds.captions[1] == ["a blue square", "plain blue"]
    assert ds.image(0).size == (64, 64)
    assert "square" in ds.words()


def _tiny_config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        output=str(tmp_path / "model"),
        run_dir=str(tmp_path / "run"),
        num_images=64,
        vae_steps=20,
        vae_batch=8,
        steps=60,
        batch=8,
        warmup=10,
        sample_every=0,
        checkpoint_every=30,
        progress=False,
        device="cpu",
        # Narrow networks: these tests check the training loop and what it writes, not the
        # shipped model's widths, and train several times faster so.
        vae_channels=(16, 16, 32, 32),
        decoder_steps=2,
        decoder_batch=4,
        unet_channels=(32, 32, 64),
        text_hidden=64,
        text_layers=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_a_short_training_run_lowers_the_loss_and_saves_a_pipeline_diffusers_loads(tmp_path):
    from diffusers import StableDiffusionPipeline

    report = train(_tiny_config(tmp_path, vae_steps=100, decoder_steps=20, steps=120, batch=16, lr=2e-3, text_lr=2e-3))
    first, last = report["loss_first_last"]
    # from random init; a broken pipeline stays flat. (Drawn by importance, half of each batch is at
    # mid noise, whose error falls slowest: 120 steps lower it about 5 %, uniform draws more.)
    assert last < first * 0.97
    vae_first, vae_last = report["vae_loss_first_last"]
    assert vae_last < vae_first
    assert len(report["decoder_loss_first_last"]) == 2  # stage 1b ran (what it learns: the test below)

    pipe = StableDiffusionPipeline.from_pretrained(
        tmp_path / "model", safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 77
    image = pipe(
        "a red circle", height=64, width=64, num_inference_steps=4, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (64, 64)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    whole = tmp_path / "whole"
    train(_tiny_config(whole, vae_steps=5, steps=20, checkpoint_every=10))
    part = tmp_path / "part"
    train(_tiny_config(part, vae_steps=5, steps=20, checkpoint_every=10, stop_after=10))
    train(_tiny_config(part, vae_steps=5, steps=20, checkpoint_every=10, resume=True))
    a = torch.load(whole / "run" / "checkpoint.pt", weights_only=False)
    b = torch.load(part / "run" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 20
    for key in ("ema_unet", "text_encoder"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name


def test_tuning_the_decoder_leaves_the_encoder_and_so_the_latents_as_they_were():
    from engine.training.models import make_vae
    from engine.training.train import encode_all, tune_decoder

    torch.manual_seed(0)
    vae = make_vae(32, (16, 16, 32, 32)).eval()
    encoder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    pixels = torch.rand(8, 3, 32, 32) * 2 - 1
    cpu = torch.device("cpu")
    means, stds = encode_all(vae, pixels, cpu)
    losses = tune_decoder(TrainConfig(decoder_steps=25, decoder_batch=4, progress=False), vae, pixels, means, stds, cpu)
    assert len(losses) == 2 and losses[1] < losses[0]
    assert all(torch.equal(v, vae.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, vae.decoder.state_dict()[k]) for k, v in decoder.items())
    assert not any(p.requires_grad for p in vae.parameters())


def test_a_run_on_a_trained_vae_skips_stages_1_and_1b_and_ships_that_vae_unchanged(tmp_path):
    first = train(_tiny_config(tmp_path / "first", steps=2))
    report = train(_tiny_config(tmp_path / "second", steps=2, vae=str(tmp_path / "first" / "model" / "vae")))
    assert "stage1_seconds" not in report and "decoder_loss_first_last" not in report
    assert report["vae_scaling_factor"] == first["vae_scaling_factor"]
    a = load_file(tmp_path / "first" / "model" / "vae" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "second" / "model" / "vae" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_on_a_trained_vae_can_tune_its_decoder_and_keeps_its_encoder(tmp_path):
    train(_tiny_config(tmp_path / "first", steps=2))
    first = tmp_path / "first" / "model" / "vae"
    report = train(_tiny_config(tmp_path / "second", steps=2, vae=str(first), tune_decoder=True, decoder_steps=4))
    assert len(report["decoder_loss_first_last"]) == 2 and "vae_before_decoder_tuning" in report
    a = load_file(first / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "second" / "model" / "vae" / "diffusion_pytorch_model.safetensors")
    encoder = [k for k in a if k.startswith(("encoder.", "quant_conv."))]
    assert encoder and all(torch.equal(a[k], b[k]) for k in encoder)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))


def test_tune_decoder_without_a_vae_is_refused_in_one_line(tmp_path, capsys):
    from engine.training.cli import train_main

    assert train_main(["--tune-decoder", "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (
        "dreamgrid train: error: --tune-decoder goes with --vae (without it, stage 1b runs anyway)"
    )
    assert not (tmp_path / "run").exists()


def test_importance_drawn_timesteps_keep_the_uniform_objective_and_draw_where_it_weighs():
    from engine.training.models import make_train_scheduler
    from engine.training.train import timestep_draws

    alphas = make_train_scheduler().alphas_cumprod
    snr = alphas / (1 - alphas)
    min_snr = torch.clamp(snr, max=5.0) / (snr + 1)
    uniform, _ = timestep_draws("uniform", min_snr)
    probs, weight = timestep_draws("importance", min_snr)
    assert torch.isclose(probs.sum(), torch.tensor(1.0))
    # E[weight x loss(t)] under the draws equals the uniform draws' min-SNR-weighted mean, for any loss(t)
    loss = torch.rand(len(min_snr))
    assert torch.isclose((probs * weight * loss).sum(), (uniform * min_snr * loss).sum())
    heavy = min_snr > min_snr.median()
    assert probs[heavy].sum() > 0.7 > uniform[heavy].sum()
    with pytest.raises(ValueError, match="uniform or importance"):
        timestep_draws("cosine", min_snr)


def test_a_background_the_prompt_does_not_name_is_not_judged_and_one_it_names_is():
    from engine.training.dataset import Scene

    scene = Scene("circle", "red", "blue", "medium", "center")
    green = render(Scene("circle", "red", "green", "medium", "center"))
    unnamed = Case("red circle in the middle", 0, scene)  # the phrasing with no background
    named = Case("red circle on blue", 0, scene)
    assert score([unnamed, named], [green, render(scene)]) == {"background": 1.0, "foreground": 1.0, "shape": 1.0}
    assert score([unnamed, named], [green, green])["background"] == 0.0  # the one that asked, missed


def test_train_with_a_vae_that_is_not_a_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    from engine.training.cli import train_main

    assert train_main(["--vae", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().endswith("is not an AutoencoderKL folder (no config.json)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("command", "argv", "said"),
    [
        ("eval", ["--seeds", "0"], "argument --seeds: '0' is not a positive number"),
        ("eval", ["--size", "65"], "argument --size: '65' is not a size in pixels that is a positive multiple of 8"),
        ("eval", ["--guidance", "-1"], "argument --guidance: '-1' is not a number, 0 or more"),
        ("train", ["--decoder-steps", "-5"], "argument --decoder-steps: '-5' is not a number, 0 or more"),
        ("train", ["--lr", "nan"], "argument --lr: 'nan' is not a positive number"),
        ("train", ["--caption-dropout", "1"], "argument --caption-dropout: '1' is not a number from 0 to under 1"),
        ("train", ["--batch", "two"], "argument --batch: 'two' is not a positive number"),
        ("train-describer", ["--steps", "0"], "argument --steps: '0' is not a positive number"),
        ("train-motion", ["--clips", "-1"], "argument --clips: '-1' is not a positive number"),
        ("eval-motion", ["--clips", "0"], "argument --clips: '0' is not a positive number"),
        ("eval-describer", ["--threads", "0"], "argument --threads: '0' is not a positive number"),
    ],
)
def test_a_number_out_of_range_is_refused_in_one_line_before_any_work(command, argv, said, tmp_path, capsys):
    from engine.training.cli import COMMANDS

    with pytest.raises(SystemExit) as exit_:
        COMMANDS[command]([*argv, "--run-dir", str(tmp_path / "run")] if command == "train" else argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == f"dreamgrid {command}: error: {said}"
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("command", "argv", "said"),
    [
        ("eval-describer", ["--model", "{tmp}"], "--model {tmp} is not a diffusers folder (no model_index.json)"),
        ("eval-describer", ["{tmp}", "--no-round-trip"], "could not load describer '{tmp}': no such folder"),
        ("train-motion", ["--model", "{tmp}"], "--model {tmp} is not a diffusers folder (no model_index.json)"),
        ("eval-motion", ["--model", "{tmp}"], "--model {tmp} is not a diffusers folder (no model_index.json)"),
        ("eval-motion", ["--motion", "{tmp}"], "--motion must be "),
    ],
)
def test_a_folder_that_is_not_a_model_is_refused_in_one_line(command, argv, said, tmp_path, capsys):
    from engine.training.cli import COMMANDS

    missing = str(tmp_path / "nowhere")
    assert COMMANDS[command]([arg.format(tmp=missing) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dreamgrid {command}: error: {said.format(tmp=missing)}")
    assert "\n" not in err


def test_eval_describer_finds_the_shipped_models_from_any_folder(tmp_path, monkeypatch):
    from engine.training import cli

    monkeypatch.chdir(tmp_path)  # outside the repository
    seen = {}
    monkeypatch.setattr(
        "engine.training.describer.evaluate_describer",
        lambda describer, text_to_image: seen.update(describer=describer, model=text_to_image) or _no_report(),
    )
    cli.eval_describer_main([])
    assert seen == {
        "describer": str(cli.SHIPPED_FOLDER.parent / "dreamgrid-describer"),
        "model": str(cli.SHIPPED_FOLDER),
    }


def _no_report() -> dict:
    return {"example": {"prompts": []}}
