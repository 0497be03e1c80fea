"""3. Start-up: `train.py --cfg job` and `--help` vs a bare Hydra app on the same config tree.

regfw checks the command line before Hydra runs (composing the config once more) and must not
import TensorFlow for either command; the bare app (`benchmarks/bare_app.py`) does nothing else.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from benchmarks.timing import REPO, Row, interleaved, run_process

COMMANDS = {"--cfg job": ["--cfg", "job"], "--help": ["--help"]}


def _seconds(args: list[str], cwd: Path) -> float:
    return run_process(args, cwd, peak=False).seconds


def run(quick: bool, repeats: int) -> list[Row]:
    """Times each command as a fresh process; returns train.py / bare app."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, args in COMMANDS.items():
            times = interleaved(
                {
                    script: partial(_seconds, [str(REPO / script), *args], Path(tmp))
                    for script in ("train.py", "benchmarks/bare_app.py")
                },
                1 if quick else max(repeats, 5),
            )
            rows.append(
                Row(
                    "startup",
                    f"python train.py {case}",
                    "train.py",
                    "bare Hydra app",
                    times["train.py"],
                    times["benchmarks/bare_app.py"],
                    "s",
                    goal=1.5,
                )
            )
    return rows
