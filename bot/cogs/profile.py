"""❤️ / 👎 under one picture: what a member likes, for their profile (`--p`).

Each button is a `DynamicItem` whose custom_id carries the job and picture (`dg:rate:like:42:3`), so
it works on a message of any age, across restarts. A verdict is the member's own (anyone may rate
any picture they can see); the picture is copied to our stored inputs, so a profile outlives the
result's retention. `--p` then freezes the most recent liked pictures into a profile code
(`bot.styles.prepare`).
"""

from __future__ import annotations

import re

import discord

from bot import jobs, styles
from bot.client import DreamGrid
from bot.ui import GuardedItem, JobViews

Interaction = discord.Interaction[DreamGrid]
RATING_ROW = 4  # under one picture: rows 0–3 are the picture's own buttons and ✉️


class RateButton(
    GuardedItem[discord.ui.Button], template=r"dg:rate:(?P<verdict>like|dislike):(?P<job>\d+):(?P<n>[1-4])"
):
    """❤️ adds the picture to the presser's profile; 👎 keeps it out (replacing an earlier ❤️)."""

    def __init__(self, job_id: int, index: int, *, liked: bool) -> None:
        verdict = "like" if liked else "dislike"
        super().__init__(
            discord.ui.Button(
                emoji="❤️" if liked else "👎", custom_id=f"dg:rate:{verdict}:{job_id}:{index}", row=RATING_ROW
            )
        )
        self.job_id, self.index, self.liked = job_id, index, liked

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]), liked=match["verdict"] == "like")

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await jobs.job_or_error(bot, interaction, self.job_id)
        picture = await styles.tile_picture(bot, interaction, job.id, self.index)
        liked = await bot.store.rate(interaction.user.id, job.id, self.index, liked=self.liked, picture=picture)
        if self.liked:
            text = f"❤️ Added to your profile ({liked} liked): `--p` draws in the style of what you like."
        else:
            text = "👎 Noted: this picture stays out of your profile."
        await interaction.edit_original_response(content=text)


def install_views(views: JobViews) -> None:
    """❤️ and 👎 under every single picture."""
    views.picture_extras.append(lambda job, index: RateButton(job.id, index, liked=True))
    views.picture_extras.append(lambda job, index: RateButton(job.id, index, liked=False))


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(RateButton)
    install_views(bot.views)
