"""Members' hostile pictures, the decoder before this branch vs now, side by side in one run. Not a test.

    python -m bench.picture_bench [--baseline-ref 84bbb80] [--repeats 3]

The baseline is `bot/image_inputs.py` as it was at `--baseline-ref` (decode, fit and store in one
trip to the event loop's default executor), loaded from git; "now" is `bot.member_pictures`
(a child process per picture). Three figures:

1. time to read (or refuse) each hostile file, median of --repeats;
2. peak memory for 7,000² pictures (a single-colour PNG of 160 KB, a baseline and a progressive
   JPEG), each side in a fresh process: the bot's own peak growth, and the decoding child's peak;
3. beside it: ten hostile JPEGs (two /blends) in flight, then one delivery's trip to a worker
   thread (what the scheduler does to save and encode another member's grid): its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.errors import UserError  # noqa: E402
from bot.member_pictures import PictureReader, read_attachment  # noqa: E402
from tests.test_hostile_pictures import repeated_scan_jpeg, solid_png  # noqa: E402

BUDGET = 512 * 512


def baseline(ref: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{ref}:bot/image_inputs.py"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_image_inputs.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_image_inputs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Upload:
    def __init__(self, filename: str, data: bytes) -> None:
        self.filename, self.data, self.size = filename, data, len(data)

    async def read(self) -> bytes:
        return self.data


def grey16() -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (256, 256), 32768).save(buffer, "PNG")
    return buffer.getvalue()


HOSTILE = {
    "progressive JPEG, last scan x1000 (3000², 94 KB)": ("scans.jpg", repeated_scan_jpeg),
    "single-colour PNG 7000² (160 KB)": ("big.png", lambda: solid_png(7000, 7000)),
    "PNG 28000×1780, over 4:1": ("wide.png", lambda: solid_png(28_000, 1_780)),
    "16-bit grey PNG, value 32768": ("grey16.png", grey16),
}


async def read_old(old: ModuleType, name: str, data: bytes, data_dir: Path) -> str:
    try:
        stored = await asyncio.to_thread(old._decode_fit_store, data, name, BUDGET, data_dir)
    except UserError as exc:
        return f"refused: {exc}"
    with Image.open(data_dir / stored.path) as copy:
        return f"read {stored.width}×{stored.height}, centre {copy.getpixel((copy.width // 2, copy.height // 2))}"


async def read_new(reader: PictureReader, name: str, data: bytes, data_dir: Path) -> str:
    try:
        stored = await read_attachment(
            Upload(name, data),  # type: ignore[arg-type]
            reader=reader,
            upload_limit=len(data) + 1,
            pixel_budget=BUDGET,
            data_dir=data_dir,
        )
    except UserError as exc:
        return f"refused: {exc}"
    with Image.open(data_dir / stored.path) as copy:
        return f"read {stored.width}×{stored.height}, centre {copy.getpixel((copy.width // 2, copy.height // 2))}"


async def timed(coro_fn, repeats: int) -> tuple[float, str]:
    times, outcome = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        outcome = await coro_fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), outcome


_PEAK = """
import asyncio, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench.picture_bench import baseline, BUDGET
from bot.member_pictures import PictureReader
data = Path(sys.argv[4]).read_bytes()  # made by the bench, so making it costs this process nothing
side = sys.argv[2]
old = baseline(sys.argv[3]) if side == "before" else None
def peak():  # since this process's exec (ru_maxrss would carry the bench's own peak across it)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
before = peak()
if side == "before":
    asyncio.run(asyncio.to_thread(old._decode_fit_store, data, "big.jpg", BUDGET, Path(tempfile.mkdtemp())))
    child = 0
else:
    child = asyncio.run(PictureReader().decode(data, "big.jpg", BUDGET)).peak_bytes
print(json.dumps({"bot": peak() - before, "child": child}))
"""


def gradient_jpeg(**options: object) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((7000, 7000)).convert("RGB").save(buffer, "JPEG", quality=85, **options)
    return buffer.getvalue()


BIG = {
    "7000² single-colour PNG (160 KB)": lambda: solid_png(7000, 7000),
    "7000² baseline JPEG (0.9 MB)": gradient_jpeg,
    "7000² progressive JPEG (0.4 MB)": lambda: gradient_jpeg(progressive=True),
}


def peak_memory(side: str, ref: str, picture: Path) -> dict[str, int]:
    command = [sys.executable, "-c", _PEAK, str(ROOT), side, ref, str(picture)]
    run = subprocess.run(command, capture_output=True, check=True, cwd=ROOT)
    return json.loads(run.stdout)


async def beside(read_one, data: bytes, data_dir: Path) -> float:
    """Latency of one delivery's worker-thread trip while ten hostile reads are in flight."""
    reads = [asyncio.create_task(read_one(f"h{n}.jpg", data, data_dir)) for n in range(10)]
    await asyncio.sleep(0.2)  # let them start, as two /blends would have
    grid = Image.new("RGB", (128, 128), (90, 90, 90))
    started = time.perf_counter()
    await asyncio.to_thread(lambda: grid.save(io.BytesIO(), "PNG"))
    latency = time.perf_counter() - started
    await asyncio.gather(*reads)
    return latency


async def main(ref: str, repeats: int) -> None:
    old = baseline(ref)
    reader = PictureReader()
    data_dir = Path(tempfile.mkdtemp())
    print(f"baseline: bot/image_inputs.py at {ref}; now: {ROOT}")
    print(f"\n1. time to read or refuse (median of {repeats})")
    for label, (name, build) in HOSTILE.items():
        data = build()
        t_old, out_old = await timed(lambda: read_old(old, name, data, data_dir), repeats)  # noqa: B023
        t_new, out_new = await timed(lambda: read_new(reader, name, data, data_dir), repeats)  # noqa: B023
        print(f"- {label}: before {t_old:.2f} s ({out_old}); now {t_new:.2f} s ({out_new}); {t_old / t_new:.1f}x")

    print("\n2. peak memory, fresh process each")
    for which, build in BIG.items():
        picture = data_dir / "big.bin"
        picture.write_bytes(build())
        for side in ("before", "now"):
            figures = peak_memory(side, ref, picture)
            bot, child = figures["bot"] / 2**20, figures["child"] / 2**20
            where = "(no child: decoded in the bot)" if side == "before" else f"decoding child's peak {child:.0f} MiB"
            print(f"- {which}, {side}: the bot's own peak +{bot:.0f} MiB, {where}")

    print("\n3. one delivery's worker-thread trip beside ten hostile JPEGs (one round each: before takes ~30 s)")
    hostile = repeated_scan_jpeg()
    lat_old = await beside(lambda n, d, p: read_old(old, n, d, p), hostile, data_dir)
    lat_new = await beside(lambda n, d, p: read_new(reader, n, d, p), hostile, data_dir)
    print(f"- before {lat_old:.2f} s; now {lat_new * 1000:.1f} ms; {lat_old / lat_new:.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="84bbb80", help="a commit that still has bot/image_inputs.py")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.baseline_ref, args.repeats))
