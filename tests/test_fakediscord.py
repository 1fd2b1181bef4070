"""The fake Discord, driven by the real discord.py client in-process."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys

import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakediscord import FakeDiscord


def png(color=(200, 30, 30), size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class UpscaleButton(discord.ui.DynamicItem[discord.ui.Button], template=r"t:u:(?P<job>\d+):(?P<i>[1-4])"):
    def __init__(self, job: int, index: int) -> None:
        super().__init__(discord.ui.Button(label=f"U{index}", custom_id=f"t:u:{job}:{index}"))
        self.job, self.index = job, index

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["job"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"upscaling job {self.job} tile {self.index}", ephemeral=True)


class RemixModal(discord.ui.Modal, title="Remix"):
    prompt = discord.ui.TextInput(label="New prompt", custom_id="remix:prompt", default="old prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"remixing: {self.prompt.value}")


class TinyBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.release = asyncio.Event()
        self.errors: list[Exception] = []

    async def setup_hook(self) -> None:
        self.add_dynamic_items(UpscaleButton)

        @self.tree.command(description="Draw a grid")
        @app_commands.describe(prompt="what to draw")
        async def imagine(interaction: discord.Interaction, prompt: str, seed: int = 0, style: str = "raw") -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(content=f"**{prompt}** (50%)")
            view = discord.ui.View(timeout=None)
            for i in range(1, 5):
                view.add_item(UpscaleButton(seed, i))
            embed = discord.Embed(title=prompt, description=f"seed {seed}, style {style}")
            embed.set_image(url="attachment://grid.png")
            await interaction.edit_original_response(
                content=None, embed=embed, attachments=[discord.File(io.BytesIO(png()), "grid.png")], view=view
            )

        @imagine.autocomplete("style")
        async def style_complete(interaction: discord.Interaction, current: str):
            return [app_commands.Choice(name=s, value=s) for s in ("raw", "vivid", "retro") if s.startswith(current)]

        @self.tree.command(description="Edit a prompt")
        async def remix(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(RemixModal())

        @self.tree.command(description="Wait, then edit")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            await self.release.wait()
            try:
                await interaction.edit_original_response(content="done")
            except discord.HTTPException as e:
                self.errors.append(e)

        @self.tree.command(description="Who am I here?")
        async def whoami(interaction: discord.Interaction) -> None:
            where = "dm" if interaction.guild is None else interaction.guild.name
            await interaction.response.send_message(
                f"{interaction.user.name} in {where}, manage_guild={interaction.permissions.manage_guild}, "
                f"limit={interaction.filesize_limit}",
                ephemeral=True,
            )

        @self.tree.command(description="A counter button")
        async def counter(interaction: discord.Interaction) -> None:
            view = discord.ui.View()
            button = discord.ui.Button(label="+1", custom_id="counter:plus")

            async def plus(ix: discord.Interaction) -> None:
                await ix.response.edit_message(content=str(int(ix.message.content) + 1))

            button.callback = plus
            view.add_item(button)
            await interaction.response.send_message("0", view=view)

        @self.tree.command(description="Think, then answer with follow-ups")
        @app_commands.guild_only()
        async def post(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.followup.send("grid", file=discord.File(io.BytesIO(png()), "grid.png"))
            await interaction.followup.send("and one more", ephemeral=True)

        @self.tree.command(description="Pick a style")
        async def pick(interaction: discord.Interaction) -> None:
            view = discord.ui.View()
            select = discord.ui.Select(
                custom_id="pick:style",
                options=[discord.SelectOption(label=s) for s in ("raw", "vivid", "retro")],
                max_values=2,
            )

            async def picked(ix: discord.Interaction) -> None:
                await ix.response.send_message(",".join(select.values), ephemeral=True)

            select.callback = picked
            view.add_item(select)
            await interaction.response.send_message("pick one", view=view)

        @self.tree.command(description="Measure a picture")
        async def measure(interaction: discord.Interaction, image: discord.Attachment) -> None:
            data = await image.read()
            with Image.open(io.BytesIO(data)) as picture:
                await interaction.response.send_message(
                    f"{image.filename}: declared {image.size} bytes, read {len(data)}, {picture.size}", ephemeral=True
                )

        @self.tree.context_menu(name="Count pictures")
        async def count_pictures(interaction: discord.Interaction, message: discord.Message) -> None:
            sizes = [len(await a.read()) for a in message.attachments]
            await interaction.response.send_message(
                f"{message.author.name}: {message.content!r}, files {sizes}", ephemeral=True
            )

        @self.tree.command(description="Always fails")
        async def broken(interaction: discord.Interaction) -> None:
            raise RuntimeError("boom")

        await self.tree.sync()


@pytest.fixture
async def bot(fake_discord: FakeDiscord):
    async with fake_discord.running(TinyBot()) as running:
        yield running


async def test_login_ready_and_command_sync(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    assert bot.user.id == fake_discord.bot_user.id
    guild = bot.get_guild(fake_discord.guild.id)
    assert guild is not None and guild.get_channel(fake_discord.channel.id) is not None
    names = {c["name"] for c in fake_discord.commands.values()}
    assert names == {
        "imagine",
        "remix",
        "slow",
        "whoami",
        "counter",
        "post",
        "pick",
        "broken",
        "measure",
        "Count pictures",
    }
    assert fake_discord.requests_to("PUT", "/applications/{application_id}/commands")


async def test_slash_defer_edit_file_then_click(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.slash("imagine", prompt="a red square", seed=7)
    cb = await ix.ack()
    assert cb.type == 5 and cb.elapsed < 3

    msg = await ix.wait_for_edit(lambda m: m.attachments)
    assert [h["content"] for h in msg.history] == ["", "**a red square** (50%)"]  # thinking, progress
    assert msg.embed["title"] == "a red square" and msg.embed["image"]["url"] == "attachment://grid.png"
    assert msg.attachments[0].image().size == (64, 64)
    assert msg.labels == ["U1", "U2", "U3", "U4"] and not msg.ephemeral and not msg.loading

    click = await fake_discord.click(msg, label="U2", user=fake_discord.bob)
    reply = await click.wait_for_reply()
    assert click.ephemeral and reply.content == "upscaling job 7 tile 2"


async def test_attachment_is_downloadable_by_url(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.slash("imagine", prompt="x")
    msg = await ix.wait_for_edit(lambda m: m.attachments)
    fetched = await discord.Attachment(data=msg.attachments[0].to_payload(), state=bot._connection).read()
    assert fetched == msg.attachments[0].data


async def test_autocomplete_choices(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.autocomplete("imagine", "style", prompt="p", style="r")
    assert [c["value"] for c in await ix.wait_for_choices()] == ["raw", "retro"]


async def test_modal_round_trip(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.slash("remix")
    assert (await ix.ack()).type == 9
    assert ix.modal["title"] == "Remix"
    submitted = await fake_discord.submit_modal(ix, {"remix:prompt": "a blue circle"})
    reply = await submitted.wait_for_reply()
    assert reply.content == "remixing: a blue circle" and not reply.ephemeral


async def test_expired_token_fails_with_50027(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.slash("slow")
    assert (await ix.ack()).ephemeral
    fake_discord.expire_tokens()
    bot.release.set()
    await fake_discord.wait_for(lambda: bot.errors, timeout=5, what="the failed edit")
    assert bot.errors[0].code == 50027 and bot.errors[0].status == 401


async def test_bad_components_are_violations(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=fake_discord.channel.id)
    rows = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": f"r{i}"}]} for i in range(6)]
    with fake_discord.expect_violations("6 action rows") as caught, pytest.raises(discord.HTTPException) as err:
        await bot.http.request(route, json={"components": rows})
    assert len(caught) == 1
    assert (err.value.status, err.value.code) == (400, 50035)  # refused as Discord does: nothing posted
    assert not fake_discord.channel_messages()
    long_id = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "a" * 101}]}]
    with (
        fake_discord.expect_violations(r"custom_id .* 101 characters", "spec: .*custom_id.*too long"),
        pytest.raises(discord.HTTPException),
    ):
        await bot.http.request(route, json={"components": long_id})


async def test_a_body_over_discords_limits_is_answered_400_and_not_applied(
    fake_discord: FakeDiscord, bot: TinyBot
) -> None:
    channel = bot.get_channel(fake_discord.channel.id)
    sent = await channel.send("short")
    with fake_discord.expect_violations("content is 2001 characters"), pytest.raises(discord.HTTPException) as err:
        await sent.edit(content="x" * 2001)
    assert err.value.status == 400
    assert fake_discord.messages[sent.id].content == "short"


async def test_an_outage_answers_5xx_for_a_stretch_and_discord_py_retries(
    fake_discord: FakeDiscord, bot: TinyBot
) -> None:
    route = "/channels/{channel_id}/messages"
    channel = bot.get_channel(fake_discord.channel.id)
    outage = fake_discord.fail_requests(503, method="POST", route=route, count=2)
    for _ in range(2):
        with pytest.raises(discord.DiscordServerError):  # discord.py retries 500/502/504, not 503
            await channel.send("lost")
    await channel.send("one")
    assert outage.over and len(outage.hits) == 2
    outage = fake_discord.fail_requests(502, method="POST", route=route, seconds=0.5)
    await channel.send("two")  # discord.py waits 1 s after a 502 and tries again
    assert outage.hits
    assert [m.content for m in fake_discord.channel_messages()] == ["one", "two"]


async def test_an_answer_lost_after_applying_and_a_nonce_retry_posts_once(
    fake_discord: FakeDiscord, bot: TinyBot
) -> None:
    outage = fake_discord.fail_requests(
        502, method="POST", route="/channels/{channel_id}/messages", count=1, after_applying=True
    )
    channel = bot.get_channel(fake_discord.channel.id)
    sent = await channel.send("once", nonce="job-1")  # 502 after posting; discord.py retries with the nonce
    assert outage.over
    assert [m.content for m in fake_discord.channel_messages()] == ["once"]
    again = await channel.send("once more", nonce="job-1")
    assert again.id == sent.id and len(fake_discord.channel_messages()) == 1
    await channel.send("no nonce")
    assert len(fake_discord.channel_messages()) == 2


async def test_a_429_storm_is_waited_out(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    outage = fake_discord.fail_requests(429, method="POST", route="/channels/{channel_id}/messages", count=3)
    await bot.get_channel(fake_discord.channel.id).send("after the storm")
    assert len(outage.hits) == 3
    assert [m.content for m in fake_discord.channel_messages()] == ["after the storm"]


async def test_spec_catches_wrong_type(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=fake_discord.channel.id)
    with fake_discord.expect_violations(r"spec: content: 5 is not of type") as caught:
        await bot.http.request(route, json={"content": 5})
    assert caught[0].request.route == "/channels/{channel_id}/messages"


async def test_second_initial_response_is_40060(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.slash("remix")
    await ix.ack()
    route = discord.http.Route("POST", "/interactions/{i}/{t}/callback", i=ix.id, t=ix.token)
    with fake_discord.expect_violations("responded to twice"), pytest.raises(discord.HTTPException) as err:
        await bot.http.request(route, json={"type": 4, "data": {"content": "again"}})
    assert err.value.code == 40060


async def test_unanswered_interaction_is_reported(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.click(await _post_with_unknown_button(fake_discord, bot), "nobody:handles:this")
    with pytest.raises(AssertionError, match="not acknowledged within 0.3s"):
        await ix.ack(timeout=0.3)
    with fake_discord.expect_violations("never acknowledged"):
        fake_discord.check_interactions_acknowledged()


async def _post_with_unknown_button(fake: FakeDiscord, bot: TinyBot):
    channel = bot.get_channel(fake.channel.id)
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="?", custom_id="nobody:handles:this"))
    sent = await channel.send("orphan", view=view)
    return fake.messages[sent.id]


async def test_rate_limit_answers_429_and_discord_py_retries(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake_discord.rate_limit(1, per=0.3, method="POST", route="/channels/{channel_id}/messages", announce=False)
    channel = bot.get_channel(fake_discord.channel.id)
    await channel.send("one")
    await channel.send("two")
    assert len(fake_discord.rate_limited) == 1
    assert [m.content for m in fake_discord.channel_messages()] == ["one", "two"]


async def test_dm_and_wait_for_message(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    user = await bot.fetch_user(fake_discord.alice.id)
    await user.send("your grid is ready", file=discord.File(io.BytesIO(png()), "g.png"))
    msg = await fake_discord.wait_for_message(fake_discord.dm(fake_discord.alice), lambda m: "ready" in m.content)
    assert msg.attachments[0].filename == "g.png"


async def test_member_permissions_and_dm(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    admin = await (await fake_discord.slash("whoami", user=fake_discord.admin)).wait_for_reply()
    alice = await (await fake_discord.slash("whoami")).wait_for_reply()
    assert admin.content == "admin in Dream Guild, manage_guild=True, limit=10485760" and admin.ephemeral
    assert alice.content.startswith("alice in Dream Guild, manage_guild=False")
    dm = await fake_discord.slash("whoami", channel=fake_discord.dm(fake_discord.bob), user=fake_discord.bob)
    assert (await dm.wait_for_reply()).content.startswith("bob in dm")


async def test_button_edits_its_message(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    msg = await (await fake_discord.slash("counter")).wait_for_reply()
    for _ in range(2):
        ix = await fake_discord.click(msg, "counter:plus")
        assert (await ix.ack()).type == 7
    assert msg.content == "2" and msg.edits == 2


BOT_SCRIPT = """
import discord
from tests.fakediscord import point_discord_py_at

point_discord_py_at()  # from DISCORD_API_BASE / DISCORD_GATEWAY_URL
import os
discord.Client(intents=discord.Intents.default()).run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""


async def test_subprocess_bot_connects_via_env_and_can_be_killed(fake_discord: FakeDiscord) -> None:
    env = {**os.environ, **fake_discord.env(), "PYTHONPATH": os.getcwd()}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", BOT_SCRIPT, env=env)
    try:
        await fake_discord.wait_until_ready(timeout=15)
        assert fake_discord.identifies == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    await fake_discord.wait_until_disconnected()


async def test_first_followup_replaces_thinking_message(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    ix = await fake_discord.slash("post")
    second = await ix.wait_for_followup()
    assert ix.original.content == "grid" and ix.original.attachments[0].filename == "grid.png"
    assert second.content == "and one more" and second.ephemeral
    assert [m.content for m in fake_discord.channel_messages()] == ["grid"]  # ephemeral ones are hidden
    with pytest.raises(AssertionError, match="would not offer /post in a DM"):
        await fake_discord.slash("post", channel=fake_discord.dm(fake_discord.alice))


async def test_missing_permission_is_403(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    fake_discord.set_bot_permissions(discord.Permissions(view_channel=True, send_messages=True).value)
    channel = bot.get_channel(fake_discord.channel.id)
    with pytest.raises(discord.Forbidden) as err:
        await channel.send(file=discord.File(io.BytesIO(png()), "g.png"))
    assert err.value.code == 50013


async def test_unhandled_error_in_a_command_is_a_violation(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    pattern = "bot-error: Ignoring exception in command 'broken'.*RuntimeError: boom"
    with fake_discord.expect_violations(pattern) as caught:
        ix = await fake_discord.slash("broken")
        await fake_discord.wait_for(lambda: caught, timeout=3, what="the error log")
    ix.expire()  # an expired interaction is not reported as unacknowledged


async def test_select_menu_values(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    msg = await (await fake_discord.slash("pick")).wait_for_reply()
    ix = await fake_discord.select(msg, "pick:style", ["vivid", "retro"])
    assert (await ix.wait_for_reply()).content == "vivid,retro"


async def test_gateway_drop_resumes(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    await fake_discord.drop_gateway()
    await fake_discord.wait_for(lambda: fake_discord.resumes and fake_discord.connected, timeout=10, what="RESUME")
    assert fake_discord.identifies == 1
    ix = await fake_discord.slash("remix")
    assert (await ix.ack()).type == 9


async def test_attachment_option_is_resolved_and_served_from_the_cdn(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    upload = fake_discord.upload("cat.png", png(size=(40, 30)))
    ix = await fake_discord.slash("measure", image=upload)
    reply = await ix.wait_for_reply()
    assert reply.content == f"cat.png: declared {len(upload.data)} bytes, read {len(upload.data)}, (40, 30)"
    assert fake_discord.cdn_downloads == [upload]


async def test_declared_size_can_differ_from_the_bytes(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    upload = fake_discord.upload("cat.png", png(), declared_size=1 << 30)
    reply = await (await fake_discord.slash("measure", image=upload)).wait_for_reply()
    assert f"declared {1 << 30} bytes, read {len(upload.data)}" in reply.content


async def test_message_context_menu_on_a_members_post(fake_discord: FakeDiscord, bot: TinyBot) -> None:
    post = fake_discord.post("look", files=[("a.png", png()), ("b.png", png(size=(8, 8)))], user=fake_discord.bob)
    ix = await fake_discord.context_menu("Count pictures", post)
    reply = await ix.wait_for_reply()
    assert reply.content == f"bob: 'look', files {[len(a.data) for a in post.attachments]}"
    command = fake_discord.find_command("Count pictures", type=3)
    assert command is not None and command["type"] == 3
