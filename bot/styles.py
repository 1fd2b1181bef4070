"""`--sref`: turning what a member typed into the style a job records.

A prompt's `--sref` words (`bot.prompt` checked their form) are resolved here, once, when the job is
made, so that 🔄, /show and a replay draw the same style again without asking Discord for anything:

- `random` becomes a fresh style code, written into the job's prompt in its place (the member sees
  the code, and typing it again gives the same style: `engine.style.palette`);
- a style code is kept as it is (`RenderSpec.style_codes`);
- a moodboard (`mb:NAME`, `/moodboard`) stands for all its pictures;
- a job's tile (`12:3`) and a picture's link (a Discord attachment, read through `bot.member_pictures`
  as image prompts are) become our stored copies (`JobSpec.style_inputs`), as CDN links expire and
  old results may be pruned.

Every refusal is a `UserError` with one short line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import discord

from bot import member_pictures
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.prompt import ParsedPrompt
from bot.spec import InputImage
from engine import style
from engine.params import MOODBOARD_PREFIX, OWN_PROFILE
from engine.requests import Engine, Feature, ImagePromptMethod

if TYPE_CHECKING:
    from bot.client import DreamGrid


def draw_codes(parsed: ParsedPrompt, draw: Callable[[], int] = style.random_code) -> ParsedPrompt:
    """`parsed` with each `--sref random` replaced by a fresh code, and its prompt written out with them."""
    if "random" not in parsed.style_refs:
        return parsed
    refs = tuple(str(draw()) if ref == "random" else ref for ref in parsed.style_refs)
    drawn = dataclasses.replace(parsed, style_refs=refs)
    return dataclasses.replace(drawn, raw=drawn.to_text())


def check_style_options(config: GuildConfig, parsed_prompts: Sequence[ParsedPrompt]) -> None:
    """The server's switches and limits for --sref and --p, and --sw only with a style to weigh."""
    limit = config["max_style_references"]
    for parsed in parsed_prompts:
        if parsed.object_weight is not None and parsed.object_ref is None:
            raise UserError("`--ow` sets how strongly an `--oref` subject steers: add one with `--oref`.")
        if parsed.style_weight is not None and not parsed.style_refs and parsed.profile is None:
            raise UserError("`--sw` sets how strongly a style reference steers: add one with `--sref` or `--p`.")
        if parsed.profile is not None and config["profile_pictures"] == 0:
            raise UserError("Profiles (`--p`) are turned off on this server.")
        if parsed.style_refs and limit == 0:
            raise UserError("Style references (`--sref`) are turned off on this server.")
        if len(parsed.style_refs) > limit:
            raise UserError(
                f"This server allows at most {limit} style references per prompt;"
                f" this one names {len(parsed.style_refs)}."
            )


async def prepare(
    bot: DreamGrid, interaction: discord.Interaction, config: GuildConfig, parsed_prompts: Sequence[ParsedPrompt]
) -> list[ParsedPrompt]:
    """The prompts as they will run: checked, `--sref random` drawn, and `--p` alone frozen into the
    member's profile code (its pictures now), each written into the prompt so a redraw is the same."""
    check_style_options(config, parsed_prompts)
    prepared = []
    for parsed in (draw_codes(parsed) for parsed in parsed_prompts):
        if parsed.profile == OWN_PROFILE:
            liked = await bot.store.liked_pictures(interaction.user.id, config["profile_pictures"])
            if not liked:
                raise UserError("Your profile is empty: press ❤️ under pictures you like first, then use `--p`.")
            code = await bot.store.profile_code(interaction.user.id, liked, style.random_code())
            frozen = dataclasses.replace(parsed, profile=str(code))
            parsed = dataclasses.replace(frozen, raw=frozen.to_text())
        prepared.append(parsed)
    return prepared


async def profile_pictures(bot: DreamGrid, code: str) -> tuple[InputImage, ...]:
    """The pictures a `--p CODE` stands for.

    Codes are style profiles (liked pictures) for now; where `/tune` makes LoRA codes, this is the one
    place a `--p` code is looked up, and the seam where a LoRA profile would be told apart."""
    pictures = await bot.store.profile_pictures(int(code))
    if pictures is None:
        raise UserError(
            f"There is no profile `--p {code}`: use `--p` alone for yours, or a code a `--p` result showed."
        )
    return tuple(pictures)


def picture_references(parsed: ParsedPrompt) -> tuple[str, ...]:
    """What of `parsed`'s style names stored pictures (tiles, links, moodboards, a profile): equal
    tuples read the same pictures."""
    refs = tuple(ref for ref in parsed.style_refs if is_picture_reference(ref))
    return refs if parsed.profile is None else (*refs, f"--p {parsed.profile}")


def is_picture_reference(ref: str) -> bool:
    """A reference that names a picture (a job's tile or a link), as opposed to a style code."""
    return not ref.isdigit()


async def style_pictures(
    bot: DreamGrid,
    interaction: discord.Interaction,
    parsed: ParsedPrompt,
    *,
    attached: Sequence[discord.Attachment] = (),
) -> tuple[InputImage, ...]:
    """Our stored copies of the pictures `parsed`'s --sref names: job tiles, and links to attachments."""
    pictures = []
    for ref in parsed.style_refs:
        if not is_picture_reference(ref):
            continue
        if ref.startswith(MOODBOARD_PREFIX):
            board = await bot.store.moodboard_pictures(interaction.user.id, ref.removeprefix(MOODBOARD_PREFIX))
            if not board:
                raise UserError(f"You have no moodboard `{ref}` with pictures in it: see `/moodboard list`.")
            pictures.extend(board)
        elif ":" in ref and not ref.startswith("http"):
            job_id, index = (int(part) for part in ref.split(":"))
            pictures.append(await tile_picture(bot, interaction, job_id, index))
        else:
            pictures.append(await _linked(bot, interaction, ref, attached))
    if parsed.profile is not None:
        pictures.extend(await profile_pictures(bot, parsed.profile))
    return tuple(pictures)


class ObjectRoute(enum.Enum):
    """How a model keeps an `--oref` subject."""

    IP_ADAPTER = "ip-adapter"  # the operator's IP-Adapter: an image prompt at --ow's scale
    REFERENCE = "reference"  # the family's reference-image input (Flux.1 Kontext, Flux.2 [klein])


def object_route(engine: Engine, model: str, parsed: ParsedPrompt) -> ObjectRoute:
    """How `model` draws `parsed`'s --oref, or a UserError naming its family when it cannot."""
    if engine.image_prompt_method(model) is ImagePromptMethod.IP_ADAPTER:
        return ObjectRoute.IP_ADAPTER
    family = engine.defaults(model).family or "This server's"
    if engine.supports(model, Feature.INSTRUCTION_EDIT) is None:
        if parsed.object_weight is not None:
            raise UserError(
                f"`--ow` weighs an IP-Adapter's subject; {family} models keep the `--oref` picture as their"
                " reference input does: leave `--ow` out."
            )
        return ObjectRoute.REFERENCE
    raise UserError(
        f"{family} models can't keep a subject from a picture (`--oref`): that takes an IP-Adapter"
        " (`IP_ADAPTER`) or a model with a reference-image input (Flux.1 Kontext, Flux.2 [klein])."
    )


async def object_picture(
    bot: DreamGrid, interaction: discord.Interaction, ref: str, attached: Sequence[discord.Attachment] = ()
) -> InputImage:
    """Our stored copy of the picture an `--oref` names: a job's tile or a link."""
    if ref.startswith("http"):
        return await _linked(bot, interaction, ref, attached)
    job_id, index = (int(part) for part in ref.split(":"))
    return await tile_picture(bot, interaction, job_id, index)


async def tile_picture(bot: DreamGrid, interaction: discord.Interaction, job_id: int, index: int) -> InputImage:
    from bot.jobs import job_or_error  # jobs imports this module

    job = await job_or_error(bot, interaction, job_id)
    if job.status != "done":
        raise UserError(f"Job {job_id} isn't finished yet, so its pictures can't be a style.")
    row = next((r for r in await bot.store.get_images(job.id) if r.idx == index), None)
    if row is None:
        raise UserError(f"Job {job_id} has no picture {index}.")
    try:
        data = await asyncio.to_thread((bot.settings.data_dir / row.path).read_bytes)
    except OSError:
        raise UserError(f"The pictures of job {job_id} are no longer stored; pick another style.") from None
    path = await asyncio.to_thread(member_pictures.store_input, data, bot.settings.data_dir)
    return InputImage(path=path, name=f"job {job_id} picture {index}", width=row.width, height=row.height)


async def _linked(
    bot: DreamGrid, interaction: discord.Interaction, url: str, attached: Sequence[discord.Attachment]
) -> InputImage:
    cdn_hosts = member_pictures.cdn_hosts_for(discord.http.Route.BASE)
    attachment = await member_pictures.resolve_prompt_url(interaction, url, attached=attached, cdn_hosts=cdn_hosts)
    native = bot.engine.native_size()
    with bot.pictures.reserve(interaction.user.id):
        return await member_pictures.read_attachment(
            attachment,
            reader=bot.pictures,
            upload_limit=interaction.filesize_limit,
            pixel_budget=native * native,
            data_dir=bot.settings.data_dir,
        )
