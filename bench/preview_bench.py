"""The progress preview's cost next to the VAE decode it stands in for. Not a test: prints a ratio.

    .venv/bin/python -m bench.preview_bench [--tile 64] [--repeats 50]

A progress edit shows the grid approximated from the latents by a fitted 4->3 linear map
(`engine.preview`), so it must cost a small fraction of decoding them. Goal: >= 20x cheaper.
The two run interleaved on the same latents; each figure is the median of --repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from engine.preview import fit_latent_rgb, preview_grid  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", type=int, default=64, help="tile edge in pixels")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--model", help="a diffusers folder (default: the random tiny model)")
    args = parser.parse_args(argv)
    if args.model:
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(args.model, local_files_only=True)
    else:
        from engine.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
    vae = pipe.vae
    matrix = fit_latent_rgb(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn(4, vae.config.latent_channels, args.tile // factor, args.tile // factor)
    previews, decodes = [], []
    with torch.inference_mode():
        for _ in range(args.repeats):
            started = time.perf_counter()
            preview_grid(latents, matrix)
            previews.append(time.perf_counter() - started)
            started = time.perf_counter()
            vae.decode(latents / vae.config.scaling_factor)
            decodes.append(time.perf_counter() - started)
    preview, decode = statistics.median(previews), statistics.median(decodes)
    print(f"4 tiles of {args.tile}px, torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"  preview_grid : {preview * 1000:.2f} ms")
    print(f"  vae.decode   : {decode * 1000:.2f} ms")
    print(f"  preview is {decode / preview:.0f}x cheaper than a decode   (goal >= 20x)")


if __name__ == "__main__":
    main()
