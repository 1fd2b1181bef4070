"""LoRAs by name through the fake Discord: `--lora` and `<lora:…>`, shown, recorded for 🔄, and refused
in one sentence when unknown, not allowed, turned off or made for another family."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.fake import FakeEngine
from engine.requests import LoraWeight
from tests.e2e.test_admin import configure, refusal
from tests.fakediscord import FakeDiscord
from tests.harness import result_of, running_bot


def _lora(path: Path, context: int) -> str:
    """A LoRA file whose header says it was trained on a UNet with `context`-wide text embeddings."""
    prefix = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    save_file({f"{prefix}.lora_A.weight": torch.zeros(4, context), f"{prefix}.lora_B.weight": torch.zeros(8, 4)}, path)
    return str(path)


def _settings(tmp_path: Path) -> tuple[dict[str, str], FakeEngine]:
    loras = {name: _lora(tmp_path / f"{name}.safetensors", context) for name, context in (("ink", 768), ("paper", 768))}
    loras["xl"] = _lora(tmp_path / "xl.safetensors", 2048)
    engine = FakeEngine(models=["fake"], lora_context_dim=768, step_delay_s=0.02)
    return {"loras": ",".join(f"{name}={path}" for name, path in loras.items())}, engine


async def test_lora_and_a1111_tags_draw_with_the_named_files_shown_and_kept_for_reroll(
    fake_discord: FakeDiscord, tmp_path: Path
):
    (tmp_path / "loras").mkdir()
    settings, engine = _settings(tmp_path / "loras")
    async with running_bot(fake_discord, tmp_path / "data", engine=engine, **settings):
        ix = await fake_discord.slash("imagine", prompt="a fox <lora:INK:0.8> in snow --lora paper --seed 3")
        grid = await result_of(ix)
        expected = (
            LoraWeight("ink", str(tmp_path / "loras" / "ink.safetensors"), 0.8),
            LoraWeight("paper", str(tmp_path / "loras" / "paper.safetensors"), 1.0),
        )
        assert engine.requests[-1].loras == expected
        assert engine.requests[-1].prompt == "a fox in snow"
        assert {"name": "LoRAs", "value": "`ink` 0.8, `paper` 1", "inline": True} in grid.embed["fields"]
        assert grid.embed["description"] == "a fox in snow --seed 3 --lora INK:0.8 --lora paper"

        await result_of(await fake_discord.click(grid, "dg:reroll:1"))
        assert engine.requests[-1].loras == expected  # 🔄 draws with the same files at the same weights


async def test_a_lora_that_cannot_be_used_is_one_sentence_and_queues_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    (tmp_path / "loras").mkdir()
    settings, engine = _settings(tmp_path / "loras")
    async with running_bot(fake_discord, tmp_path / "data", engine=engine, **settings) as bot:
        assert await refusal(fake_discord, "a fox --lora nope") == (
            "Unknown LoRA `nope`: use one of `ink`, `paper`, `xl`, or a /tune style code."
        )
        assert await refusal(fake_discord, "a fox <lora:xl>") == (
            "The LoRA `xl` can't be used here: it was trained for Stable Diffusion XL, not for this fake model"
        )
        assert await configure(fake_discord, loras="xl") == [
            "`loras`: the LoRA `xl` can't be used here: it was trained for Stable Diffusion XL,"
            " not for this fake model."
        ]
        replies = await configure(fake_discord, loras="ink")
        assert replies[0].startswith("`loras` is now `ink` (was all the bot's).")
        assert await refusal(fake_discord, "a fox --lora paper") == "The LoRA `paper` isn't allowed on this server."
        assert await refusal(fake_discord, "a fox --lora ink --lora ink:0.5") == (
            "The LoRA `ink` is given twice: keep one."
        )
        await configure(fake_discord, loras="none")
        assert await refusal(fake_discord, "a fox --lora ink") == "LoRAs are turned off on this server."
        assert await bot.store.get_job(1) is None
