"""`--sref` end to end: a random style prints its code, the code and a job's tile are recorded, 🔄 keeps them."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fakediscord import FakeDiscord
from tests.harness import result_of, running_bot


def fields(message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embed["fields"]}


async def test_sref_random_prints_a_code_that_is_recorded_and_kept_by_a_reroll(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse --sref random --sw 250"))
        shown = re.fullmatch(r"`--sref (\d+)`, --sw 250", fields(grid)["Style"])
        assert shown is not None
        code = int(shown[1])
        job = await bot.store.get_job(1)
        assert job.spec.render.style_codes == (code,) and job.spec.render.style_weight == 250
        assert f"--sref {code}" in job.prompt and "random" not in job.prompt  # the prompt as it was run

        rerolled = await result_of(await fake.click(grid, "dg:reroll:1"))
        assert fields(rerolled)["Style"] == f"`--sref {code}`, --sw 250"
        assert (await bot.store.get_job(2)).spec.render.style_codes == (code,)


async def test_a_jobs_tile_as_a_style_is_stored_with_the_job(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await result_of(await fake.slash("imagine", prompt="a red circle"))
        styled = await result_of(await fake.slash("imagine", prompt="a blue fox --sref 1:3"))
        assert fields(styled)["Style"] == "`job 1 picture 3`, --sw 100"
        (picture,) = (await bot.store.get_job(2)).spec.style_inputs
        assert (tmp_path / picture.path).is_file()


async def test_bad_style_references_get_one_sentence_and_queue_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        for prompt, expected in (
            ("a fox --sw 300", "`--sw` sets how strongly a style reference steers: add one with `--sref` or `--p`."),
            ("a fox --sref 7:2", "Job 7 no longer exists."),
            ("a fox --sref 0", "`0` is not a style code: codes are 1–4294967295, as `--sref random` prints them."),
            ("a fox --sref --ar 3:2", "`--sref` needs a value, e.g. `--sref random`."),
            (
                "a fox --sref https://example.com/a.png",
                "<https://example.com/a.png> isn't a picture posted on Discord. I only read pictures posted here: "
                "use the `image` option to upload it.",
            ),
        ):
            ix = await fake.slash("imagine", prompt=prompt)
            await ix.ack()
            assert (await ix.wait_for_reply()).content == expected
        assert await bot.store.get_job(1) is None


async def test_a_moodboard_collects_pictures_and_styles_a_prompt(fake_discord: FakeDiscord, tmp_path: Path):
    import io

    from PIL import Image

    fake = fake_discord
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (30, 160, 90)).save(buffer, format="PNG")
    async with running_bot(fake, tmp_path) as bot:

        async def reply(command: str, **options) -> str:
            ix = await fake.slash(command, **options)
            await ix.ack()
            message = await ix.wait_for_reply()
            assert message.ephemeral
            return message.content

        assert await reply("moodboard create", moodboard="Autumn") == (
            "Moodboard `autumn` made: add pictures with `/moodboard add`, use it with `--sref mb:autumn`."
        )
        assert await reply("moodboard create", moodboard="autumn") == "You already have a moodboard called `autumn`."
        assert await reply("moodboard create", moodboard="a b") == (
            "A moodboard's name is 1–32 letters, digits, `-` or `_`, e.g. `autumn`."
        )
        await result_of(await fake.slash("imagine", prompt="a red circle"))
        added = await fake.slash("moodboard add", moodboard="autumn", job_image="1:2")
        await added.ack()
        assert (await added.wait_for_edit(lambda m: "Added" in m.content)).content == (
            "Added job 1 picture 2 to `autumn`: it holds 1 now."
        )
        upload = await fake.slash("moodboard add", moodboard="autumn", image=fake.upload("leaf.png", buffer.getvalue()))
        await upload.ack()
        assert "it holds 2 now" in (await upload.wait_for_edit(lambda m: "Added" in m.content)).content
        assert await reply("moodboard list") == "`mb:autumn`: 2 pictures"

        styled = await result_of(await fake.slash("imagine", prompt="a fox --sref mb:autumn"))
        assert fields(styled)["Style"] == "`job 1 picture 2`, `leaf.png`, --sw 100"
        assert len((await bot.store.get_job(2)).spec.style_inputs) == 2

        assert await reply("moodboard delete", moodboard="autumn") == (
            "Moodboard `autumn` deleted; jobs drawn with it keep their pictures."
        )
        assert await reply("moodboard list") == "You have no moodboards yet: make one with `/moodboard create`."
        refused = await fake.slash("imagine", prompt="a fox --sref mb:autumn")
        await refused.ack()
        assert (await refused.wait_for_reply()).content == (
            "You have no moodboard `mb:autumn` with pictures in it: see `/moodboard list`."
        )


async def test_hearts_make_a_profile_that_p_freezes_into_a_reusable_code(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a red circle"))
        u2 = await fake.click(grid, "dg:u:1:2")
        await u2.ack()
        tile = await u2.wait_for_followup(lambda m: m.attachments)
        assert tile.labels[-2:] == [None, None]  # ❤️ and 👎, emoji only, in the last row

        async def rate(custom_id: str) -> str:
            ix = await fake.click(tile, custom_id)
            await ix.ack()
            return (await ix.wait_for_edit(lambda m: m.content and "…" not in m.content)).content

        assert await rate("dg:rate:like:1:2") == (
            "❤️ Added to your profile (1 liked): `--p` draws in the style of what you like."
        )
        styled = await result_of(await fake.slash("imagine", prompt="a fox --p"))
        shown = re.fullmatch(r"`--p (\d+)` \(1 picture\), --sw 100", fields(styled)["Style"])
        assert shown is not None
        code = shown[1]
        job = await bot.store.get_job(2)
        assert f"--p {code}" in job.prompt and len(job.spec.style_inputs) == 1
        again = await result_of(await fake.slash("imagine", prompt="a fox --p"))  # the same likes: the same code
        assert fields(again)["Style"] == f"`--p {code}` (1 picture), --sw 100"

        assert await rate("dg:rate:dislike:1:2") == "👎 Noted: this picture stays out of your profile."
        for prompt, expected in (
            ("a fox --p", "Your profile is empty: press ❤️ under pictures you like first, then use `--p`."),
            ("a fox --p 5", "There is no profile `--p 5`: use `--p` alone for yours, or a code a `--p` result showed."),
        ):
            ix = await fake.slash("imagine", prompt=prompt)
            await ix.ack()
            assert (await ix.wait_for_reply()).content == expected
        reused = await result_of(await fake.slash("imagine", prompt=f"a cat --p {code}"))  # a code outlives the likes
        assert fields(reused)["Style"] == f"`--p {code}` (1 picture), --sw 100"


async def test_oref_keeps_a_subject_by_the_models_reference_input_or_its_ip_adapter(
    fake_discord: FakeDiscord, tmp_path: Path
):
    from engine.fake import FakeEngine
    from engine.requests import Action, Feature, ImagePromptMethod, ModelHints

    fake = fake_discord
    reference_input = FakeEngine(hints={"fake": ModelHints(family="Flux.2 [klein]")})
    async with running_bot(fake, tmp_path, engine=reference_input) as bot:
        await result_of(await fake.slash("imagine", prompt="a red circle"))
        kept = await result_of(await fake.slash("imagine", prompt="the same fox in the snow --oref 1:2"))
        assert fields(kept)["Subject"] == "`job 1 picture 2`, kept with `--oref` as the model's reference"
        job = await bot.store.get_job(2)
        assert job.kind == "object_reference" and len(job.spec.inputs) == 1
        drawn = reference_input.requests[-1]
        assert drawn.action is Action.EDIT and drawn.init_image is not None
        ix = await fake.slash("imagine", prompt="a fox --oref 1:2 --ow 200")
        await ix.ack()
        assert (await ix.wait_for_reply()).content == (
            "`--ow` weighs an IP-Adapter's subject; Flux.2 [klein] models keep the `--oref` picture as their"
            " reference input does: leave `--ow` out."
        )

    adapter = FakeEngine(image_prompt_method=ImagePromptMethod.IP_ADAPTER)
    async with running_bot(fake, tmp_path / "adapter", engine=adapter) as bot:
        await result_of(await fake.slash("imagine", prompt="a red circle"))
        steered = await result_of(await fake.slash("imagine", prompt="a fox --oref 1:1 --ow 200"))
        assert fields(steered)["Image prompt"] == "`job 1 picture 1` via IP-Adapter, --iw 2"

    refusing = FakeEngine(
        refusals={"fake": {Feature.INSTRUCTION_EDIT: "no"}}, hints={"fake": ModelHints(family="Stable Diffusion XL")}
    )
    async with running_bot(fake, tmp_path / "refusing", engine=refusing) as bot:
        for prompt, expected in (
            (
                "a fox --oref 1:1",
                "Stable Diffusion XL models can't keep a subject from a picture (`--oref`): that takes an IP-Adapter"
                " (`IP_ADAPTER`) or a model with a reference-image input (Flux.1 Kontext, Flux.2 [klein]).",
            ),
            ("a fox --ow 50", "`--ow` sets how strongly an `--oref` subject steers: add one with `--oref`."),
            (
                "a fox --oref random",
                "`--oref random` is not a picture: use a job's tile like `12:3`, or a picture's link.",
            ),
        ):
            ix = await fake.slash("imagine", prompt=prompt)
            await ix.ack()
            assert (await ix.wait_for_reply()).content == expected
        assert await bot.store.get_job(1) is None
