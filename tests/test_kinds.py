"""The job-kind registry: every kind is complete, and no other module branches on a kind's name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bot import kinds
from bot.cogs import describe, edit, images, imagine, queue
from bot.cogs.account import SettingsButton, SettingsSelect
from bot.cogs.imagine import BUTTONS, TileActionButton
from bot.cogs.queue import CancelButton
from bot.kinds import JobKind, Output, ResultButtons, Source
from bot.rows import Job
from bot.spec import DeliveryOptions, JobSpec, RenderSpec
from bot.ui import GuardedItem, JobViews
from engine.fake import FakeEngine
from engine.requests import Action

ROOT = Path(__file__).resolve().parents[1]


def installed_views() -> JobViews:
    """The views as the bot has them once every cog is loaded."""
    views = JobViews()
    for cog in (imagine, edit, describe, queue, images):
        cog.install_views(views)
    return views


def finished(kind: JobKind) -> Job:
    return Job(
        id=7, kind=kind.name, parent_id=None, parent_index=None, user_id=1, guild_id=None, channel_id=2,
        prompt="a fox", spec=JobSpec(render=RenderSpec(prompt="a fox")), seeds=kind.seeds(1), model="m",
        status="done", progress=1.0, error=None, attempts=1, gpu_seconds=0.0, application_id=None,
        interaction_token=None, token_expires_at=None, message_id=None, result_channel_id=None,
        result_message_id=None, delivered_at=None, created_at="", started_at=None, finished_at=None,
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(kinds.KINDS.values()), ids=list(kinds.KINDS))
def test_every_kind_has_a_label_an_action_and_a_button_set(kind: JobKind):
    assert isinstance(kind.label, str) and kinds.get(kind.name) is kind
    assert kind.action in Action
    assert kind.buttons in ResultButtons
    view = installed_views().result(finished(kind))
    ids = [item.custom_id for item in view.children] if view else []
    if kind.buttons is ResultButtons.GRID:
        assert {"dg:u:7:1", "dg:v:7:4", "dg:reroll:7", "dg:dm:7"} <= set(ids)
    elif kind.buttons is ResultButtons.PROMPTS:
        assert {"dg:desc:7:again", "dg:desc:7:all"} <= set(ids)
    elif kind.buttons is ResultButtons.PICTURE:  # one image, and the edit loop under it
        assert {"dg:vary:strong:7:1", "dg:region:7:1", "dg:zoom:2:7:1", "dg:pan:left:7:1", "dg:dm:7:1"} <= set(ids)
        assert {"dg:anim:low:7:1", "dg:anim:high:7:1"} <= set(ids)  # Animate (Low motion) / (High motion)
    elif kind.buttons is ResultButtons.CLIP:  # under a clip: Extend
        assert ids == ["dg:extend:7"]
    else:
        assert ids == []
    # A kind that redraws a picture needs to know how strongly (an image prompt: the member's --iw);
    # one that only reads text, or only reads pictures (describe, tune), does not.
    redraws_a_picture = kind.source is not Source.NONE and kind.output not in (Output.TEXT, Output.STYLE)
    assert bool(kind.strengths) == (redraws_a_picture and not kind.steered_by_weight and not kind.edits_by_instruction)
    assert kinds.get(kind.rerolls_as).buttons is ResultButtons.GRID
    assert len(kind.seeds()) == max(kind.image_count, 1)


@pytest.mark.parametrize(
    "kind", [k for k in kinds.KINDS.values() if k.output not in (Output.TEXT, Output.STYLE)], ids=lambda k: k.name
)
async def test_the_engine_makes_what_each_kind_promises(kind: JobKind):
    engine = FakeEngine()  # the bot's tests run on it; its sizes follow the real engine's
    spec = RenderSpec(prompt="a fox", width=64, height=48, strength=kind.default_strength)
    init = None
    if kind.source is not Source.NONE:
        from PIL import Image

        init = Image.new("RGB", (64, 48))
    result = await engine.render(spec.request(action=kind.action, seeds=kind.seeds(3), model=None, init_image=init))
    assert len(result.images) == kind.image_count
    assert result.images[0].size == (64 * kind.scale, 48 * kind.scale)


def test_the_real_engine_implements_every_kinds_action():
    core = pytest.importorskip("engine.core")
    renders = {kind.action for kind in kinds.KINDS.values() if kind.output not in (Output.TEXT, Output.STYLE)}
    assert renders <= set(core._ACTIONS)
    # A style is trained, not rendered.
    assert all(callable(core.DiffusersEngine.tune) for kind in kinds.KINDS.values() if kind.output is Output.STYLE)
    # Words come from the describer, not a render.
    assert all(callable(core.DiffusersEngine.describe) for kind in kinds.KINDS.values() if kind.output is Output.TEXT)


def test_the_buttons_under_a_picture_come_from_the_registry_and_old_ids_still_match():
    views = installed_views()
    picture = [item.custom_id for item in views.picture(finished(kinds.UPSCALE), 2, 96, 64).children]
    ids = [custom_id for custom_id in picture if custom_id.startswith(("dg:vary:", "dg:up:"))]
    assert ids == ["dg:vary:strong:7:2", "dg:vary:subtle:7:2", "dg:up:subtle:7:2", "dg:up:creative:7:2"]
    template = TileActionButton.__discord_ui_compiled_template__
    # Buttons on messages posted by earlier versions keep working.
    for old in ("dg:vary:strong:1:4", "dg:up:subtle:12:1", "dg:up:creative:3:3"):
        assert template.fullmatch(old)
    # Every custom_id that matches a template matches exactly one.
    for custom_id in [*ids, *picture, "dg:u:7:1", "dg:v:7:1", "dg:reroll:7", "dg:dm:7", "dg:cells:7:2"]:
        matching = [b for b in (*BUTTONS, *edit.BUTTONS) if b.__discord_ui_compiled_template__.fullmatch(custom_id)]
        assert len(matching) == 1, custom_id
        assert len(custom_id) <= 100


def test_registering_a_name_or_tile_word_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        kinds.register(kinds.JobKind(name="imagine", action=Action.IMAGINE, label=""))
    with pytest.raises(LookupError, match="unknown job kind 'teleport'"):
        kinds.get("teleport")
    assert "teleport" not in kinds.KINDS


KIND_NAMES = "|".join(map(re.escape, kinds.KINDS))
# `kind == "upscale"`, `job.kind in ("imagine", …)`, `"reroll" != kind`, `kind="variation"`, `KIND_X = {"imagine": …`
COMPARED = re.compile(
    rf"""kind\w*\s*(==|!=|\bin\b|\bnot in\b|=)\s*[\(\[{{]?\s*["']({KIND_NAMES})["']"""
    rf"""|["']({KIND_NAMES})["']\s*(==|!=)\s*[\w.]*kind"""
    rf"""|^\s*["']({KIND_NAMES})["']\s*:""",
    re.MULTILINE,
)


def test_no_module_outside_the_registry_branches_on_a_kinds_name():
    offenders = []
    for path in sorted(
        [*(ROOT / "bot").rglob("*.py"), *(ROOT / "engine").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    ):
        if path == ROOT / "bot" / "kinds.py":
            continue
        for match in COMPARED.finditer(path.read_text(encoding="utf-8")):
            line = path.read_text(encoding="utf-8").count("\n", 0, match.start()) + 1
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0).strip()}")
    assert offenders == []
    # The pattern does catch what it is for.
    assert COMPARED.search('if job.kind == "upscale":') and COMPARED.search('kind not in ("imagine", "reroll")')


def test_every_button_and_select_answers_through_the_guarded_base():
    for item in (*BUTTONS, *edit.BUTTONS, SettingsSelect, SettingsButton, CancelButton):
        assert issubclass(item, GuardedItem), item.__name__
        # Overriding these would skip the base's error handling.
        assert "callback" not in vars(item) and "interaction_check" not in vars(item), item.__name__


def test_every_kind_offered_under_a_picture_has_its_button_there_by_its_entry():
    """A kind with a `picture_row` shows under a picture, in its row, with no other change needed."""
    views = installed_views()
    job = finished(kinds.UPSCALE)
    view = views.picture(job, 1, 96, 64)
    for kind in kinds.KINDS.values():
        if kind.picture_row is None:
            continue
        items = views.picture_items(kind, job, 1, 96, 64)
        assert items, kind.name
        assert all(item in view.children and item.row == kind.picture_row for item in view.children if item in items)
    # One with neither a tile button nor a registered builder (its cog failed to load) is left out.
    unbuilt = dataclasses.replace(kinds.ZOOM, name="unbuilt")
    assert views.picture_items(unbuilt, job, 1, 96, 64) == []


def test_upscale_is_offered_under_a_picture_only_while_twice_it_fits():
    views = installed_views()
    job = finished(kinds.UPSCALE)
    job = dataclasses.replace(job, spec=dataclasses.replace(job.spec, delivery=DeliveryOptions(size_limit=128)))
    labels = [getattr(item.item, "label", None) for item in views.picture(job, 1, 64, 64).children]
    assert "Upscale (Subtle)" in labels
    labels = [getattr(item.item, "label", None) for item in views.picture(job, 1, 96, 64).children]
    assert "Upscale (Subtle)" not in labels and "Vary (Strong)" in labels
