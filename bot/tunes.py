"""Members' own styles (/tune): the pictures a LoRA is trained from, its style code, and the room it takes.

A /tune job takes its pictures as every image command does (`bot.member_pictures`: attachments) and
from finished jobs' images (`job_pictures`); `bot.cogs.tune.gather_pictures` is the one place that
collects them, where a moodboard's pictures will join. The LoRA it makes lies under
`DATA_DIR/loras/<member>/`, and its code, a short random word, names it in prompts: `--lora CODE`.
Codes are shareable, like Midjourney's: anyone may draw with a code they were given; its files count
against the member who made it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot import jobs
from bot.errors import UserError
from bot.spec import InputImage
from engine.params import TUNE_MAX_PICTURES, TUNE_MIN_PICTURES

if TYPE_CHECKING:
    from bot.client import DreamGrid

LORA_FOLDER = "loras"
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: codes are read aloud and retyped
CODE_LENGTH = 7
_JOB_IMAGE = re.compile(r"(\d{1,12})(?::([1-4]))?")


def new_style_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


async def job_pictures(bot: DreamGrid, interaction: discord.Interaction, text: str) -> list[InputImage]:
    """`12, 15:2`: every image of job 12 and image 2 of job 15, from our stored copies (jobs the member
    may see from here, as every command that names a job)."""
    pictures: list[InputImage] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _JOB_IMAGE.fullmatch(item)
        if match is None:
            raise UserError(f"`{item[:40]}` is not a job image: write a job number, or job:image like `15:2`.")
        job_id, index = int(match[1]), int(match[2]) if match[2] else None
        job = await jobs.job_or_error(bot, interaction, job_id)
        if job.status != "done":
            raise UserError(f"Job {job_id} isn't finished yet ({job.status}); its images aren't ready.")
        rows = [row for row in await bot.store.get_images(job_id) if index is None or row.idx == index]
        if not rows:
            raise UserError(
                f"Job {job_id} has no image {index} to learn from." if index else f"Job {job_id} has no images."
            )
        for row in rows:
            if not (bot.settings.data_dir / row.path).exists():
                raise UserError(f"The images of job {job_id} are no longer stored: pick others.")
            pictures.append(
                InputImage(path=row.path, name=f"job {job_id}:{row.idx}", width=row.width, height=row.height)
            )
    return pictures


async def storage_used(bot: DreamGrid, member_id: int) -> int:
    """Bytes the member's styles take on disk."""
    return sum(style.bytes for style in await bot.store.style_codes(member_id))


def check_count(pictures: Sequence[InputImage]) -> None:
    low, high = TUNE_MIN_PICTURES, TUNE_MAX_PICTURES
    if not low <= len(pictures) <= high:
        raise UserError(f"/tune learns from {low}–{high} pictures; you gave {len(pictures)}.")
