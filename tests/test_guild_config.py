"""The /config key registry, the per-server cache, and the policy's pure parts."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot import kinds, policy
from bot.errors import UserError
from bot.guild_config import KEYS, ConfigError, GuildConfig, GuildConfigs
from bot.settings import Settings
from bot.spec import JobSpec, RenderSpec
from bot.store import Store


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, model="tiny", models=["big"], max_steps=40, max_running_per_user=3)


def parse(name: str, text: str, settings: Settings, current=None):
    return KEYS[name].parse(text, settings=settings, current=current)


def test_every_key_has_a_description_and_a_valid_default(settings):
    for key in KEYS.values():
        assert key.description and len(key.description) < 120
        assert key.effective(key.default_for(settings), settings) == key.default_for(settings)
        assert key.allowed(settings)


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("max_steps", "40", 40),
        ("max_steps", " 1 ", 1),
        ("daily_quota", "1,000", 1000),
        ("remix_allowed", "OFF", False),
        ("safety_checker", "yes", True),
        ("default_aspect", "1920:1080", "16:9"),
        ("default_model", "BIG", "big"),
        ("allowed_models", "tiny, big", ["tiny", "big"]),
        ("allowed_models", "all", []),
        ("banned_words", "Gore,  Blood  Bath, /a,b{1,3}/, gore", ["gore", "blood bath", "/a,b{1,3}/"]),
        ("banned_members", "<@123456789012345678>, 223456789012345678", [123456789012345678, 223456789012345678]),
        (
            "role_quotas",
            "<@&123456789012345678>: 50, 223456789012345678:0",
            {"123456789012345678": 50, "223456789012345678": 0},
        ),
        ("admin_role", "none", None),
    ],
)
def test_values_are_read_as_admins_type_them(settings, name, text, value):
    assert parse(name, text, settings) == value


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("max_steps", "41", "`max_steps`: 41 is out of range. It takes a whole number from 1 to 40."),
        (
            "max_running_per_user",
            "0",
            "`max_running_per_user`: 0 is out of range. It takes a whole number from 1 to 3.",
        ),
        ("max_image_size", "32", "`max_image_size`: 32 is out of range. It takes a whole number from 64 to 4096."),
        ("default_aspect", "0:1", "`default_aspect`: `0:1` is not a ratio."),
        (
            "allowed_models",
            "tiny, huge",
            "`allowed_models`: `huge` is not installed. It takes `all`, or a comma list"
            " of the installed models: `tiny`, `big`.",
        ),
        (
            "banned_words",
            "/(unclosed/",
            "`banned_words`: `/(unclosed/` can't be used: missing ): (unclosed",
        ),
        ("banned_words", "x" * 101, "is over 100 characters"),
        ("role_quotas", "<@&123456789012345678>", "needs a quota, like `@Patrons: 100`"),
        ("role_quotas", "<@&123456789012345678>: 20000", "20000 is out of range"),
        ("banned_members", "somebody", "I can't find the member `somebody`"),
    ],
)
def test_a_bad_value_names_what_is_allowed(settings, name, text, message):
    with pytest.raises(ConfigError) as caught:
        parse(name, text, settings)
    assert message in str(caught.value)
    assert isinstance(caught.value, UserError)  # answered ephemerally by the tree's on_error


def test_lists_take_plus_to_add_and_minus_to_remove(settings):
    words = parse("banned_words", "gore, blood", settings)
    words = parse("banned_words", "+ /gr[a]+/, gore", settings, current=words)
    assert words == ["gore", "blood", "/gr[a]+/"]
    assert parse("banned_words", "-gore", settings, current=words) == ["blood", "/gr[a]+/"]
    quotas = parse("role_quotas", "<@&123456789012345678>: 5", settings)
    quotas = parse("role_quotas", "+223456789012345678: 9", settings, current=quotas)
    assert quotas == {"123456789012345678": 5, "223456789012345678": 9}
    assert parse("role_quotas", "-<@&123456789012345678>: 0", settings, current=quotas) == {"223456789012345678": 9}
    with pytest.raises(ConfigError, match="the most is 100"):
        parse("banned_words", ", ".join(f"w{n}" for n in range(101)), settings)


def test_values_the_bot_no_longer_allows_fall_back(settings):
    config = GuildConfig(
        1, {"max_steps": 99, "default_model": "gone", "allowed_models": ["big", "gone"], "unknown_key": 1}, settings
    )
    assert config["max_steps"] == 40  # MAX_STEPS was lowered after the admin chose 99
    assert config["default_model"] == "tiny"
    assert config.allowed_models == ["big"]
    assert config.default_model == "big"  # the default model is no longer allowed here: the first allowed one


def test_banned_words_match_whole_words_in_any_case_and_patterns(settings):
    config = GuildConfig(1, {"banned_words": ["gore", "blood bath", "/n[s5]fw/"]}, settings)
    assert config.banned_match("A GORE scene") == "gore"
    assert config.banned_match("a Blood   Bath") == "blood bath"
    assert config.banned_match("so NS5FW") is None
    assert config.banned_match("so N5FW!") == "/n[s5]fw/"
    assert config.banned_match("a goretex jacket, gorgeous") is None


def test_the_highest_role_quota_wins(settings):
    config = GuildConfig(1, {"daily_quota": 5, "role_quotas": {"1": 10, "2": 50, "3": 0}}, settings)

    def member(*role_ids):
        return SimpleNamespace(roles=[SimpleNamespace(id=r) for r in role_ids])

    assert policy.daily_quota(config, member()) == 5
    assert policy.daily_quota(config, member(1)) == 10
    assert policy.daily_quota(config, member(1, 2)) == 50
    assert policy.daily_quota(config, member(1, 3)) is None  # 0: no quota
    assert policy.daily_quota(GuildConfig(1, {}, settings), member(1)) is None


def test_limits_cap_steps_and_size_and_ask_for_the_safety_checker(settings):
    config = GuildConfig(1, {"max_steps": 10, "max_image_size": 100, "safety_checker": True}, settings)
    spec = JobSpec(render=RenderSpec(prompt="x", steps=30, width=192, height=128))
    shaped = policy.apply_limits(kinds.IMAGINE, spec, config)
    render = shaped.render
    assert (render.steps, render.width, render.height, render.safety_check, shaped.delivery.spoiler_flagged) == (
        10,
        96,
        64,
        True,
        True,
    )
    assert spec.render.steps == 30  # the caller's spec is left alone
    with pytest.raises(UserError, match="384×256 image: this server allows up to 100 px"):
        policy.apply_limits(kinds.UPSCALE, spec, config)
    assert policy.fit(1000, 10, 64) == (64, 8)


def test_the_default_size_limit_follows_the_model_so_sdxl_upscales_a_3_2_tile(settings):
    config = GuildConfig(1, {}, settings)
    sdxl_tile = JobSpec(render=RenderSpec(prompt="x", width=1216, height=832))  # 3:2 at SDXL's 1024²
    upscaled = policy.apply_limits(kinds.UPSCALE, sdxl_tile, config, native=1024)
    assert (upscaled.render.width, upscaled.render.height) == (1216, 832)  # 2432 px wide: fine for SDXL
    with pytest.raises(UserError, match="2432×1664 image: this server allows up to 2048 px"):
        policy.apply_limits(kinds.UPSCALE, sdxl_tile, config, native=512)  # SD1.5's limit


async def test_changes_are_stored_recorded_in_order_and_seen_at_once(tmp_path: Path, settings):
    async with Store.open(tmp_path / "db.sqlite3") as store:
        configs = GuildConfigs(store, settings)
        before = await configs.get(7)
        assert before["max_steps"] == 40 and not before.is_set("max_steps")
        assert await configs.get(7) is before  # cached
        await configs.set(7, "max_steps", 12, by=100)
        await configs.set(7, "max_steps", 8, by=101)
        await configs.set(7, "banned_words", ["x"], by=100)
        assert (await configs.get(7))["max_steps"] == 8
        assert await configs.set(7, "max_steps", None, by=100) == 8  # reset
        after = await configs.get(7)
        assert after["max_steps"] == 40 and not after.is_set("max_steps") and after["banned_words"] == ["x"]
        assert (await configs.get(8))["banned_words"] == []  # other servers are untouched
        history = await configs.history(7)
        assert [(c.key, c.old_value, c.new_value, c.changed_by) for c in history] == [
            ("max_steps", None, 12, 100),
            ("max_steps", 12, 8, 101),
            ("banned_words", None, ["x"], 100),
            ("max_steps", 8, None, 100),
        ]
        assert [c.key for c in await configs.history(7, limit=2)] == ["banned_words", "max_steps"]  # the latest


def test_aliases_are_checked_parameters_stored_written_out(settings):
    aliases = parse("aliases", "--V 7 = --model big --s 50; raw = --stylize 0", settings)
    assert aliases == {"v 7": "--stylize 50 --model big", "raw": "--stylize 0"}
    assert parse("aliases", "+version 6 = --model tiny", settings, current=aliases)["v 6"] == "--model tiny"
    assert parse("aliases", "-v 7; raw", settings, current=aliases) == {}
    assert parse("aliases", "none", settings, current=aliases) == {}
    assert KEYS["aliases"].show(aliases, settings) == "`--v 7` = `--stylize 50 --model big`; `--raw` = `--stylize 0`"
    for text, said in [
        ("raw", "needs `=`"),
        ("ar = --s 0", "`--ar` can't be an alias"),
        ("raw = --stylize 5000", "`--raw` can't mean that: `--stylize 5000` is out of range"),
        ("raw = a cat", "must mean parameters"),
        ("raw = --repeat 3", "can't mean that"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(said)):
            parse("aliases", text, settings)
