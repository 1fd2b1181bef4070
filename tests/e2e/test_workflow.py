"""The Midjourney path a member walks: /imagine → U → Vary → V → 🔄 → Upscale, Remix, expiry."""

from __future__ import annotations

from pathlib import Path

from engine import params as render_params
from tests.fakediscord import FakeDiscord
from tests.harness import eventually, result_of, running_bot

SUCCESS = 3  # Discord's green button style


async def test_imagine_u_vary_v_reroll_upscale_across_a_restart(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse at dusk --ar 3:2 --seed 5"))
        assert grid.attachments[0].image().size == (160, 112)  # 2x the 80x56 tile of a 3:2 64px model

        # U2: the tile on its own, no render; U2 turns green on the grid.
        u2 = await fake.click(grid, "dg:u:1:2")
        assert (await u2.ack()).type == 7
        tile = await u2.wait_for_followup(lambda m: m.attachments)
        assert tile.attachments[0].image().size == (80, 56)
        assert tile.labels == ["Vary (Strong)", "Vary (Subtle)", "Upscale (Subtle)", "Upscale (Creative)"]
        assert "Image #2" in tile.content
        assert [b["style"] for b in grid.buttons if b.get("custom_id") == "dg:u:1:2"] == [SUCCESS]
        assert await bot.store.get_job(2) is None  # U renders nothing

        # Vary (Strong): a grid of variations of tile 2.
        varied = await result_of(await fake.click(tile, label="Vary (Strong)"))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index) == ("variation", 1, 2)
        assert job.spec.render.strength == render_params.VARY_STRONG
        assert varied.attachments[0].image().size == (160, 112)
        assert bot.engine.requests[-1].init_image.size == (80, 56)

    # A new process: the old messages' buttons still work.
    async with running_bot(fake, tmp_path) as bot:
        v3 = await result_of(await fake.click(varied, label="V3"))
        job = await bot.store.get_job(3)
        assert (job.kind, job.parent_id, job.parent_index) == ("variation", 2, 3)

        rerolled = await result_of(await fake.click(v3, "dg:reroll:3"))
        job = await bot.store.get_job(4)
        assert (job.kind, job.parent_id, job.prompt) == ("reroll", 3, "a lighthouse at dusk --ar 3:2 --seed 5")
        assert job.seeds != (await bot.store.get_job(3)).seeds

        u1 = await fake.click(rerolled, label="U1")
        await u1.ack()
        tile = await u1.wait_for_followup(lambda m: m.attachments)
        upscaled = await result_of(await fake.click(tile, label="Upscale (Subtle)"))
        job = await bot.store.get_job(5)
        assert (job.kind, job.parent_id, job.parent_index) == ("upscale", 4, 1)
        assert job.spec.render.strength == render_params.UPSCALE_SUBTLE
        assert upscaled.attachments[0].image().size == (160, 112)  # exactly 2x the tile
        assert upscaled.buttons == []  # nothing further to do with an upscale


async def test_buttons_redraw_when_the_stored_images_are_gone(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a quiet harbour --seed 9"))
        for image in await bot.store.get_images(1):
            (tmp_path / image.path).unlink()
        # V1 needs tile 1: the engine draws job 1 again from its recorded request first.
        await result_of(await fake.click(grid, label="V1"))
        first, again, variation = bot.engine.requests[-3:]
        assert again.seeds == first.seeds == (9, 10, 11, 12) and again.prompt == first.prompt
        assert variation.init_image is not None
        assert all((tmp_path / i.path).exists() for i in await bot.store.get_images(1))


async def test_remix_opens_a_modal_and_uses_the_edited_prompt(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        toggled = await fake.slash("prefer remix")
        assert "on" in (await toggled.wait_for_reply()).content
        grid = await result_of(await fake.slash("imagine", prompt="a red bicycle --seed 3"))

        opened = await fake.click(grid, label="V2")
        assert (await opened.ack()).type == 9
        assert opened.modal["components"][0]["components"][0]["value"] == "a red bicycle --seed 3"
        await result_of(await fake.submit_modal(opened, {"prompt": "a blue bicycle --seed 3"}))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index) == ("variation", 1, 2)
        assert job.prompt == "a blue bicycle --seed 3"
        assert bot.engine.requests[-1].prompt == "a blue bicycle"

        bad = await fake.click(grid, "dg:reroll:1")
        await bad.ack()
        refused = await fake.submit_modal(bad, {"prompt": "a bicycle --chaos 500"})
        await refused.ack()
        assert refused.ephemeral and "out of range" in (await refused.wait_for_reply()).content


async def test_a_job_finishing_after_the_token_expired_lands_in_the_channel(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path, engine=None, fake_step_delay_s=0.0) as bot:
        bot.engine.step_delay_s = 0.3
        ix = await fake.slash("imagine", prompt="a slow sunrise --seed 1")
        await ix.ack()
        await ix.wait_for_edit(lambda m: "%" in m.content)
        ix.expire()  # Discord's 15 minutes pass
        posted = await fake.wait_for_message(fake.channel, lambda m: m.attachments and m.id != ix.original.id)
        assert fake.alice.mention in posted.content
        assert posted.buttons  # live buttons on the channel copy
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at)
        assert job.result_message_id == posted.id
        assert "Finished" in ix.original.content  # the stale progress message points to the result
        channel_posts = [r for r in fake.requests_to("POST", "/channels/{channel_id}/messages")]
        assert len(channel_posts) == 1


async def test_results_over_the_upload_limit_are_re_encoded_to_fit(fake_discord: FakeDiscord, tmp_path: Path):
    from PIL import Image

    from engine.fake import FakeEngine

    class NoisyEngine(FakeEngine):
        """Noise does not compress: a PNG of it is large."""

        async def render(self, request, *, progress=None):
            result = await super().render(request, progress=progress)
            noisy = tuple(Image.effect_noise(img.size, 80).convert("RGB") for img in result.images)
            return type(result)(images=noisy, seeds=result.seeds, model=result.model, elapsed_s=result.elapsed_s)

    fake = fake_discord
    fake.attachment_size_limit = 40_000
    async with running_bot(fake, tmp_path, engine=NoisyEngine(models=["fake"], tile_size=128)):
        grid = await result_of(await fake.slash("imagine", prompt="static --seed 2"))
        attachment = grid.attachments[0]
        assert attachment.size <= 40_000
        assert attachment.filename.endswith(".webp")


async def test_the_envelope_button_sends_the_result_to_the_clickers_dms(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path):
        grid = await result_of(await fake.slash("imagine", prompt="a paper boat --seed 8"))
        dm = await fake.click(grid, "dg:dm:1", user=fake.bob)
        assert (await dm.ack()).ephemeral
        assert "Sent" in (await dm.wait_for_reply(lambda m: not m.loading)).content
        sent = await fake.wait_for_message(fake.dm(fake.bob), lambda m: m.attachments)
        assert "Job 1" in sent.content and "8, 9, 10, 11" in str(sent.embed)


async def test_imagine_works_in_a_dm_when_the_operator_allows_dms(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path, allow_dms=True) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a kite --seed 2", channel=fake.dm(fake.alice)))
        assert grid.attachments[0].image().size == (128, 128)
        job = await bot.store.get_job(1)
        assert job.guild_id is None and job.status == "done"
