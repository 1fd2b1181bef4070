"""Diffusion for dreamgrid. Nothing here knows about Discord.

`engine.requests` (the seam) and `engine.grid` import no torch, so the bot can use them
cheaply; the diffusers-backed engine lives in `engine.core` and is imported on demand.
"""
