"""/config end to end: an admin changes a setting, and the next /imagine obeys it."""

from __future__ import annotations

from pathlib import Path

from bot.guild_config import KEYS
from engine.fake import FakeEngine
from tests.fakediscord import FakeDiscord, User
from tests.harness import config_shown, running_bot, shows_result


async def configure(fake: FakeDiscord, user: User | None = None, **values: str) -> list[str]:
    """Run `/config set` for each key as `user` (the admin by default); the replies, in order."""
    replies = []
    for key, value in values.items():
        ix = await fake.slash("config set", key=key, value=value, user=user or fake.admin)
        assert (await ix.ack()).ephemeral
        replies.append((await ix.wait_for_reply()).content)
    return replies


async def imagine(fake: FakeDiscord, prompt: str, **where):
    ix = await fake.slash("imagine", prompt=prompt, **where)
    await ix.wait_for_answer()  # "Waiting to start" or a refusal
    return ix


async def refusal(fake: FakeDiscord, prompt: str, **where) -> str:
    """The ephemeral one-liner a refused /imagine gets."""
    ix = await imagine(fake, prompt, **where)
    reply = await ix.wait_for_reply()
    assert ix.ephemeral and reply.ephemeral
    return reply.content


async def finished(ix):
    return await ix.wait_for_edit(shows_result, timeout=15)


async def test_channels_members_and_banned_words(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    art = fake.add_channel("art")
    async with running_bot(fake, tmp_path) as bot:
        replies = await configure(
            fake, channels=art.mention, banned_members=fake.bob.mention, banned_words="gore, /bl[o0]+d/"
        )
        assert replies[0].startswith(f"`channels` is now {art.mention} (was everywhere)")

        # the wrong channel gets a pointer to the right one
        assert await refusal(fake, "a red fox") == f"I don't draw in this channel. Try {art.mention}."
        # a banned member is refused everywhere
        assert "can't use dreamgrid on this server" in await refusal(fake, "a red fox", channel=art, user=fake.bob)
        # a banned word, in any case, names what matched; so does a pattern
        assert await refusal(fake, "a GORE scene", channel=art) == (
            "Your prompt matches the word `gore`, which this server doesn't allow. Nothing was queued."
        )
        assert "the pattern `/bl[o0]+d/`" in await refusal(fake, "a bl00dy moon", channel=art)
        # a word inside another word is not that word
        ok = await imagine(fake, "a goretex jacket", channel=art)
        await finished(ok)

        assert [(await bot.store.get_job(i)) is not None for i in (1, 2)] == [True, False]
        log = await bot.store.moderation_log(fake.guild.id)
        assert [(e["user_id"], e["matched"]) for e in reversed(log)] == [
            (fake.alice.id, "gore"),
            (fake.alice.id, "/bl[o0]+d/"),
        ]
        shown = await fake.slash("config moderation", user=fake.admin)
        assert (await shown.ack()).ephemeral
        lines = (await shown.wait_for_reply()).content.splitlines()
        assert lines[0] == "Refused prompts, newest first:"
        assert "matched `/bl[o0]+d/`" in lines[1] and "matched `gore`" in lines[2]
        assert fake.alice.mention in lines[1]


async def test_models_steps_size_aspect_and_repeat(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake", "fake-xl"], step_delay_s=0.01, tile_size=128)
    async with running_bot(fake, tmp_path, engine=engine, models=["fake-xl"], max_steps=50):
        replies = await configure(
            fake,
            default_model="fake-xl",
            allowed_models="fake-xl",
            max_steps="4",
            max_image_size="96",
            default_aspect="2:1",
            repeat_allowed="off",
        )
        assert all(" is now " in reply for reply in replies), replies

        ix = await imagine(fake, "a lighthouse --q 2")
        grid = await finished(ix)
        request = engine.requests[-1]
        assert request.model == "fake-xl"  # the server's default model
        assert request.steps == 4  # --q 2 asked for more; max_steps caps it
        # 2:1 at the model's 128² is 176×96 (multiples of 128 // 8); scaled to 96 px on the long side
        assert (request.width, request.height) == (96, 48)
        assert grid.attachments[0].image().size == (192, 96)

        assert await refusal(fake, "a lighthouse --model fake") == (
            "The model `fake` isn't allowed on this server: use `fake-xl`."
        )
        assert await refusal(fake, "a lighthouse --repeat 2") == "`--repeat` is turned off on this server."
        # a /settings aspect or the prompt's still wins over the server's default
        ix = await imagine(fake, "a lighthouse --ar 1:2")
        await finished(ix)
        assert (engine.requests[-1].width, engine.requests[-1].height) == (48, 96)
        # upscaling a 96 px tile would make 192 px: over the limit, so not offered
        up = await fake.click(grid, "dg:u:*:1")
        tile = await up.wait_for_followup(lambda m: m.attachments)
        assert "Upscale (Subtle)" not in tile.labels and "Vary (Subtle)" in tile.labels
        assert len(engine.requests) == 2


async def test_queue_limits_daily_and_role_quotas(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    patron = fake.add_role("Patron")
    carol = fake.add_member("carol", roles=[patron])
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        await configure(
            fake, max_running_per_user="1", max_queued_per_user="1", daily_quota="3", role_quotas=f"<@&{patron.id}>: 3"
        )

        # running and queued limits: one drawing, one waiting, the third refused
        first = await imagine(fake, "__hang__ one")
        await fake.wait_for(lambda: engine.requests, what="the first job to start")
        second = await imagine(fake, "two")
        await second.wait_for_response()
        assert (await bot.store.get_job(2)).status == "queued"  # the server allows 1 running, the bot 3
        assert await refusal(fake, "three") == (
            "You already have 1 jobs waiting (the limit is 1 per member)."
            " Wait for some to finish, or cancel one with /cancel."
        )
        assert first.original is not None

        # daily quota: lowered to 2, which alice has used; carol's Patron role gives her 3
        await configure(fake, daily_quota="2")
        assert (await refusal(fake, "four", user=fake.alice)).startswith("You've used all 2 of today's jobs here")
        for n in range(3):
            ix = await imagine(fake, f"carol {n}", user=carol)
            await finished(ix)
        assert (await refusal(fake, "carol 4", user=carol)).startswith("You've used all 3 of today's jobs here")


async def test_a_member_without_manage_server_is_refused_even_when_shown_the_command(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    mods = fake.add_role("Mods")
    dave = fake.add_member("dave", roles=[mods])
    async with running_bot(fake, tmp_path) as bot:
        group = fake.find_command("config")
        assert int(group["default_member_permissions"]) == 1 << 5  # the hint: Manage Server
        assert group.get("contexts") == [0]  # guild only

        # an owner may show the command to everyone; the bot still refuses
        for command, options in (
            ("config set", {"key": "max_steps", "value": "1"}),
            ("config show", {}),
            ("config reset", {"key": "max_steps"}),
            ("config history", {}),
        ):
            ix = await fake.slash(command, user=fake.alice, **options)
            assert (await ix.ack()).ephemeral
            reply = await ix.wait_for_reply()
            assert reply.content == "Only members with the Manage Server permission can use /config."
        assert not (await bot.guild_configs.get(fake.guild.id)).is_set("max_steps")

        # a configured admin role is enough
        await configure(fake, user=fake.owner, admin_role=f"<@&{mods.id}>")
        replies = await configure(fake, user=dave, max_steps="5")
        assert replies == ["`max_steps` is now 5 (was 50). It applies to the next job."]
        ix = await fake.slash("config set", key="max_steps", value="6", user=fake.bob)
        await ix.ack()
        assert (await ix.wait_for_reply()).content == (
            f"Only members with the Manage Server permission or the <@&{mods.id}> role can use /config."
        )

        # ... and it makes them a server admin for /cancel too
        queued = await fake.slash("imagine", prompt="__hang__ a long one", user=fake.alice)
        await queued.wait_for_answer()
        cancel = await fake.slash("cancel", job_id=1, user=dave)
        await cancel.ack()
        assert "Cancelled job 1" in (await cancel.wait_for_reply(lambda m: not m.loading)).content


async def test_values_are_validated_with_the_allowed_range(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path, max_steps=40) as bot:
        assert await configure(
            fake,
            max_steps="500",
            daily_quota="lots",
            default_aspect="9:1",
            safety_checker="maybe",
            default_model="nope",
            channels="#nowhere",
        ) == [
            "`max_steps`: 500 is out of range. It takes a whole number from 1 to 40.",
            "`daily_quota`: `lots` is not a whole number. It takes a whole number from 0 to 10000 (0: no quota).",
            "`default_aspect`: 9:1 is too narrow. It takes a ratio of whole numbers like `3:2`, from 1:4 to 4:1.",
            "`safety_checker`: `maybe` is not on or off. It takes `on` or `off`.",
            "`default_model`: `nope` is not installed. It takes one of the installed models: `fake`.",
            "`channels`: I can't find the channel `#nowhere` on this server. It takes `all`, or a comma list of"
            " channels like #art, #bots.",
        ]
        ix = await fake.slash("config set", key="colour", value="red", user=fake.admin)
        await ix.ack()
        assert "There is no setting `colour`" in (await ix.wait_for_reply()).content
        assert await bot.store.guild_settings(fake.guild.id) == {}

        choices = await (await fake.autocomplete("config set", "key", user=fake.admin, key="max")).wait_for_choices()
        assert [c["value"] for c in choices] == [
            "max_steps",
            "max_image_size",
            "max_running_per_user",
            "max_queued_per_user",
            "max_style_references",
            "max_moodboards",
        ]
        choices = await (
            await fake.autocomplete("config set", "value", user=fake.admin, key="remix_allowed")
        ).wait_for_choices()
        assert [c["value"] for c in choices] == ["on", "off"]


async def test_show_and_history(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        ix = await fake.slash("config history", user=fake.admin)
        await ix.ack()
        assert (await ix.wait_for_reply()).content == "No setting has been changed on this server yet."

        long_list = ", ".join(f"word{n:03d}" for n in range(100))
        await configure(fake, max_steps="10", banned_words=long_list)
        await configure(fake, user=fake.owner, max_steps="12", banned_words="-word000", daily_quota="5")
        reset = await fake.slash("config reset", key="daily_quota", user=fake.admin)
        await reset.ack()
        assert (await reset.wait_for_reply()).content == "`daily_quota` is back to its default, no quota."

        ix = await fake.slash("config history", user=fake.admin)
        await ix.ack()
        lines = (await ix.wait_for_reply()).content.splitlines()
        assert lines[0] == "Changes, oldest first:"
        changes = [line.split("> ", 2)[2] for line in lines[1:]]  # after "<t:…:f> <@who>"
        assert changes[0] == "set `max_steps`: default (50) → 10"
        assert changes[1].startswith("set `banned_words`: default (none) → `word000`, `word001`, ")
        assert changes[2] == "set `max_steps`: 10 → 12"
        assert changes[3].startswith("set `banned_words`: `word000`, ") and "→ `word001`, `word002`" in changes[3]
        assert changes[4:] == ["set `daily_quota`: default (no quota) → 5", "reset `daily_quota` (was 5)"]
        assert all(len(line) < 200 for line in lines)  # long lists are cut short
        assert [
            f"<@{u.id}>" in line
            for u, line in zip(
                [fake.admin, fake.admin, fake.owner, fake.owner, fake.owner, fake.admin], lines[1:], strict=True
            )
        ] == [True] * 6

        embeds = await config_shown(fake, fake.admin)
        fields = [f for embed in embeds for f in embed["fields"]]
        names = [f["name"] for f in fields]
        assert names[:3] == ["channels", "admin_role", "banned_members"] and len(embeds) > 1
        assert set(KEYS) <= set(names) and names[-2].startswith("storage") and names[-1].startswith("models")
        for embed in embeds:  # each page is a message Discord takes
            size = (
                len(embed.get("title", ""))
                + len(embed.get("description", ""))
                + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
            )
            assert len(embed["fields"]) <= 25 and size <= 6000
        steps = next(f for f in fields if f["name"] == "max_steps")["value"]
        assert steps.startswith("**12**\ndefault: 50")
        quota = next(f for f in fields if f["name"] == "daily_quota")["value"]
        assert quota.startswith("**no quota** (default)")
        assert len((await bot.guild_configs.get(fake.guild.id))["banned_words"]) == 99


async def test_flagged_images_are_posted_as_spoilers(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        ix = await imagine(fake, "__nsfw__ before the checker is on")
        grid = await finished(ix)
        assert not grid.attachments[0].filename.startswith("SPOILER_") and not engine.requests[-1].safety_check

        await configure(fake, safety_checker="on")
        ix = await imagine(fake, "__nsfw__ a figure")
        grid = await finished(ix)
        assert engine.requests[-1].safety_check
        attachment = grid.attachments[0]
        assert attachment.filename.startswith("SPOILER_")
        assert "image" not in grid.embed  # an embed image would show it unblurred
        image = attachment.image().convert("RGB")
        assert image.getextrema() != ((0, 0), (0, 0), (0, 0))  # the picture, not a black square
        assert all(row.flagged for row in await bot.store.get_images(2))

        # U on a flagged tile is a spoiler too; a clean prompt is not
        up = await fake.click(grid, "dg:u:*:2")
        tile = await up.wait_for_followup(lambda m: m.attachments)
        assert tile.attachments[0].filename.startswith("SPOILER_")
        ix = await imagine(fake, "a kitten")
        grid = await finished(ix)
        assert not grid.attachments[0].filename.startswith("SPOILER_")
        assert grid.embed["image"]["url"] == f"attachment://{grid.attachments[0].filename}"


async def test_the_safety_checker_switch_is_refused_where_no_model_has_one(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.01, safety_checker=False)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        [reply] = await configure(fake, safety_checker="on")
        assert reply.startswith("`safety_checker`: no model on this bot has a safety checker")
        assert not (await bot.guild_configs.get(fake.guild.id))["safety_checker"]
        fields = [f for embed in await config_shown(fake, fake.admin) for f in embed["fields"]]
        field = next(f for f in fields if f["name"] == "safety_checker")["value"]
        assert field.startswith("**off** (default): no model here has a safety checker")
        # and a job is not told to check (which would only withhold its progress previews)
        await finished(await imagine(fake, "a kitten"))
        assert not engine.requests[-1].safety_check and engine.requests[-1].preview


async def test_the_safety_checker_switch_says_which_models_it_checks(fake_discord: FakeDiscord, tmp_path: Path):
    async with running_bot(fake_discord, tmp_path):
        [reply] = await configure(fake_discord, safety_checker="on")
        assert "It checks `fake`." in reply


async def test_a_servers_aliases_make_midjourneys_v_niji_and_raw_its_own(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake", "fake-xl"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine, models=["fake-xl"]):
        assert "isn't a parameter here" in await refusal(fake, "a lighthouse --niji")  # not defined yet
        assert "/config set aliases" in await refusal(fake, "a lighthouse --raw")
        (reply,) = await configure(fake, aliases="v 7 = --model fake-xl; niji = --model fake-xl --s 250; raw = --s 0")
        assert " is now " in reply and "`--v 7` = `--model fake-xl`" in reply

        final = await finished(await imagine(fake, "a lighthouse --v 7 --raw"))
        request = engine.requests[-1]
        assert request.model == "fake-xl" and request.guidance_scale == 12.0  # --stylize 0
        assert "--model fake-xl" in final.embed["description"] and "--v" not in final.embed["description"]
        assert await refusal(fake, "a lighthouse --v 5") == "`--v 5` isn't defined on this server: use `--v 7`."
        (bad,) = await configure(fake, aliases="+hd = --model nope")
        assert bad.startswith("`aliases`: `--hd` can't mean that: Unknown model `nope`")
        (bad,) = await configure(fake, aliases="+seed = --s 5")
        assert bad.startswith("`aliases`: `--seed` can't be an alias")
        (reply,) = await configure(fake, aliases="-raw")
        assert "--raw" not in reply.partition(" (was ")[0]
        assert "/config set aliases" in await refusal(fake, "a lighthouse --raw")
