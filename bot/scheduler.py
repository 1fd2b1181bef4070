"""Runs the queue: takes the next job from SQLite, renders it, shows the member the result.

Nothing lives only in memory: a job is a row before anyone is told it was accepted, the
row says how far it got, and `start()` picks up whatever a crash interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import discord
from PIL import Image

from bot import edits, kinds, messages
from bot.clip_files import Clip, load_clip, save_clip
from bot.delivery import Delivery, final_message
from bot.disk import is_storage_error
from bot.image_files import load_rgb, preview_bytes, save_png
from bot.kinds import Source
from bot.metrics import Metrics
from bot.retention import ImageRetention
from bot.rows import ImageRow, Job
from bot.settings import Settings
from bot.spec import InputImage
from bot.store import FINISHED, Store, StyleCode, utcnow
from bot.tunes import LORA_FOLDER, new_style_code
from bot.ui import JobViews
from engine.requests import (
    Action,
    DescribeRequest,
    DescribeResult,
    Engine,
    ProgressCallback,
    RenderError,
    RenderLost,
    RenderProgress,
    RenderRequest,
    TuneRequest,
    TuneResult,
)

log = logging.getLogger(__name__)

REDELIVERY_INTERVAL_S = 30.0  # how often deliveries that failed are retried
ANNOUNCE_WAIT_S = 10.0  # how long a job waits for its "Waiting to start" message to be recorded
PROGRESS_SETTLE_S = 10.0  # how long the final edit waits for a progress edit already sent
STORAGE_RETRY_S = 5.0  # how often a failure the full disk would not let us record is tried again
WAITING_REFRESHED = 25  # the first this many waiting jobs are shown their new place as the line moves
STORAGE_FAILURE = "There was no room left to save this job's images. The bot's operator has been told (it is logged)."


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        engine: Engine,
        settings: Settings,
        delivery: Delivery,
        views: JobViews,
        retention: ImageRetention | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.delivery = delivery
        self.views = views
        self.retention = retention  # told of every saved result, so a disk budget is kept between sweeps
        self.metrics = metrics or Metrics(settings.installed_models)
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[int, asyncio.Task[None]] = {}
        self._announced: dict[int, asyncio.Event] = {}
        self._background: set[asyncio.Task[object]] = set()
        self._progress: dict[int, asyncio.Task[None]] = {}  # the progress edit in flight, per job
        self._delivering: set[int] = set()
        self._last_redelivery = 0.0
        self._closing = False
        self._first_job_this_run = 0  # jobs from before start() are never announced by this process
        self._typical_run_s: float | None = None  # how long jobs have been taking, for "starts in about …"
        self._shown_waiting: dict[int, str] = {}  # a waiting job's message, as last shown
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_again = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._first_job_this_run = await self.store.last_job_id() + 1
        self._typical_run_s = await self.store.typical_run_seconds()
        requeued, failed = await self.store.recover(self.settings.max_attempts)
        if requeued or failed:
            log.warning("recovered from an unclean stop: %d jobs re-queued, %d given up", requeued, failed)
        self._loop_task = asyncio.create_task(self._run_forever(), name="dreamgrid-scheduler")

    async def stop(self) -> None:
        """Stop taking jobs; renders in flight go back to the queue for the next start."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        tasks = [*self._running.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([self._loop_task] if self._loop_task else []), return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def cancel(self, job_id: int) -> Job | None:
        """Cancel a queued or running job and show it as cancelled; None if it had already finished.

        The row changes first, so a queued job can never be claimed afterwards and a render
        finishing at this moment cannot overwrite the cancellation (finish() needs 'running').
        A running render's task is cancelled: the engine stops it at the next step.
        """
        job = await self.store.cancel(job_id)
        if job is None:
            return None
        self.metrics.job_ended(job, "cancelled")
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await self.deliver(job)
        return job

    def announced(self, job_id: int, shown: str | None = None) -> None:
        """The cog has recorded the job's message id (showing `shown`); its runner may edit it now."""
        self._announced.setdefault(job_id, asyncio.Event()).set()
        if shown is not None:
            self._shown_waiting[job_id] = shown

    def starts_in(self, position: int) -> float | None:
        """When the job at `position` in line (1: next) should start, in seconds; None until a job
        has been timed. Every `max_concurrent_jobs` jobs ahead of it (running ones included) take
        about as long as jobs have been taking. A forecast, not a promise."""
        if self._typical_run_s is None:
            return None
        ahead = position - 1 + len(self._running)
        return (ahead // self.settings.max_concurrent_jobs) * self._typical_run_s

    # -- the line moves: waiting members are told their new place ----------------------

    def _queue_moved(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refresh_again = True  # the refresh under way reads the line once more
            return
        self._refreshing = asyncio.create_task(self._refresh_waiting(), name="dreamgrid-waiting")
        self._background.add(self._refreshing)
        self._refreshing.add_done_callback(self._background.discard)

    async def _refresh_waiting(self) -> None:
        """Edit "Waiting to start" where the job's place or forecast changed: the first
        WAITING_REFRESHED in line, at most once per PROGRESS_INTERVAL_S (moves in between are
        shown together, and Discord rate-limits edits)."""
        try:
            while True:
                self._refresh_again = False
                await asyncio.sleep(self.settings.progress_interval_s)
                for position, job_id in enumerate((await self.store.queue_order())[:WAITING_REFRESHED], start=1):
                    job = await self.store.get_job(job_id)
                    in_flight = self._progress.get(job_id)
                    if job is None or job.status != "queued" or job.message_id is None:
                        continue
                    if in_flight is not None and not in_flight.done():
                        continue
                    content = messages.waiting(job, position, self.starts_in(position))
                    if self._shown_waiting.get(job_id) == content:
                        continue
                    self._shown_waiting[job_id] = content
                    # Held like a progress edit, so the job's first progress or its final state waits for it.
                    edit = asyncio.create_task(self._show_waiting(job, content))
                    self._progress[job_id] = edit
                    await asyncio.wait([edit])
                if not self._refresh_again:
                    return
        except Exception:
            log.warning("could not show waiting members their place in line", exc_info=True)

    async def _show_waiting(self, job: Job, content: str) -> None:
        try:
            await self.delivery.update(job, content=content, view=self.views.progress(job))
        except discord.HTTPException as exc:
            log.info("job %s: its place in line was not shown: %s", job.id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the loop -----------------------------------------------------------------------

    async def _run_forever(self) -> None:
        await self._deliver_pending()
        while not self._closing:
            self._wake.clear()
            if time.monotonic() - self._last_redelivery > REDELIVERY_INTERVAL_S:
                # Deliveries that failed (Discord down) are retried even while the queue is busy.
                self._spawn(self._deliver_pending(), name="dreamgrid-redeliver")
            try:
                while len(self._running) < self.settings.max_concurrent_jobs:
                    job = await self.store.claim_next(self.settings.max_running_per_user)
                    if job is None:
                        break
                    task = asyncio.create_task(self._run_job(job), name=f"dreamgrid-job-{job.id}")
                    self._running[job.id] = task
                    task.add_done_callback(functools.partial(self._job_done, job.id))
                    self._shown_waiting.pop(job.id, None)
                    self._queue_moved()
            except Exception:
                log.exception("scheduler could not take the next job; retrying")
                await asyncio.sleep(1)
                continue
            # Not asyncio.wait_for: on 3.11 it swallows a cancel that lands as the event is set,
            # and stop() would then wait forever for this loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REDELIVERY_INTERVAL_S):
                    await self._wake.wait()

    def _job_done(self, job_id: int, _task: object = None) -> None:
        self._running.pop(job_id, None)
        self._shown_waiting.pop(job_id, None)
        self._announced.pop(job_id, None)
        self._progress.pop(job_id, None)
        self.wake()

    async def _deliver_pending(self) -> None:
        """Deliver finished jobs nobody was shown yet: after a crash, or when Discord was down.

        Such a job may have been shown just before the crash (Discord took the edit, the bot
        died before recording it), so Discord is asked first: exactly once, never a second ping.
        """
        self._last_redelivery = time.monotonic()
        try:
            for job in await self.store.undelivered():
                if job.id not in self._running:
                    await self.deliver(job, check_shown=True)
        except Exception:
            log.exception("could not deliver pending results; will retry")

    # -- one job ------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        started = time.perf_counter()
        self.metrics.job_started(job)
        outcome = "failed"
        try:
            if kinds.get(job.kind).action is Action.TUNE:  # a LoRA trained in the background, not a render
                async with asyncio.timeout(self.settings.tune_timeout_s):
                    style, tuned = await self._tune(job)
                self.metrics.job_rendered(job, time.perf_counter() - started, tuned.elapsed_s, batch_size=1)
                spec = dataclasses.replace(job.spec, style_code=style.code)
                finished = await self.store.finish(job.id, [], tuned.elapsed_s, spec=spec)
                if finished is None:  # cancelled as it finished: no code for a job its member stopped
                    await self.store.delete_style_code(style.code)
                    await asyncio.to_thread(Path(style.path).unlink, missing_ok=True)
            elif kinds.get(job.kind).action is Action.DESCRIBE:  # words from the describer, not a render
                async with asyncio.timeout(self.settings.job_timeout_s):
                    described = await self._describe(job)
                self.metrics.job_rendered(job, time.perf_counter() - started, described.elapsed_s, batch_size=1)
                spec = dataclasses.replace(job.spec, described=described.prompts, unfamiliar=described.unfamiliar)
                finished = await self.store.finish(job.id, [], described.elapsed_s, spec=spec)
            else:
                async with asyncio.timeout(self.settings.job_timeout_s):
                    request = await self._request_for(job)
                    result = await self.engine.render(request, progress=self._progress_reporter(job))
                self.metrics.job_rendered(job, time.perf_counter() - started, result.elapsed_s, result.batch_size)
                if result.clips:
                    images = await self._save_clip(job, result.clips[0], result.fps, result.seeds[0])
                else:
                    images = await asyncio.to_thread(
                        self._save_images, job, result.images, result.seeds, result.flagged
                    )
                finished = await self.store.finish(job.id, images, result.elapsed_s)
                if finished is not None and self.retention is not None:
                    self.retention.saved(row.path for row in images)
                self._typical_run_s = await self.store.typical_run_seconds()
            outcome = "done"
        except asyncio.CancelledError:
            if self._closing:
                await asyncio.shield(self.store.requeue(job.id))
            else:  # cancelled by its member or an admin: the row already says so
                await asyncio.shield(self.store.add_gpu_seconds(job.id, time.perf_counter() - started))
            raise
        except TimeoutError:
            minutes = self.settings.job_timeout_s / 60
            limit = f"{minutes:g} minutes" if minutes >= 1 else f"{self.settings.job_timeout_s:g} seconds"
            log.warning("job %s timed out after %s", job.id, limit)
            self.metrics.engine_error("timeout")
            outcome = "timed_out"
            error = f"This job took longer than {limit} and was stopped."
            finished = await self._fail(job, error, time.perf_counter() - started)
        except RenderLost as exc:
            self.metrics.engine_error("lost")
            max_attempts = self.settings.max_attempts
            if job.attempts < max_attempts and await self.store.retry(job.id):
                log.warning("job %s: %s; queued again (attempt %d of %d)", job.id, exc, job.attempts, max_attempts)
                return  # _job_done wakes the loop, which claims it again in its turn
            error = (
                f"This job was interrupted {job.attempts} times (the worker drawing it stopped),"
                " so it was not tried again."
            )
            finished = await self._fail(job, error, time.perf_counter() - started)
        except RenderError as exc:
            self.metrics.engine_error("failed")
            finished = await self._fail(job, str(exc), time.perf_counter() - started)
        except Exception as exc:
            if is_storage_error(exc):
                log.error("job %s: cannot save its result, the data folder is full or read-only: %s", job.id, exc)
                error = STORAGE_FAILURE
            else:
                log.exception("job %s failed", job.id)
                self.metrics.engine_error("crashed")
                error = "Something went wrong while drawing this; it has been logged."
            finished = await self._fail(job, error, time.perf_counter() - started)
        if finished is not None:
            self.metrics.job_ended(finished, outcome)
            await self.deliver(finished)

    async def _fail(self, job: Job, error: str, gpu_seconds: float) -> Job | None:
        """Record a job as failed; when storage won't take even that, tell its member anyway.

        The row stays "running" until the failure can be written (retried every few seconds),
        so nothing is lost, and the member sees the failure now rather than a frozen percentage.
        """
        try:
            return await self.store.fail(job.id, error, gpu_seconds)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            log.error("job %s: cannot record its failure (%s); telling its member, retrying", job.id, exc)
        failed = dataclasses.replace(job, status="failed", error=error, finished_at=utcnow())
        await self.deliver(failed, record=False)  # the row can't say "delivered" before it says "failed"
        self._spawn(self._record_failure(job.id, error, gpu_seconds), name=f"dreamgrid-record-failure-{job.id}")
        return None

    async def _record_failure(self, job_id: int, error: str, gpu_seconds: float) -> None:
        """Write a failure down once there is room again; the message already shows it."""
        while True:
            try:
                finished = await self.store.fail(job_id, error, gpu_seconds)
                break
            except Exception as exc:
                if not is_storage_error(exc):
                    log.exception("job %s: giving up recording its failure", job_id)
                    return
                await asyncio.sleep(STORAGE_RETRY_S)
        log.info("job %s: its failure is recorded now that the data folder takes writes again", job_id)
        if finished is not None:
            await self.deliver(finished, check_shown=True)  # already shown: only the row is updated

    async def _request_for(self, job: Job) -> RenderRequest:
        kind = kinds.get(job.kind)
        source, pictures, mask_image = None, [], None
        if kind.source is Source.PARENT_TILE:
            source = await self._source_image(job)
            size = (job.spec.render.width, job.spec.render.height)
            if kind.full_quality and source.size != size:  # Enhance: a draft's tile, drawn at full size
                source = await asyncio.to_thread(source.resize, size, Image.Resampling.LANCZOS)  # off the loop
        elif kind.source is Source.UPLOADS:
            pictures = await self._input_images(job)
            source = pictures[0]
        if kind.extends_clip:  # Extend draws on from where its parent's clip ends
            source = (await self._parent_clip(job)).frames[-1]
        end_image = None
        if job.spec.end is not None:  # Animate's end picture: our stored copy
            end_image = await self._stored_picture(job.spec.end)
        if job.spec.edit is not None and source is not None:
            # The canvas and mask are made again from the parent's picture and what the member chose.
            inputs = await asyncio.to_thread(edits.render_inputs, job.spec.edit, source)
            source, mask_image = inputs.init_image, inputs.mask_image
        request = job.spec.render.request(
            action=kind.action,
            seeds=job.seeds,
            model=job.model,
            init_image=source,
            pictures=pictures,
            mask_image=mask_image,
            style_images=await self._style_images(job),
            end_image=end_image,
        )
        if kind.describes_missing_prompt and not request.prompt.strip() and source is not None:
            # The likeliest description, always the same for a picture: a redraw gives the same pixels.
            described = await self.engine.describe(DescribeRequest(image=source, count=1))
            request = dataclasses.replace(request, prompt=described.prompts[0] if described.prompts else "")
        return request

    async def _tune(self, job: Job) -> tuple[StyleCode, TuneResult]:
        """Train the job's LoRA from its pictures; its checkpoint sits beside where the LoRA goes, so a job
        run again after a restart resumes from it. Records the style code that names the result."""
        pictures = await self._input_images(job)
        folder = self.settings.data_dir / LORA_FOLDER / str(job.user_id)
        output = folder / f"tune-{job.id}.safetensors"
        request = TuneRequest(
            pictures=tuple(pictures),
            output=str(output),
            checkpoint=str(folder / f"tune-{job.id}.ckpt"),
            model=job.model,
            steps=self.settings.tune_steps,
            seed=job.seeds[0],
        )
        tuned = await self.engine.tune(request, progress=self._progress_reporter(job))
        size = (await asyncio.to_thread(os.stat, tuned.output)).st_size
        taken = set(self.settings.lora_sources) | {name.lower() for name in self.settings.lora_sources}
        while True:
            code = new_style_code()
            if code not in taken and await self.store.style_code(code) is None:
                break
        style = StyleCode(code, job.user_id, job.guild_id, job.id, tuned.output, size, utcnow())
        await self.store.add_style_code(style)
        return style, tuned

    async def _describe(self, job: Job) -> DescribeResult:
        """Four prompts for the job's picture: the likeliest, or (🔄, a job with a parent) other phrasings."""
        picture = (await self._input_images(job))[0]
        parent = await self.store.get_job(job.parent_id) if job.parent_id is not None else None
        request = DescribeRequest(
            image=picture,
            seed=job.seeds[0] if parent is not None else None,
            avoid=parent.spec.described if parent is not None else (),
        )
        described = await self.engine.describe(request)
        if not described.prompts and not described.unfamiliar:
            raise RenderError("The describer found no words for this picture.")
        return described

    async def _stored_picture(self, picture: InputImage) -> Image.Image:
        try:
            return await asyncio.to_thread(load_rgb, self.settings.data_dir / picture.path)
        except OSError:
            raise RenderError(f"The picture `{picture.name}` is no longer stored; please upload it again.") from None

    async def _parent_clip(self, job: Job) -> Clip:
        """The clip an Extend continues: its parent's stored frames."""
        parent = await self.store.get_job(job.parent_id) if job.parent_id is not None else None
        rows = await self.store.get_images(parent.id) if parent is not None else []
        if parent is None or not rows:
            raise RenderError("This job has no clip to extend.")
        try:
            return await asyncio.to_thread(load_clip, self.settings.data_dir / rows[0].path)
        except OSError:
            raise RenderError(f"The clip of job {parent.id} is no longer stored: animate the picture again.") from None

    async def _save_clip(self, job: Job, frames: tuple[Image.Image, ...], fps: float, seed: int) -> list[ImageRow]:
        """Store a clip as its job's one image (an animated PNG); an Extend's is its parent's, then its own."""
        if kinds.get(job.kind).extends_clip:
            # The new clip starts on the parent's last frame: shown once, not twice.
            frames = (await self._parent_clip(job)).frames + frames[1:]
        relative = f"images/{job.id}/1.png"
        await asyncio.to_thread(save_clip, Clip(frames, fps), self.settings.data_dir / relative)
        width, height = frames[0].size
        return [ImageRow(job.id, 1, relative, width, height, seed, False)]

    async def _input_images(self, job: Job) -> list[Image.Image]:
        """Our copies of the member's own pictures the job was made from (never the expired CDN links)."""
        if not job.spec.inputs:
            raise RenderError("This job has no picture to work from.")
        pictures = []
        for picture in job.spec.inputs:
            try:
                pictures.append(await asyncio.to_thread(load_rgb, self.settings.data_dir / picture.path))
            except OSError:
                raise RenderError(
                    f"The picture `{picture.name}` is no longer stored; please upload it again."
                ) from None
        return pictures

    async def _style_images(self, job: Job) -> list[Image.Image]:
        """Our copies of the job's --sref pictures."""
        pictures = []
        for picture in job.spec.style_inputs:
            try:
                pictures.append(await asyncio.to_thread(load_rgb, self.settings.data_dir / picture.path))
            except OSError:
                raise RenderError(
                    f"The style picture `{picture.name}` is no longer stored; pick it again with `--sref`."
                ) from None
        return pictures

    async def _source_image(self, job: Job) -> Image.Image:
        """The tile a variation or upscale starts from, drawn again if its file is gone."""
        parent = await self.store.get_job(job.parent_id) if job.parent_id is not None else None
        if parent is None or job.parent_index is None:
            raise RenderError("This job has no source image.")
        for row in await self.store.get_images(parent.id):
            if row.idx == job.parent_index:
                try:
                    return await asyncio.to_thread(load_rgb, self.settings.data_dir / row.path)
                except OSError:
                    break
        if parent.status != "done":
            raise RenderError(f"Job {parent.id} has no finished images to work from.")
        # Same request, same seeds, same batch: the same pixels as the lost file.
        log.info("job %s: the images of job %s are gone; drawing them again", job.id, parent.id)
        request = dataclasses.replace(await self._request_for(parent), preview=False)
        result = await self.engine.render(request)
        if result.clips:  # a clip's first frame is its picture
            rows = await self._save_clip(parent, result.clips[0], result.fps, result.seeds[0])
            await self.store.save_images(rows)
            return result.images[0]
        rows = await asyncio.to_thread(self._save_images, parent, result.images, result.seeds)
        await self.store.save_images(rows)
        return result.images[job.parent_index - 1]

    def _save_images(
        self, job: Job, images: tuple[Image.Image, ...], seeds: tuple[int, ...], flagged: tuple[bool, ...] = ()
    ) -> list[ImageRow]:
        rows = []
        for idx, (image, seed) in enumerate(zip(images, seeds, strict=True), start=1):
            relative = f"images/{job.id}/{idx}.png"
            save_png(image, self.settings.data_dir / relative)
            is_flagged = bool(flagged[idx - 1]) if idx <= len(flagged) else False
            rows.append(ImageRow(job.id, idx, relative, image.width, image.height, seed, is_flagged))
        return rows

    def _progress_reporter(self, job: Job) -> ProgressCallback:
        interval = self.settings.progress_interval_s
        last_edit = -interval  # the first step replaces "Waiting to start" at once; then one edit per interval
        in_flight: asyncio.Task[None] | None = None

        def report(event: RenderProgress) -> None:
            nonlocal last_edit, in_flight
            now = time.monotonic()
            pending = self._progress.get(job.id)  # this job's last edit (progress, or its place in line)
            if now - last_edit < interval or (pending is not None and not pending.done()) or event.step >= event.total:
                return
            last_edit = now
            in_flight = asyncio.create_task(self._show_progress(job, event))
            self._background.add(in_flight)
            in_flight.add_done_callback(self._background.discard)
            self._progress[job.id] = in_flight

        return report

    async def _show_progress(self, job: Job, event: RenderProgress) -> None:
        try:
            await self.store.set_progress(job.id, event.fraction)
            job = await self._with_message(job)
            file = None
            if event.preview is not None:
                render = job.spec.render
                size = kinds.get(job.kind).result_size(render.width, render.height)
                data = await asyncio.to_thread(preview_bytes, event.preview, size)
                file = discord.File(io.BytesIO(data), filename="preview.jpg")
            await self.delivery.update(
                job, content=messages.progress(job, event.fraction), file=file, view=self.views.progress(job)
            )
        except Exception:
            log.warning("job %s: progress update failed", job.id, exc_info=True)

    async def _with_message(self, job: Job) -> Job:
        """The job as stored, once the cog has recorded its message (or a few seconds passed).

        Only jobs queued since this start are being announced; an older one without a message
        lost its id to a crash, so the message is looked up in the channel instead of waited for.
        """
        if job.message_id is not None:
            return job
        if job.id >= self._first_job_this_run:
            event = self._announced.setdefault(job.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ANNOUNCE_WAIT_S):
                    await event.wait()
        elif (message_id := await self.delivery.find_announcement(job)) is not None:
            log.info("job %s: found the message a crash kept from being recorded", job.id)
            await self.store.set_message(job.id, message_id)
        # Only the message id is taken from the row: `job` may be a state the row can't hold yet
        # (a failure the full disk would not let us record).
        stored = await self.store.get_job(job.id)
        return dataclasses.replace(job, message_id=stored.message_id) if stored is not None else job

    # -- telling the member -------------------------------------------------------------

    async def _settle_progress(self, job_id: int) -> None:
        """Let a progress edit already sent land first, so it cannot overwrite the final state."""
        task = self._progress.pop(job_id, None)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=PROGRESS_SETTLE_S)

    async def deliver(self, job: Job, *, check_shown: bool = False, record: bool = True) -> None:
        """Show a finished job's final state, once; recorded so a restart does not repeat it.

        `check_shown`: first ask Discord whether the final state is already there (a crash
        between Discord accepting it and the row recording it). `record=False`: show it only.
        """
        if job.id in self._delivering:
            return
        self._delivering.add(job.id)
        try:
            await self._deliver(job, check_shown=check_shown, record=record)
        finally:
            self._delivering.discard(job.id)

    async def _deliver(self, job: Job, *, check_shown: bool, record: bool) -> None:
        await self._settle_progress(job.id)
        job = await self._with_message(job)
        current = await self.store.get_job(job.id)
        if current is not None:
            if current.delivered_at is not None:
                return
            # A failure the full disk would not let us record is still shown as what it is.
            job = (
                current
                if current.status in FINISHED
                else dataclasses.replace(current, status=job.status, error=job.error)
            )
        if check_shown:
            shown = await self.delivery.find_shown(job)
            if shown is not None:
                log.info("job %s: its result was already shown before a restart", job.id)
                await self.store.mark_delivered(job.id, shown.channel_id, shown.message_id)
                return
        rows = await self.store.get_images(job.id) if job.status == "done" else []
        final = await final_message(job, rows, data_dir=self.settings.data_dir, views=self.views)
        try:
            shown = await self.delivery.update(
                job,
                content=final.content,
                embed=final.embed,
                file=final.file,
                view=final.view,
                announce=True,
                notify=job.status != "cancelled",
            )
        except discord.HTTPException as exc:
            if exc.status >= 500 or exc.status == 429:
                log.warning("job %s: Discord is unavailable (%s); delivery will be retried", job.id, exc.status)
                return
            log.error("job %s: cannot be delivered (%s); giving up", job.id, exc)
            shown = None
        except (OSError, discord.DiscordException):
            log.warning("job %s: delivery failed; will be retried", job.id, exc_info=True)
            return
        if not record:
            return
        try:
            await self.store.mark_delivered(
                job.id, shown.channel_id if shown else None, shown.message_id if shown else None
            )
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            # Shown but not recorded: the next pending-delivery pass finds it shown and records it.
            log.warning("job %s: shown, but the delivery could not be recorded: %s", job.id, exc)
