"""Image retention end to end: a small budget holds, and pruned jobs still answer every button."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

from PIL import Image

from bot.retention import storage_usage
from engine.fake import FakeEngine
from engine.requests import Action
from tests.fakediscord import FakeDiscord
from tests.harness import config_shown, eventually, result_of, running_bot

BUDGET = 300 * 1024  # about six grids of noise


class NoisyEngine(FakeEngine):
    """Tiles of noise seeded by (prompt, seed): ~12 KB as PNG, and the same request gives the same pixels.

    Variations wait for `release`, so one can be kept running.
    """

    def __init__(self) -> None:
        super().__init__(models=["fake"])
        self.holding = asyncio.Event()  # a variation is waiting for `release`
        self.release = asyncio.Event()

    async def render(self, request, *, progress=None):
        if request.action is Action.VARIATION:
            self.holding.set()
            await self.release.wait()
        result = await super().render(request, progress=progress)
        noisy = tuple(
            Image.frombytes(
                "RGB", image.size, random.Random(f"{request.prompt}|{seed}").randbytes(image.width * image.height * 3)
            )
            for image, seed in zip(result.images, result.seeds, strict=True)
        )
        return dataclasses.replace(result, images=noisy)


def files_of(data_dir: Path, job_id: int) -> list[Path]:
    return sorted((data_dir / "images" / str(job_id)).glob("*.png"))


async def test_a_budget_keeps_the_folder_small_and_pruned_jobs_are_drawn_again(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    engine = NoisyEngine()
    async with running_bot(
        fake, tmp_path, engine=engine, image_store_max_gb=BUDGET / 1e9, max_queued_per_user=40
    ) as bot:
        source = await result_of(await fake.slash("imagine", prompt="a harbour --seed 1"))
        source_files = {path: path.read_bytes() for path in files_of(tmp_path, 1)}
        # V1 on job 1 keeps running: tile 1 of job 1 is its input, so job 1's files must stay
        held = await fake.click(source, label="V1")
        await held.ack()
        async with asyncio.timeout(10):
            await engine.holding.wait()

        repeat = await fake.slash("imagine", prompt="a lighthouse --repeat 30")
        await (await fake.click(await repeat.wait_for_reply(), label="Yes")).ack()  # 30 jobs ask first
        await eventually(
            lambda: bot.store.user_stats(fake.alice.id),
            lambda stats: stats.jobs_total == 32 and stats.queued == 0,
            timeout=60,
        )
        jobs = [await bot.store.get_job(job_id) for job_id in range(3, 33)]
        await eventually(
            lambda: asyncio.gather(*(bot.store.get_job(j.id) for j in jobs)),
            lambda now: all(j.status == "done" and j.delivered_at for j in now),
            timeout=30,
        )
        usage = await eventually(lambda: storage_usage(tmp_path), lambda u: u.image_bytes <= BUDGET, timeout=15)
        assert usage.image_files < 30 * 4

        # nothing of the running variation's was touched; the oldest others went first
        assert {path: path.read_bytes() for path in files_of(tmp_path, 1)} == source_files
        pruned = [job.id for job in jobs if not files_of(tmp_path, job.id)]
        assert len(pruned) >= 20 and pruned == list(range(3, 3 + len(pruned)))
        for job_id in pruned:  # every job is still on record, with its request and seeds
            job = await bot.store.get_job(job_id)
            assert job.status == "done" and len(job.seeds) == 4 and len(await bot.store.get_images(job_id)) == 4

        engine.release.set()
        await result_of(held)

        oldest = await bot.store.get_job(pruned[0])
        message = next(m for m in fake.channel_messages() if m.id == oldest.message_id)
        # U1, ✉️: the grid is drawn again with the same seeds, and the member is told
        for custom_id in (f"dg:u:{oldest.id}:1", f"dg:dm:{oldest.id}"):
            pressed = await fake.click(message, custom_id)
            told = await pressed.wait_for_followup(lambda m: m.ephemeral)
            assert f"The images of job {oldest.id} were no longer stored" in told.content
            redraw = engine.requests[-1]
            assert redraw.action is Action.IMAGINE and redraw.seeds == tuple(oldest.seeds)
            await result_of(pressed)
        # V2: job's tiles are drawn again first, then the variation starts from tile 2
        drawn = len(engine.requests)
        await result_of(await fake.click(message, f"dg:v:{oldest.id}:2"))
        again, variation = engine.requests[drawn:]
        assert again.seeds == tuple(oldest.seeds) and variation.action is Action.VARIATION
        assert variation.init_image.tobytes() == Image.open(tmp_path / f"images/{oldest.id}/2.png").tobytes()
        # /show on another pruned job
        other = await bot.store.get_job(pruned[5])
        shown = await fake.slash("show", job_id=other.id)
        redrawn = await result_of(shown)
        assert "drawn again with the same seeds" in (await shown.wait_for_followup(lambda m: m.ephemeral)).content
        assert engine.requests[-1].seeds == tuple(other.seeds) and redrawn.attachments

        # admins see the folder's figures in /config show
        fields = [f for embed in await config_shown(fake, fake.admin) for f in embed["fields"]]
        storage = next(f["value"] for f in fields if f["name"].startswith("storage"))
        assert "(limit 307.2 KB)" in storage and "oldest kept image: <t:" in storage and "free disk: **" in storage
        assert "members' pictures: **0 B** in 0 files" in storage
