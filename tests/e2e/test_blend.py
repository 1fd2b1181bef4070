"""/blend end to end: 2 to 5 uploads, each dimensions choice, the embed, and bad inputs refused."""

from __future__ import annotations

from pathlib import Path

from bot import kinds
from engine import params as render_params
from engine.fake import FakeEngine
from engine.requests import Action, ImagePromptMethod
from tests.e2e.test_images import fields, picture, refused, upload_result
from tests.fakediscord import FakeDiscord
from tests.harness import result_of, running_bot


async def test_blend_of_two_pictures_in_each_dimensions_gives_a_grid_with_buttons(fake_discord: FakeDiscord, tmp_path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        for job_id, (dimensions, size) in enumerate(
            [("portrait", (56, 80)), ("square", (64, 64)), ("landscape", (80, 56))], start=1
        ):
            red = fake.upload("red.png", picture((300, 300), (220, 30, 30)))
            blue = fake.upload("blue.jpg", picture((640, 480), (30, 70, 230), fmt="JPEG"))
            grid = await upload_result(await fake.slash("blend", image1=red, image2=blue, dimensions=dimensions))
            assert grid.attachments[0].image().size == (2 * size[0], 2 * size[1])
            assert grid.labels == ["U1", "U2", "U3", "U4", None, "V1", "V2", "V3", "V4", None]
            assert grid.content.startswith("Your pictures `red.png` + `blue.jpg` - Blend - <@")  # both named
            assert fields(grid)["Blend"] == (
                "`red.png` + `blue.jpg`, mixed in the model's latent space (no IP-Adapter installed)"
            )
            job = await bot.store.get_job(job_id)
            assert (job.kind, job.status, [p.name for p in job.spec.inputs]) == (
                "blend",
                "done",
                ["red.png", "blue.jpg"],
            )
            request = bot.engine.requests[-1]
            assert request.action is Action.BLEND and len(request.blend_images) == 2
            assert (request.width, request.height) == size
            assert request.strength == render_params.BLEND_STRENGTH
            # Our own copies, not Discord's links: the red one is red.
            assert request.blend_images[0].getpixel((5, 5)) == (220, 30, 30)

        # The result works like any grid: 🔄 blends the same pictures again with new seeds.
        again = await result_of(await fake.click(grid, "dg:reroll:*"))
        job = await bot.store.get_job(4)
        assert job.kind == "blend" and [p.name for p in job.spec.inputs] == ["red.png", "blue.jpg"]
        assert again.embeds and fields(again)["Blend"].startswith("`red.png` + `blue.jpg`")


async def test_blend_of_five_pictures_with_a_prompt_and_the_members_suffix(fake_discord: FakeDiscord, tmp_path):
    fake = fake_discord
    engine = FakeEngine(models=("fake",), image_prompt_method=ImagePromptMethod.IP_ADAPTER)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        await bot.store.set_suffix(fake.alice.id, "--s 250")
        uploads = {
            f"image{n}": fake.upload(f"p{n}.png", picture((100 + 10 * n, 100), (40 * n, 20, 200))) for n in range(1, 6)
        }
        grid = await upload_result(await fake.slash("blend", prompt="a dream --seed 9", **uploads))
        assert fields(grid)["Blend"] == (
            "`p1.png` + `p2.png` + `p3.png` + `p4.png` + `p5.png`, "
            "mixed through the IP-Adapter (the pictures' embeddings, averaged)"
        )
        job = await bot.store.get_job(1)
        assert job.prompt == "a dream --seed 9 --s 250"  # the suffix applies, as on Midjourney
        assert job.seeds == kinds.BLEND.seeds(9)  # --seed 9 is image 1; the others are mixed from it
        request = engine.requests[-1]
        assert len(request.blend_images) == 5 and request.image_prompt_method is ImagePromptMethod.IP_ADAPTER


async def test_bad_blend_inputs_are_refused_in_one_line_and_queue_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await result_of(await fake.slash("imagine", prompt="a setup grid"))
        bot.engine.requests.clear()
        good = fake.upload("good.png", picture())
        notes = fake.upload("notes.png", b"just some text, not a picture\n")
        await refused(
            fake,
            bot,
            await fake.slash("blend", image1=good, image2=notes),
            "`notes.png` isn't a PNG, JPEG, WebP or GIF picture.",
        )
        huge = fake.upload("huge.png", picture((64, 64)), declared_size=1 << 30)
        await refused(
            fake,
            bot,
            await fake.slash("blend", image1=fake.upload("a.png", picture()), image2=huge),
            "`huge.png` is 1.0 GiB; pictures may be up to 10.0 MiB here.",
        )
        assert huge not in fake.cdn_downloads
        tall = fake.upload("tall.png", picture((100, 500)))
        await refused(
            fake,
            bot,
            await fake.slash("blend", image1=fake.upload("b.png", picture()), image2=tall),
            "`tall.png` is 100×500; pictures may be at most 4:1 wide or tall.",
        )
        await refused(
            fake,
            bot,
            await fake.slash(
                "blend",
                image1=fake.upload("c.png", picture()),
                image2=fake.upload("d.png", picture()),
                prompt="x --iw 2",
            ),
            "`--iw` is for an image prompt; a blend mixes its pictures evenly.",
        )
