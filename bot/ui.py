"""What the cogs share: the guarded bases of every button, select and modal, the registry of the
buttons under a job's messages, and the Remix modal that V, 🔄 and the edit buttons open.

discord.py runs a `DynamicItem`'s `interaction_check` and `callback` (and a modal's `on_submit`)
itself and only logs what they raise, so the member would see "This interaction failed".
`GuardedItem` and `GuardedModal` answer instead: a `UserError` becomes its one ephemeral line,
anything else is logged and apologised for.

No cog imports another: a cog registers the buttons it owns in `JobViews` (its `install_views`),
and `JobViews` reads from `bot.kinds` which of them go under a result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from bot import jobs, kinds
from bot.errors import UserError, reply_ephemeral
from bot.guild_config import GuildConfig
from bot.kinds import JobKind, ResultButtons
from bot.rows import Job, NewJob
from bot.spec import EditSpec

if TYPE_CHECKING:
    from bot.client import DreamGrid

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT", bound="discord.ui.Item[Any]")

APOLOGY = "Something went wrong on our side. It has been logged; please try again."


async def guarded(interaction: discord.Interaction[DreamGrid], work: Awaitable[object]) -> bool:
    """Run a component's work; False when it raised (the member has been answered)."""
    try:
        await work
    except UserError as exc:
        await reply_ephemeral(interaction, str(exc))
    except discord.HTTPException as exc:
        log.warning("component %s: Discord refused a request: %s", _custom_id(interaction), exc)
    except Exception:
        log.exception("component %s failed", _custom_id(interaction))
        await reply_ephemeral(interaction, APOLOGY)
    else:
        return True
    return False


def _custom_id(interaction: discord.Interaction[DreamGrid]) -> str:
    return str(interaction.data.get("custom_id", "?")) if interaction.data else "?"


class GuardedItem(discord.ui.DynamicItem[ItemT], template=r"(?!)"):
    """A `DynamicItem` whose `check` and `respond` may raise `UserError`.

    Subclasses set their own `template` (the base's matches nothing and is never registered),
    override `respond` for what a click does, and `check` to refuse members who may not use it.
    """

    async def check(self, interaction: discord.Interaction[DreamGrid]) -> None:
        """Raise `UserError` when this member may not use the component."""

    async def respond(self, interaction: discord.Interaction[DreamGrid]) -> None:
        raise NotImplementedError

    # Overrides narrow the interaction: discord.py types this hook for any client; ours is DreamGrid.
    async def interaction_check(self, interaction: discord.Interaction[DreamGrid]) -> bool:  # type: ignore[override]
        return await guarded(interaction, self.check(interaction))

    # Overrides narrow the interaction: discord.py types this hook for any client; ours is DreamGrid.
    async def callback(self, interaction: discord.Interaction[DreamGrid]) -> None:  # type: ignore[override]
        await guarded(interaction, self.respond(interaction))


class GuardedModal(discord.ui.Modal):
    """A modal whose `submit` may raise `UserError`: the member is answered, as `GuardedItem` does."""

    async def submit(self, interaction: discord.Interaction[DreamGrid]) -> None:
        raise NotImplementedError

    async def on_submit(self, interaction: discord.Interaction[DreamGrid]) -> None:  # type: ignore[override]
        await guarded(interaction, self.submit(interaction))


# -- the buttons under a job's messages --------------------------------------------------------

ResultView = Callable[[Job, frozenset[int]], discord.ui.View | None]  # a finished job, its U buttons used
PictureItems = Callable[[Job, int, int, int], Sequence[discord.ui.Item[Any]]]  # job, image number, width, height
TileAction = Callable[[JobKind, str, int, int], discord.ui.Item[Any]]  # kind, strength preset, job id, image


@dataclass(slots=True)
class JobViews:
    """The buttons under a job's messages. Which buttons a result carries is read from `bot.kinds`
    (`JobKind.buttons`, `picture_row`); how each is built is registered by the cog that owns it."""

    progress: Callable[[Job], discord.ui.View | None] = lambda job: None  # Cancel, while waiting or running
    results: dict[ResultButtons, ResultView] = field(default_factory=dict)  # under a grid, under prompts
    # Under one picture: a kind's own buttons (Zoom, Pan, …), by kind name; a kind with a `tile_button`
    # and no entry here gets `tile_action`'s button, one per strength.
    picture_buttons: dict[str, PictureItems] = field(default_factory=dict)
    tile_action: TileAction | None = None
    picture_extras: list[Callable[[Job, int], discord.ui.Item[Any]]] = field(default_factory=list)  # ✉️

    def result(self, job: Job, used: frozenset[int] = frozenset()) -> discord.ui.View | None:
        """The buttons the job's kind puts under its finished result; None under anything unfinished."""
        if job.status != "done":
            return None
        kind = kinds.get(job.kind)
        if kind.buttons is ResultButtons.PICTURE:
            render = job.spec.render
            return self.picture(job, 1, render.width * kind.scale, render.height * kind.scale)
        build = self.results.get(kind.buttons)
        return build(job, used) if build is not None else None

    def picture(self, job: Job, index: int, width: int, height: int) -> discord.ui.View:
        """Under one picture (a U image, an upscale): every kind with a `picture_row`, in registry
        order; a kind that makes the picture larger only while that still fits the server's limit."""
        view = discord.ui.View(timeout=None)
        limit = job.spec.delivery.size_limit
        for kind in kinds.KINDS.values():
            if kind.picture_row is None:
                continue
            if kind.scale > 1 and limit is not None and max(width, height) * kind.scale > limit:
                continue
            for item in self.picture_items(kind, job, index, width, height):
                item.row = kind.picture_row
                view.add_item(item)
        for extra in self.picture_extras:
            view.add_item(extra(job, index))
        return view

    def picture_items(
        self, kind: JobKind, job: Job, index: int, width: int, height: int
    ) -> Sequence[discord.ui.Item[Any]]:
        build = self.picture_buttons.get(kind.name)
        if build is not None:
            return build(job, index, width, height)
        if kind.tile_button is not None and self.tile_action is not None:
            return [self.tile_action(kind, preset, job.id, index) for preset in kind.strengths]
        # The cog that builds it failed to load (it logged why): the picture goes out without that button.
        log.warning("job kind %s has a picture_row but no button builder; it is left out", kind.name)
        return []


# -- starting a job from a click, with Remix ----------------------------------------------------


async def start_child(
    interaction: discord.Interaction[DreamGrid],
    parent_id: int,
    *,
    kind: JobKind,
    index: int | None,
    strength: float | None = None,
) -> None:
    """What V, 🔄, the tile buttons and the Apps menu do: queue a job, or first open the Remix modal."""
    bot = interaction.client

    async def build(config: GuildConfig) -> list[NewJob]:
        parent = await jobs.job_or_error(bot, interaction, parent_id)
        if kind.needs_finished_parent and parent.status != "done":
            raise UserError(f"Job {parent.id} has no finished images to work from.")
        if kind.asks_prompt:  # refuse before asking for words the model could not draw
            reason = bot.engine.supports(bot.settings.model_name(parent.model), kind.action)
            if reason is not None:
                raise UserError(f"{reason}.")
        profile = await bot.store.profile(interaction.user.id)
        if kind.asks_prompt or (kind.remix and profile.settings.get("remix") and config["remix_allowed"]):
            modal = RemixModal(parent=parent, kind=kind, index=index, strength=strength)
            await interaction.response.send_modal(modal)
            return []
        return [await jobs.child_job(bot, interaction, config, parent, kind=kind, index=index, strength=strength)]

    await jobs.submit(bot, interaction, build)


class RemixModal(GuardedModal):
    """Remix mode: edit the prompt before a variation, reroll or edit (Zoom, Pan, Vary (Region)…) runs."""

    def __init__(
        self,
        *,
        parent: Job,
        kind: JobKind,
        index: int | None,
        strength: float | None,
        edit: EditSpec | None = None,
    ) -> None:
        label = kind.label.strip(" -") if kind.asks_prompt else "Remix"
        label = f"{label} image #{index}" if index is not None else kind.name.title()
        super().__init__(title=f"{label} (job {parent.id})"[:45], timeout=600)
        self.parent, self.kind, self.index, self.strength, self.edit = parent, kind, index, strength, edit
        # An edit asks what to change ("make it night"); every other kind edits the prompt itself.
        instruction = kind.edits_by_instruction
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="What should change?" if instruction else "Prompt",
            style=discord.TextStyle.paragraph,
            default=None if instruction else parent.prompt[:1500],
            placeholder="make it night · remove the hat · paint it in watercolour" if instruction else None,
            max_length=1500,
            custom_id="prompt",
        )
        self.add_item(self.prompt)

    async def submit(self, interaction: discord.Interaction[DreamGrid]) -> None:
        bot = interaction.client

        async def build(config: GuildConfig) -> list[NewJob]:
            job = await jobs.child_job(
                bot,
                interaction,
                config,
                self.parent,
                kind=self.kind,
                index=self.index,
                strength=self.strength,
                prompt=self.prompt.value,
                edit=self.edit,
            )
            return [job]

        await jobs.submit(bot, interaction, build)
