"""/tune end to end: pictures in, a style code out, usable with --lora; its room counted, its bad inputs
refused in one sentence, and a tune interrupted by a restart resumed from its checkpoint."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.store import StyleCode, utcnow
from engine.fake import FakeEngine
from tests.e2e.test_admin import configure, refusal
from tests.e2e.test_images import fields, picture
from tests.fakediscord import FakeDiscord
from tests.harness import eventually, result_of, running_bot


def uploads(fake: FakeDiscord, count: int) -> dict[str, object]:
    return {f"image{n}": fake.upload(f"p{n}.png", picture((96, 80), (40 * n, 120, 200))) for n in range(1, count + 1)}


async def reply_to(fake: FakeDiscord, command: str, **options) -> str:
    ix = await fake.slash(command, **options)
    await ix.ack()
    return (await ix.wait_for_reply()).content


async def test_tune_trains_a_style_whose_code_draws_with_lora(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.005)
    async with running_bot(fake, tmp_path, engine=engine, tune_steps=40) as bot:
        await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 5"))
        ix = await fake.slash("tune", images="1, 1:2", **uploads(fake, 3))  # 3 attached + 4 + 1 job images
        done = await result_of(ix)
        job = await bot.store.get_job(2)
        assert (job.kind, job.status, len(job.spec.inputs)) == ("tune", "done", 8)
        code = job.spec.style_code
        assert len(code) == 7 and f"Your style code is `{code}`. Add `--lora {code}`" in done.embed["description"]
        assert fields(done)["Pictures"] == "8"
        assert any("%)" in snapshot["content"] for snapshot in done.history)  # progress shown as it trained
        (request,) = engine.tune_requests
        assert request.steps == 40 and len(request.pictures) == 8
        style = await bot.store.style_code(code)
        assert style.user_id == fake.alice.id and _is_file(style.path) and style.bytes > 0

        styled = await result_of(await fake.slash("imagine", prompt=f"a lighthouse --lora {code}:0.7"))
        assert [(lora.name, lora.weight, lora.path) for lora in engine.requests[-1].loras] == [(code, 0.7, style.path)]
        assert fields(styled)["LoRA"] == f"`{code}` 0.7"

        listed = await reply_to(fake, "styles")
        assert f"`{code}` — job 2" in listed
        assert (await reply_to(fake, "styles", delete=code)).startswith(f"Deleted `{code}`.")
        assert await bot.store.style_code(code) is None and not _is_file(style.path)
        assert await refusal(fake, f"a fox --lora {code}") == (
            f"Unknown LoRA `{code}`: use a /tune style code (this server has no others)."
        )


async def test_bad_tunes_are_one_sentence_and_queue_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"])
    async with running_bot(fake, tmp_path, engine=engine, lora_storage_mb=1) as bot:
        assert await reply_to(fake, "tune", **uploads(fake, 3)) == "/tune learns from 5–30 pictures; you gave 3."
        not_a_picture = {**uploads(fake, 4), "image5": fake.upload("notes.png", b"these are words, not pixels")}
        assert "notes.png" in await reply_to(fake, "tune", **not_a_picture)
        assert await reply_to(fake, "tune", images="7") == "Job 7 no longer exists."
        await bot.store.add_style_code(
            StyleCode("big1234", fake.alice.id, fake.guild.id, None, str(tmp_path / "x"), 2_000_000, utcnow())
        )
        assert await reply_to(fake, "tune", **uploads(fake, 5)) == (
            "Your styles take 2.0 MB, and this bot allows 1 MB each: free some with `/styles delete`."
        )
        await configure(fake, loras="none")
        assert await reply_to(fake, "tune", **uploads(fake, 5)) == (
            "LoRAs are turned off on this server, so a style from /tune could not be used here."
        )
        assert engine.tune_requests == [] and await bot.store.get_job(1) is None


async def test_a_tune_stopped_by_a_restart_resumes_from_its_checkpoint(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    slow = FakeEngine(models=["fake"], step_delay_s=0.05)
    async with running_bot(fake, tmp_path, engine=slow, tune_steps=200) as bot:
        ix = await fake.slash("tune", **uploads(fake, 5))
        await ix.ack()
        await eventually(lambda: bot.store.get_job(1), lambda job: job is not None and job.status == "running")
        checkpoint = tmp_path / "loras" / str(fake.alice.id) / "tune-1.ckpt"
        await eventually(lambda: _exists(checkpoint), bool, timeout=15)  # its first checkpoint (every 10 steps)
    saved = int(checkpoint.read_text())
    assert 10 <= saved < 200

    fresh = FakeEngine(models=["fake"], step_delay_s=0.001)
    async with running_bot(fake, tmp_path, engine=fresh, tune_steps=200) as bot:
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.status == "done", timeout=15)
        assert job.spec.style_code and await bot.store.style_code(job.spec.style_code) is not None
        assert fresh.tune_started_at == [saved]  # went on from the checkpoint, not from step 0
        assert not _is_file(checkpoint)


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(_is_file, path)


def _is_file(path: str | Path) -> bool:
    return os.path.isfile(path)


async def test_tune_learns_from_a_moodboard(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.005)
    async with running_bot(fake, tmp_path, engine=engine, tune_steps=20) as bot:
        assert await reply_to(fake, "tune", moodboard="autumn") == (
            "You have no moodboard called `autumn`: `/moodboard list` shows yours."
        )
        await reply_to(fake, "moodboard create", moodboard="autumn")
        for n in range(4):
            upload = fake.upload(f"leaf{n}.png", picture((96, 80), (200, 60 + 40 * n, 20)))
            await reply_to(fake, "moodboard add", moodboard="autumn", image=upload)
        assert await reply_to(fake, "tune", moodboard="Autumn") == "/tune learns from 5–30 pictures; you gave 4."
        done = await result_of(await fake.slash("tune", moodboard="autumn", image1=uploads(fake, 1)["image1"]))
        job = await bot.store.get_job(1)
        assert (job.kind, job.status, len(job.spec.inputs)) == ("tune", "done", 5)
        (request,) = engine.tune_requests
        assert len(request.pictures) == 5 and fields(done)["Pictures"] == "5"
