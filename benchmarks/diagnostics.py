"""6. Diagnostics logging on vs off: regfw's step time with and without per-epoch logging.

Two ratios per model: the per-layer weight diagnostics (`trainer.diagnostics`, on by default) on
vs off, and Keras's weight histograms (`trainer.histograms`) on vs off; the other switch is off.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from benchmarks.overhead import CASES
from benchmarks.timing import Row, interleaved, regfw_step_time

SWITCHES = {
    # key: (the other switch, goal)
    "diagnostics": ("histograms", 1.05),
    "histograms": ("diagnostics", None),
}


def run(quick: bool, repeats: int) -> list[Row]:
    """Times both models of the overhead benchmark with each logging switch on and off."""
    rows = []
    for case, (full, small) in list(CASES.items())[: 1 if quick else None]:
        overrides = [
            *(small if quick else full),
            "penalty=orthogonal",
            "trainer.verbose=0",
            f"trainer.epochs={2 if quick else 6}",
        ]
        for key, (other, goal) in SWITCHES.items():
            with tempfile.TemporaryDirectory() as tmp:
                times = interleaved(
                    {
                        on: partial(
                            regfw_step_time,
                            [*overrides, f"trainer.{other}=false", f"trainer.{key}={on}"],
                            Path(tmp) / on,
                        )
                        for on in ("true", "false")
                    },
                    repeats,
                )
            rows.append(
                Row(
                    "diagnostics",
                    case,
                    f"{key} on",
                    f"{key} off",
                    times["true"],
                    times["false"],
                    "s/step",
                    goal=goal,
                )
            )
    return rows
