"""bench/gpu_bench.py's smoke run: every contender renders on CPU and the table prints (not a timing)."""

from __future__ import annotations

from bench import gpu_bench


def test_the_gpu_benchmark_runs_end_to_end_on_cpu(capsys):
    gpu_bench.main(["--device", "cpu", "--smoke"])
    out = capsys.readouterr().out
    models = ("SD1.5", "SDXL", "Flux.1", "Flux.2 [klein]")
    for model in models:
        assert f"**{model}-shaped, 4 x 64x64, 2 steps" in out
    assert out.count("SMOKE RUN, not a measurement") == len(models)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "contender" not in line]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    expected = ["diffusers, 4 single calls", "diffusers, one batched call"] + [name for name, _ in gpu_bench.LADDER]
    assert names == expected * len(models)
    # every switch keeps the pictures: the last column is the difference from the unswitched engine
    assert all(float(row.rstrip(" |").rsplit("| ", 1)[1]) < 0.05 for row in rows)
