"""The edit loop: the buttons under one picture (a U image or an upscale) that change it.

    Vary (Strong) | Vary (Subtle) | Vary (Region) | Upscale (Subtle) | Upscale (Creative)
    Zoom Out 2x   | Zoom Out 1.5x | Custom Zoom   | Make Square
    ⬅️ | ➡️ | ⬆️ | ⬇️ | ✉️

Zoom, Make Square and Pan draw a new 2x2 grid of the picture on a larger canvas; Vary (Region)
first shows the picture with numbered cells and a menu to pick the ones to redraw. Each is a job
kind in `bot.kinds`; what the member chose is recorded as the job's `EditSpec` (`bot.edits`).
Every button and the cell menu is a `DynamicItem` whose custom_id carries the job and image
(`dg:pan:right:42:3`), so it works on a message of any age, across restarts.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import discord

from bot import edits, jobs, kinds, policy
from bot.client import DreamGrid
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.image_files import encode_for_upload, load_rgb, region_overlay
from bot.kinds import JobKind
from bot.prompt import ParsedPrompt
from bot.rows import ImageRow, Job, NewJob
from bot.spec import EditSpec
from bot.ui import GuardedItem, GuardedModal, JobViews, RemixModal, start_child
from engine import canvas
from engine.canvas import Direction

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]
# Given the picture and the server's settings, what the member chose (may raise edits.EditError).
MakeEdit = Callable[[ImageRow, GuildConfig], EditSpec]

ZOOMS = {"2": 2.0, "1.5": 1.5}  # the Zoom Out buttons; custom_id word -> zoom


async def _picture(interaction: Interaction, job_id: int, index: int) -> tuple[Job, ImageRow]:
    """The finished picture a button works on: its job and its stored image's row."""
    bot = interaction.client
    job = await jobs.job_or_error(bot, interaction, job_id)
    if job.status != "done":
        raise UserError(f"Job {job.id} has no finished images to work from.")
    row = next((r for r in await bot.store.get_images(job.id) if r.idx == index), None)
    if row is None:
        raise UserError(f"Job {job.id} has no image #{index}.")
    return job, row


async def start_edit(
    interaction: Interaction,
    job_id: int,
    index: int,
    kind: JobKind,
    make_edit: MakeEdit,
    *,
    answer: Callable[[EditSpec], Awaitable[None]] | None = None,
) -> None:
    """Queue an edit of one picture, or first open the Remix modal when the member has Remix on.

    `answer` responds to the click before the job is queued; the job's message then follows.
    """
    bot = interaction.client

    async def build(config: GuildConfig) -> list[NewJob]:
        parent, row = await _picture(interaction, job_id, index)
        try:
            edit = make_edit(row, config)
        except edits.EditError as exc:
            raise UserError(str(exc)) from None
        profile = await bot.store.profile(interaction.user.id)
        if kind.remix and profile.settings.get("remix") and config["remix_allowed"]:
            modal = RemixModal(parent=parent, kind=kind, index=index, strength=kind.default_strength, edit=edit)
            await interaction.response.send_modal(modal)
            return []
        job = await jobs.child_job(
            bot, interaction, config, parent, kind=kind, index=index, strength=kind.default_strength, edit=edit
        )
        if answer is not None:
            await answer(edit)
        return [job]

    await jobs.submit(bot, interaction, build)


# -- Zoom Out, Custom Zoom, Make Square, Pan -------------------------------------------------


async def _size_multiple(interaction: Interaction, job_id: int) -> int:
    """What a new frame's sides are multiples of on the job's model: its family's (Flux: 16)."""
    bot = interaction.client
    return bot.engine.defaults((await jobs.job_or_error(bot, interaction, job_id)).model).size_multiple


class ZoomButton(GuardedItem[discord.ui.Button], template=r"dg:zoom:(?P<how>2|1\.5|custom):(?P<job>\d+):(?P<n>[1-4])"):
    """Zoom Out 2x / 1.5x: the picture shrunk into the middle of a new scene. Custom Zoom: a modal first."""

    def __init__(self, how: str, job_id: int, index: int) -> None:
        label = "Custom Zoom" if how == "custom" else f"Zoom Out {how}x"
        super().__init__(discord.ui.Button(label=label, emoji="🔍", custom_id=f"dg:zoom:{how}:{job_id}:{index}"))
        self.how, self.job_id, self.index = how, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(match["how"], int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        if self.how == "custom":
            await policy.gate(interaction.client, interaction)
            parent, row = await _picture(interaction, self.job_id, self.index)
            await interaction.response.send_modal(CustomZoomModal(parent=parent, index=self.index, row=row))
            return

        multiple = await _size_multiple(interaction, self.job_id)

        def zoom(row: ImageRow, config: GuildConfig) -> EditSpec:
            return edits.zoom(row.width, row.height, ZOOMS[self.how], multiple=multiple)

        await start_edit(interaction, self.job_id, self.index, kinds.ZOOM, zoom)


class MakeSquareButton(GuardedItem[discord.ui.Button], template=r"dg:square:(?P<job>\d+):(?P<n>[1-4])"):
    """Make Square: the short side is extended until the picture is square (same pixel count)."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(label="Make Square", emoji="🔲", custom_id=f"dg:square:{job_id}:{index}"))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        multiple = await _size_multiple(interaction, self.job_id)

        def square(row: ImageRow, config: GuildConfig) -> EditSpec:
            return edits.make_square(row.width, row.height, multiple=multiple)

        await start_edit(interaction, self.job_id, self.index, kinds.SQUARE, square)


class PanButton(
    GuardedItem[discord.ui.Button], template=r"dg:pan:(?P<direction>left|right|up|down):(?P<job>\d+):(?P<n>[1-4])"
):
    """⬅️ ➡️ ⬆️ ⬇️: the picture grows by half a tile that way, up to the server's size limit."""

    def __init__(self, direction: Direction, job_id: int, index: int) -> None:
        super().__init__(
            discord.ui.Button(emoji=edits.PAN_ARROWS[direction], custom_id=f"dg:pan:{direction.value}:{job_id}:{index}")
        )
        self.direction, self.job_id, self.index = direction, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(Direction(match["direction"]), int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        model = (await jobs.job_or_error(bot, interaction, self.job_id)).model
        tile_size, multiple = bot.engine.native_size(model), bot.engine.defaults(model).size_multiple

        def pan(row: ImageRow, config: GuildConfig) -> EditSpec:
            limit = policy.size_limit(config, tile_size)
            return edits.pan(
                row.width, row.height, self.direction, tile_size=tile_size, size_limit=limit, multiple=multiple
            )

        await start_edit(interaction, self.job_id, self.index, kinds.PAN, pan)


class CustomZoomModal(GuardedModal):
    """Custom Zoom: the prompt with `--zoom 1–2` and, optionally, a new `--ar` for the frame.

    Changing the prompt itself is Remix, which a server can turn off; zoom and aspect are not.
    """

    def __init__(self, *, parent: Job, index: int, row: ImageRow) -> None:
        super().__init__(title=f"Custom Zoom (job {parent.id}, image #{index})"[:45], timeout=600)
        self.parent, self.index, self.row = parent, index, row
        self.prompt: discord.ui.TextInput[CustomZoomModal] = discord.ui.TextInput(
            label="Prompt with --zoom 1–2 (and --ar to reshape)",
            style=discord.TextStyle.paragraph,
            default=f"{parent.prompt[:1500]} --zoom 2",
            max_length=1600,
            custom_id="prompt",
        )
        self.add_item(self.prompt)

    async def submit(self, interaction: Interaction) -> None:
        bot = interaction.client

        async def build(config: GuildConfig) -> list[NewJob]:
            try:
                text, zoom = edits.split_zoom(self.prompt.value)
            except edits.EditError as exc:
                raise UserError(str(exc)) from None
            profile = await bot.store.profile(interaction.user.id)
            before, after = (
                jobs.parse_members_prompt(bot, config, profile, t, with_suffix=False)[0]
                for t in (self.parent.prompt, text)
            )
            # A new --ar reshapes the frame; the same --ar as before (or none) keeps the picture's shape.
            aspect = after.aspect if after.aspect != before.aspect else None
            try:
                model = after.model if after.model in bot.engine.models else self.parent.model  # a Remix's --model
                multiple = bot.engine.defaults(model).size_multiple
                edit = edits.zoom(self.row.width, self.row.height, zoom or 1.0, aspect, multiple=multiple)
            except edits.EditError as exc:
                raise UserError(str(exc)) from None
            remixed = _apart_from_shape(after) != _apart_from_shape(before)
            job = await jobs.child_job(
                bot,
                interaction,
                config,
                self.parent,
                kind=kinds.ZOOM,
                index=self.index,
                strength=kinds.ZOOM.default_strength,
                prompt=text if remixed else None,  # child_job checks that Remix is allowed here
                edit=edit,
            )
            return [job]

        await jobs.submit(bot, interaction, build)


def _apart_from_shape(parsed: ParsedPrompt) -> tuple[object, ...]:
    """What a prompt asks for besides its aspect: a change here is a Remix."""
    values = parsed.parameter_values()
    values.pop("ar", None)
    return parsed.text, values


# -- Edit (by instruction) ----------------------------------------------------------------------


class EditButton(GuardedItem[discord.ui.Button], template=r"dg:edit:(?P<job>\d+):(?P<n>[1-4])"):
    """Edit: a sentence changes the picture ("make it night"), on models that edit by instruction."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(label="Edit", emoji="✏️", custom_id=f"dg:edit:{job_id}:{index}"))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        await start_child(interaction, self.job_id, kind=kinds.EDIT, index=self.index)


# -- Vary (Region) -----------------------------------------------------------------------------


class VaryRegionButton(GuardedItem[discord.ui.Button], template=r"dg:region:(?P<job>\d+):(?P<n>[1-4])"):
    """Vary (Region): show the picture with numbered cells, and a menu to pick the ones to redraw."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(label="Vary (Region)", emoji="🖌️", custom_id=f"dg:region:{job_id}:{index}"))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        await policy.gate(bot, interaction)
        job, row = await _picture(interaction, self.job_id, self.index)
        stored = await jobs.stored_or_redraw(bot, interaction, job, then="press Vary (Region) on the new grid.")
        if stored is None:
            return
        path = next(p for r, p in zip(*stored, strict=True) if r.idx == self.index)
        data, filename = await asyncio.to_thread(_overlay_upload, path, f"dreamgrid-{job.id}-{self.index}-cells")
        view = discord.ui.View(timeout=None)
        view.add_item(RegionSelect(job.id, self.index, options=region_options(row.width, row.height)))
        await interaction.response.send_message(
            f"Pick the cells of image #{self.index} (job {job.id}) to redraw; the rest stays exactly as it is.",
            file=discord.File(io.BytesIO(data), filename=filename),
            view=view,
            ephemeral=True,
        )


def _overlay_upload(path: Path, stem: str) -> tuple[bytes, str]:
    return encode_for_upload(region_overlay(load_rgb(path)), stem)


def region_options(width: int, height: int) -> list[discord.SelectOption]:
    """One option per cell, then the shortcuts (at most 25 in all, Discord's limit)."""
    count = len(canvas.cell_boxes(width, height))
    options = [discord.SelectOption(label=f"Cell {n}", value=str(n)) for n in range(1, count + 1)]
    options += [
        discord.SelectOption(label=name, value=name, description=f"cells {', '.join(map(str, sorted(cells)))}"[:100])
        for name, cells in canvas.region_shortcuts(width, height).items()
    ]
    return options[:25]


CELL_VALUE = re.compile(r"[0-9]{1,2}")  # ASCII digits only: str.isdigit() takes "²", which int() refuses


def chosen_cells(values: list[str], width: int, height: int) -> set[int]:
    """The cells a member picked: numbers, and shortcut names standing for several.

    Values come back from the member's client and can be forged: anything but a short number or
    a shortcut we offer reads as an out-of-date menu.
    """
    shortcuts = canvas.region_shortcuts(width, height)
    cells: set[int] = set()
    for value in values:
        if CELL_VALUE.fullmatch(value):
            cells.add(int(value))
        elif value in shortcuts:
            cells |= shortcuts[value]
        else:
            raise UserError("That menu is out of date: press Vary (Region) again.")
    return cells


class RegionSelect(GuardedItem[discord.ui.Select], template=r"dg:cells:(?P<job>\d+):(?P<n>[1-4])"):
    """The menu under the numbered picture; choosing starts the job (or opens Remix first)."""

    def __init__(self, job_id: int, index: int, *, options: list[discord.SelectOption]) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"dg:cells:{job_id}:{index}",
                placeholder="Cells to redraw",
                min_values=1,
                max_values=len(options),
                options=options,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        assert isinstance(item, discord.ui.Select)  # the template matches this class's menus only
        return cls(int(match["job"]), int(match["n"]), options=item.options)

    async def respond(self, interaction: Interaction) -> None:
        values = self.item.values

        def region(row: ImageRow, config: GuildConfig) -> EditSpec:
            return edits.region(row.width, row.height, chosen_cells(values, row.width, row.height))

        async def note(edit: EditSpec) -> None:
            # The picker becomes a note of what was chosen; the job's own message follows in the channel.
            content = f"Redrawing {edits.describe(edit)} of image #{self.index} (job {self.job_id})."
            await interaction.response.edit_message(content=content, attachments=[], view=None)

        await start_edit(interaction, self.job_id, self.index, kinds.REGION, region, answer=note)


BUTTONS = (ZoomButton, MakeSquareButton, PanButton, VaryRegionButton, RegionSelect, EditButton)


def install_views(views: JobViews) -> None:
    """The edit kinds' buttons under one picture (`JobViews.picture` places them by `bot.kinds`)."""
    views.picture_buttons[kinds.REGION.name] = lambda job, index, width, height: [VaryRegionButton(job.id, index)]
    views.picture_buttons[kinds.ZOOM.name] = lambda job, index, width, height: [
        ZoomButton(how, job.id, index) for how in (*ZOOMS, "custom")
    ]
    views.picture_buttons[kinds.SQUARE.name] = lambda job, index, width, height: (
        [MakeSquareButton(job.id, index)] if width != height else []  # a square picture is already square
    )
    views.picture_buttons[kinds.EDIT.name] = lambda job, index, width, height: [EditButton(job.id, index)]
    views.picture_buttons[kinds.PAN.name] = lambda job, index, width, height: [
        PanButton(direction, job.id, index) for direction in Direction
    ]


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(*BUTTONS)
    install_views(bot.views)
