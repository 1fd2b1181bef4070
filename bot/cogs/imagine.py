"""/imagine: a prompt in, a 2x2 grid out."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs
from bot.client import DreamGrid
from bot.errors import UserError
from bot.prompt import PromptError, parse_prompt


class Imagine(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot

    @app_commands.command(description="Draw four images from a prompt")
    @app_commands.describe(prompt="What to draw, e.g. a lighthouse at dusk --ar 3:2 --seed 7 --no text")
    async def imagine(self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 1500]) -> None:
        bot = self.bot
        try:
            parsed_prompts = parse_prompt(prompt, models=bot.settings.installed_models)
        except PromptError as exc:
            raise UserError(str(exc)) from None
        new_jobs = []
        for parsed in parsed_prompts:
            model = parsed.model or bot.settings.model
            params = jobs.imagine_params(parsed, bot=bot, model=model, defaults={})
            new_jobs.append(
                jobs.new_job(
                    interaction,
                    kind="imagine",
                    prompt=parsed.raw,
                    params=params,
                    seeds=jobs.seeds_for(parsed.seed),
                    model=model,
                )
            )
        await jobs.submit(bot, interaction, new_jobs)


async def setup(bot: DreamGrid) -> None:
    await bot.add_cog(Imagine(bot))
