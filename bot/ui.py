"""The base of every button and select: one place for access checks and error handling.

discord.py runs a `DynamicItem`'s `interaction_check` and `callback` itself and only logs what
they raise, so the member would see "This interaction failed". `GuardedItem` answers instead: a
`UserError` becomes its one ephemeral line, anything else is logged and apologised for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from bot.errors import UserError, reply_ephemeral

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
