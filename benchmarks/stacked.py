"""9. Stacked sweeps: a grid as one `jax.vmap` program (`hydra/launcher=stacked`).

Every measure is a whole `python train.py` process, started from nothing (Python, Hydra, JAX and
TensorFlow imports included), so the ratios are what a user waits for:

- the 64-job grid (16 penalty scales x 4 seeds) of the default run, stacked, against one
  standalone default run (`python train.py`), in wall time and in peak memory (goals: <= 2x),
  as medians of `--repeats` interleaved runs of each;
- the same grid through Hydra's basic launcher (one job after another in one process, the same
  backend) against the stacked launcher (goal: stacked <= 1/20 of it);
- how the cost grows with the number of jobs (8, 64, 256 in one stack): wall time per job, and
  where the stack's time goes, from the launcher's own log line (setup, compiling and the first
  epoch, the later epochs, the per-job callbacks, saving).

`--quick` runs 2- and 4-job grids with 2 epochs: it checks that everything runs, not the goals.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.timing import REPO, Row, interleaved, run_process

QUIET = ["trainer.verbose=0"]


def _scales(n: int) -> str:
    return ",".join(f"{10 ** (-5 + 4 * i / max(n - 1, 1)):.3g}" for i in range(n))


def _grid(scales: int, seeds: int) -> list[str]:
    return [f"penalty.scale={_scales(scales)}", f"trainer.seed={','.join(map(str, range(seeds)))}"]


def _stacked(tmp: Path, name: str, grid: list[str], extra: list[str]) -> tuple[float, float, str]:
    """Runs a stacked sweep; returns its wall seconds, peak RSS (MiB) and the stack's cost line."""
    sweep = tmp / name
    args = [str(REPO / "train.py"), "-m", "hydra/launcher=stacked", "trainer.backend=jax",
            *QUIET, *extra, *grid, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    done = run_process(args, tmp, timeout=3600)
    lines = re.findall(r"stacked: \d+ jobs in .*", done.stdout)  # the launcher's cost line
    return done.seconds, done.peak_rss_mib, "; ".join(lines)


def _list(values: Any) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def run(quick: bool, repeats: int) -> list[Row]:
    """Measures the rows above (about ten minutes at full size).

    The grid and the standalone run are measured `repeats` times, interleaved, and compared by
    their medians; the basic launcher (minutes) and the stack sizes are measured once.
    """
    epochs = ["trainer.epochs=2"] if quick else []
    big = (2, 1) if quick else (16, 4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        grid = _grid(*big)
        jobs = big[0] * big[1]
        alone_runs, stacked_runs = [], []

        def alone() -> float:
            folder = tmp / f"alone{len(alone_runs)}"
            run = run_process([str(REPO / "train.py"), *QUIET, *epochs,
                               f"hydra.run.dir={folder}"], tmp)  # fmt: skip
            alone_runs.append(run)
            return run.seconds

        def stacked() -> float:
            stacked_runs.append(_stacked(tmp, f"stacked{len(stacked_runs)}", grid, epochs))
            return stacked_runs[-1][0]

        # Medians of interleaved runs: one standalone run's time varies by a few seconds here
        # (TensorFlow's import most), as much as the goal's margin.
        times = interleaved({"stacked": stacked, "alone": alone}, repeats)
        seconds = times["stacked"]
        cost = min(stacked_runs, key=lambda r: abs(r[0] - seconds))[2]  # the median run's line
        peak = statistics.median(r[1] for r in stacked_runs)
        alone_peak = statistics.median(r.peak_rss_mib for r in alone_runs)
        case = f"{jobs}-job grid ({big[0]} scales x {big[1]} seeds), default run"
        note = f"medians of {repeats}; stacked {_list(r[0] for r in stacked_runs)} s, " + (
            f"standalone {_list(r.seconds for r in alone_runs)} s; {cost}"
        )
        rows.append(Row("stacked", case, "stacked sweep process", "one standalone run process",
                        seconds, times["alone"], "s", goal=2.0, note=note))  # fmt: skip
        rows.append(Row("stacked", case, "stacked sweep peak RSS", "standalone run peak RSS",
                        peak, alone_peak, "MiB", goal=2.0))  # fmt: skip
        basic = run_process([str(REPO / "train.py"), "-m", "trainer.backend=jax", *QUIET,
                             *epochs, *grid, f"hydra.sweep.dir={tmp / 'basic'}"], tmp,
                            timeout=3600)  # fmt: skip
        rows.append(Row("stacked", case, "stacked launcher", "basic launcher (jax)",
                        seconds, basic.seconds, "s", goal=0.05))  # fmt: skip
        sizes = (2, 4) if quick else (8, 64, 256)
        per_job = {}
        notes = {}
        for n in sizes:
            if _grid(n, 1) == grid:  # --quick: the grid above is this size's stack already
                per_job[n], notes[n] = seconds / n, cost
                continue
            s, _, line = _stacked(tmp, f"scale{n}", _grid(n, 1),
                                  [*epochs, f"hydra.launcher.max_stack={n}"])  # fmt: skip
            per_job[n], notes[n] = s / n, line
        for n in sizes[1:]:
            rows.append(Row("stacked", f"{n} jobs in one stack", f"per job, {n} jobs",
                            f"per job, {sizes[0]} jobs", per_job[n], per_job[sizes[0]], "s/job",
                            note=notes[n]))  # fmt: skip
        rows[-len(sizes) + 1].note += f" | {sizes[0]} jobs: {notes[sizes[0]]}"
    return rows


if __name__ == "__main__":  # pragma: no cover - python -m benchmarks --only stacked
    subprocess.run([sys.executable, "-m", "benchmarks", "--only", "stacked"], check=True)
