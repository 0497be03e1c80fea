"""4. Sweeps: a grid of jobs in one `train.py -m` process vs one `train.py` process per job.

One process pays Python, TensorFlow and Hydra start-up once; each job still builds its model fresh
after `keras.backend.clear_session()`. Reported per job: wall time, and peak RSS (the multirun's
whole process vs the largest single-job process).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from benchmarks.timing import REPO, Row, run_process

GRID = {"penalty": ["l1", "l2", "orthogonal"], "penalty.scale": ["1e-4", "1e-3"]}
QUICK_GRID = {"penalty": ["l1"], "penalty.scale": ["1e-4"]}


def run(quick: bool, repeats: int) -> list[Row]:
    """Runs the grid both ways once (minutes of work); returns one-process / separate processes."""
    grid = QUICK_GRID if quick else GRID
    common = [
        "data=synthetic",
        f"trainer.epochs={1 if quick else 5}",
        "trainer.verbose=0",
        "trainer.histograms=false",
    ]
    jobs = list(itertools.product(*grid.values()))
    train = str(REPO / "train.py")
    with tempfile.TemporaryDirectory() as tmp:
        sweep = [f"{key}={','.join(values)}" for key, values in grid.items()]
        multirun = run_process(
            [train, "-m", *common, *sweep, f"hydra.sweep.dir={tmp}/multi"], Path(tmp)
        )
        singles = [
            run_process(
                [
                    train,
                    *common,
                    *(f"{k}={v}" for k, v in zip(grid, job, strict=True)),
                    f"hydra.run.dir={tmp}/single/{i}",
                ],
                Path(tmp),
            )
            for i, job in enumerate(jobs)
        ]
    case = f"{len(jobs)}-job grid ({' x '.join(grid)})"
    return [
        Row(
            "sweeps",
            case,
            "one process",
            "a process per job",
            multirun.seconds / len(jobs),
            sum(s.seconds for s in singles) / len(jobs),
            "s/job",
        ),
        Row(
            "sweeps",
            case,
            "one process",
            "a process per job",
            multirun.peak_rss_mib,
            max(s.peak_rss_mib for s in singles),
            "MiB peak RSS",
            note="one process's peak over all its jobs vs the largest single-job process",
        ),
    ]
