"""8. Backends: regfw's steady-epoch step time on JAX / on TensorFlow, same config, same data.

Each measure runs in its own process (one process has one Keras backend), timing the epochs
after the first (which traces and compiles) with regfw's own pipeline and callbacks. Cases: the
default run (the article's MLP on breast_cancer) and the cnn on digits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from functools import partial

from benchmarks.timing import REPO, Row, interleaved

CASES = {
    "default mlp, breast_cancer": [],
    "cnn, digits": ["model=cnn", "data=digits"],
}
CODE = """
import sys
from pathlib import Path
from benchmarks.timing import regfw_step_time
print("SECONDS", regfw_step_time(sys.argv[2:], Path(sys.argv[1])))
"""


def _step_time(backend: str, overrides: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", CODE, tmp, f"trainer.backend={backend}", *overrides],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{backend} {overrides} failed:\n{done.stderr[-2000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("SECONDS ")][-1]
    return float(line.split()[1])


def run(quick: bool, repeats: int) -> list[Row]:
    """Times both backends on each case; returns JAX / TensorFlow (goal: at most 1)."""
    rows = []
    cases = dict(list(CASES.items())[:1]) if quick else CASES  # --quick: that it runs, once
    for case, overrides in cases.items():
        epochs = 2 if quick else 6
        args = [*overrides, "trainer.verbose=0", "trainer.histograms=false",
                f"trainer.epochs={epochs}"]  # fmt: skip
        times = interleaved(
            {name: partial(_step_time, name, args) for name in ("jax", "tensorflow")}, repeats
        )
        rows.append(Row("backends", case, "trainer.backend=jax", "trainer.backend=tensorflow",
                        times["jax"], times["tensorflow"], "s/step", goal=1.0))  # fmt: skip
    return rows
